"""Robustness stage: every method under noise and attack, at several T and leaks (DESIGN section 4).

One simulation of max(T) steps gives the accuracy at every T <= max(T), so each
(method, leak, perturbation, level, mode) costs one simulate call on the test subset.
Attacks are crafted (a) on the source ANN with its straight-through gradients and
evaluated on the SNN, and (b) white-box on the SNN unrolled over T steps.
"""
from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from annsnn import convert, simulate  # noqa: E402
from annsnn.attacks import UnrolledSNN, craft  # noqa: E402
from annsnn.noise import make_perturbation  # noqa: E402
from annsnn.progress import progress_bar  # noqa: E402

FIELDS = ["seed", "method", "leak", "attack_on", "perturbation", "mode", "level", "T", "acc"]


def _tensors(loader):
    xs, ys = zip(*[(x, y) for x, y in loader])
    return torch.cat(xs), torch.cat(ys)


def _loader(x, y, batch_size):
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)


# The StepReLU authors' released evaluation: static salt-and-pepper, signal ratio 0.95, on a
# random half of the test images (their AddNoise(0.95, 0.5)).
AUTHORS_S, AUTHORS_P = 0.95, 0.5
AUTHORS_KIND = f"salt_pepper_p{AUTHORS_P:g}"


def evaluate(cfg: dict, anns: dict, dm, seed: int, progress: bool = True) -> list[dict]:
    """``anns``: activation name -> trained source ANN. Returns one row per measurement."""
    rc = cfg["robustness"]
    Ts = sorted(t for t in rc["T"] if t <= cfg["T_max"])
    T_run = max(Ts)
    x, y = _tensors(dm.test_dataloader())
    n = min(rc["test_subset"] or len(y), len(y))
    x, y = x[:n], y[:n]
    bs = cfg["eval_batch_size"]
    rows: list[dict] = []
    from annsnn.recipes import get_recipe

    def add(method, leak, on, kind, mode, level, accs):
        for t in Ts:
            rows.append(dict(seed=seed, method=method, leak=leak, attack_on=on, perturbation=kind,
                             mode=mode, level=level, T=t, acc=accs[t - 1]))

    perturbations = ([("gaussian", s) for s in rc["gaussian_sigma"]]
                     + [("salt_pepper", s) for s in rc["salt_pepper_s"]])
    methods = [m for m in cfg["methods"] if get_recipe(m).activation in anns]
    adv_cache: dict[tuple, torch.Tensor] = {}
    for act, ann in anns.items():  # craft on each source ANN once, share across its methods
        ann.eval()
        for kind, key in (("fgsm", "fgsm_eps"), ("pgd", "pgd_eps")):
            for eps in rc[key]:
                kw = {} if kind == "fgsm" else {"steps": rc["pgd_steps"], "step_size": rc["pgd_step_size"],
                                                "seed": seed}
                adv_cache[(act, kind, eps)] = torch.cat([craft(kind, ann, xb, yb, eps, **kw)
                                                         for xb, yb in _loader(x, y, bs)])
    bar = progress_bar(total=len(methods) * len(rc["leaks"]), desc="robustness", disable=not progress)
    for method in methods:
        act = get_recipe(method).activation
        for leak in rc["leaks"]:
            snn = convert(anns[act], method, dm.calib_dataloader(), leak)
            sim = lambda xs, perturb=None: simulate(snn, _loader(xs, y, bs), T_run, perturb=perturb,  # noqa: E731
                                                     seed=seed, progress=False).acc
            add(method, leak, "-", "clean", "-", 0.0, sim(x))
            for kind, level in perturbations:
                for dynamic in rc["dynamic"]:
                    add(method, leak, "-", kind, "dynamic" if dynamic else "static", level,
                        sim(x, make_perturbation(kind, level, dynamic)))
            # the authors' own evaluation, always reported: AddNoise(0.95, 0.5), static
            add(method, leak, "-", AUTHORS_KIND, "static", AUTHORS_S,
                sim(x, make_perturbation("salt_pepper", AUTHORS_S, False, p_image=AUTHORS_P)))
            for (a, kind, eps), xa in adv_cache.items():
                if a == act:
                    add(method, leak, "ann", kind, "static", eps, sim(xa))
            bar.update()
        # (b) white-box on the SNN unrolled over T steps with a surrogate gradient (leak 1)
        snn = convert(anns[act], method, dm.calib_dataloader(), 1.0)
        m = min(rc["snn_attack_subset"], n)
        for T in rc["snn_attack_T"]:
            for eps in rc["fgsm_eps"]:
                xa = torch.cat([craft("fgsm", UnrolledSNN(snn, T), xb, yb, eps)
                                for xb, yb in _loader(x[:m], y[:m], bs)])
                acc = simulate(snn, _loader(xa, y[:m], bs), T, seed=seed, progress=False).acc[T - 1]
                rows.append(dict(seed=seed, method=method, leak=1.0, attack_on=f"snn-T{T}",
                                 perturbation="fgsm", mode="static", level=eps, T=T, acc=acc))
    bar.close()
    return rows


def metric_key(r: dict) -> str:
    lvl = "s" if r["perturbation"].startswith("salt_pepper") else ("sigma" if r["perturbation"] == "gaussian" else "eps")
    on = "" if r["attack_on"] == "-" else f"{r['attack_on']}/"
    return (f"acc/{on}{r['perturbation']}/{lvl}_{r['level']:g}/{r['mode']}/leak_{r['leak']:g}/T_{r['T']}"
            if r["perturbation"] != "clean" else f"acc/clean/leak_{r['leak']:g}/T_{r['T']}")


def write(cfg: dict, rows: list[dict], out: Path) -> list[Path]:
    """robustness.csv, robustness.md and three plots; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    rc = cfg["robustness"]
    with open(out / "robustness.csv", "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        w.writerows(rows)
    (out / "robustness.md").write_text(render(cfg, rows))
    mean = _mean_over_seeds(rows)
    methods = [m for m in cfg["methods"] if any(k[0] == m for k in mean)]
    Ts = sorted({r["T"] for r in rows if r["attack_on"] in ("-", "ann")})
    return [out / "robustness.csv", out / "robustness.md"] + _plots(cfg, mean, methods, max(Ts), out)


def read_rows(path: Path) -> list[dict]:
    """robustness.csv back into rows with their types (for re-rendering and the drift test)."""
    types = {"seed": int, "leak": float, "level": float, "T": int, "acc": float}
    with open(path, newline="") as f:
        return [{k: types.get(k, str)(v) for k, v in r.items()} for r in csv.DictReader(f)]


def render(cfg: dict, rows: list[dict]) -> str:
    """robustness.md from the rows alone."""
    rc = cfg["robustness"]
    Ts = sorted({r["T"] for r in rows if r["attack_on"] in ("-", "ann")})
    mean = _mean_over_seeds(rows)
    methods = [m for m in cfg["methods"] if any(k[0] == m for k in mean)]
    lines = [f"# Robustness: {cfg['name']} ({cfg['dataset']} / {cfg['arch']})", "",
             f"Test subset of {rc['test_subset']} images, accuracy in %, seeds {cfg['seeds']}. "
             "Noise in pixel space; static = drawn once and repeated every step, dynamic = "
             "redrawn every step. Attacks (a) crafted on the source ANN (straight-through "
             "gradients) and evaluated on the SNN, (b) white-box FGSM on the SNN unrolled over "
             "T steps with a surrogate spike gradient.", ""]
    for t in (min(Ts), 4 if 4 in Ts else None, max(Ts)):
        if t is None:
            continue
        settings = sorted({(k[2], k[3], k[4], k[5]) for k in mean if k[6] == t and k[1] == 1.0 and k[2] in ("-", "ann")},
                          key=lambda s: (s[0], s[1], s[2], s[3]))
        lines += [f"## T = {t}, leak 1", "", "| perturbation | mode | level | " + " | ".join(methods) + " |",
                  "|---|---|---|" + "---|" * len(methods)]
        for on, kind, mode, level in settings:
            label = kind if on == "-" else f"{kind} (on ANN)"
            vals = [mean.get((m, 1.0, on, kind, mode, level, t)) for m in methods]
            lines.append(f"| {label} | {mode} | {level:g} | " + " | ".join(
                "n/a" if v is None else f"{100 * v:.2f}" for v in vals) + " |")
        lines.append("")
    snn_rows = [r for r in rows if r["attack_on"].startswith("snn")]
    if snn_rows:
        lines += ["## White-box FGSM on the unrolled SNN (surrogate gradient)", "",
                  "| method | T | eps | acc |", "|---|---|---|---|"]
        for r in snn_rows:
            lines.append(f"| {r['method']} | {r['T']} | {r['level']:g} | {100 * r['acc']:.2f} |")
        lines.append("")
    lk = rc["leak_noise"]
    lines += [f"## Leak under dynamic {lk['kind']} ({lk['level']}), T = {max(Ts)}", "",
              "| leak | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for leak in rc["leaks"]:
        vals = [mean.get((m, leak, "-", lk["kind"], "dynamic", lk["level"], max(Ts))) for m in methods]
        lines.append(f"| {leak:g} | " + " | ".join("n/a" if v is None else f"{100 * v:.2f}" for v in vals) + " |")
    lines += ["", "![noise](robustness_noise.png)", "", "![attacks](robustness_attacks.png)", "",
              "![leak](robustness_leak.png)", ""]
    return "\n".join(lines)


def _mean_over_seeds(rows):
    acc = defaultdict(list)
    for r in rows:
        acc[(r["method"], r["leak"], r["attack_on"], r["perturbation"], r["mode"], r["level"], r["T"])].append(r["acc"])
    return {k: sum(v) / len(v) for k, v in acc.items()}


def _pct(values) -> list[float]:
    """Accuracies in %, NaN where a setting was not measured (the line shows a gap)."""
    return [100 * v if v is not None else float("nan") for v in values]


def _save(fig, axes, path: Path) -> Path:
    axes[0].set_ylabel("accuracy (%)")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plots(cfg, mean, methods, T, out: Path) -> list[Path]:
    rc = cfg["robustness"]
    files = []
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8), sharey=True)
    for ax, (kind, levels, mode) in zip(axes, [(k, lv, md) for k, lv in (("gaussian", rc["gaussian_sigma"]),
                                                                      ("salt_pepper", rc["salt_pepper_s"]))
                                               for md in ("static", "dynamic")]):
        for m in methods:
            xs = [0.0 if kind == "gaussian" else 1.0] + list(levels)
            ys = [mean.get((m, 1.0, "-", "clean", "-", 0.0, T))] + [mean.get((m, 1.0, "-", kind, mode, lv, T)) for lv in levels]
            ax.plot(xs, _pct(ys), marker="o", label=m)
        ax.set_title(f"{kind}, {mode}, T={T}")
        ax.set_xlabel("sigma" if kind == "gaussian" else "signal ratio s")
        if kind == "salt_pepper":
            ax.invert_xaxis()
        ax.grid(alpha=0.3)
    files.append(_save(fig, axes, out / "robustness_noise.png"))

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), sharey=True)
    for ax, (kind, key) in zip(axes, (("fgsm", "fgsm_eps"), ("pgd", "pgd_eps"))):
        for m in methods:
            xs = [0.0] + list(rc[key])
            ys = [mean.get((m, 1.0, "-", "clean", "-", 0.0, T))] + [mean.get((m, 1.0, "ann", kind, "static", e, T)) for e in rc[key]]
            ax.plot(xs, _pct(ys), marker="o", label=m)
        ax.set_title(f"{kind.upper()} crafted on the ANN, T={T}")
        ax.set_xlabel("epsilon (pixels)")
        ax.grid(alpha=0.3)
    files.append(_save(fig, axes, out / "robustness_attacks.png"))

    lk = rc["leak_noise"]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for m in methods:
        ys = [mean.get((m, lv, "-", lk["kind"], "dynamic", lk["level"], T)) for lv in rc["leaks"]]
        ax.plot(rc["leaks"], _pct(ys), marker="o", label=m)
    ax.set_title(f"leak under dynamic {lk['kind']} {lk['level']}, T={T}")
    ax.set_xlabel("leak")
    ax.grid(alpha=0.3)
    files.append(_save(fig, [ax], out / "robustness_leak.png"))
    return files
