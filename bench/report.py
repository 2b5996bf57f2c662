"""results/<preset>/: summary.md, accuracy_vs_t.png, results.json, manifest.json.

Every number written here comes from the records of the run; the manifest holds
the preset as run, the commit, the package versions and the wall time beside them.
"""
from __future__ import annotations

import json
import os
import platform
import re
import time
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402


import tracking  # noqa: E402

from . import aggregate as _agg  # noqa: E402
from . import costs, stats  # noqa: E402


def _fmt(values, scale=100.0, digits=2) -> str:
    return stats.spread([None if v is None else v * scale for v in values], f".{digits}f")


def _by_setting(records: list[dict]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["method"], r["leak"])].append(r)
    return groups


def _claims_exactness(record: dict) -> bool:
    """Only a method that claims t = 1 exactness gets the identical-predictions count: for
    the rate methods it measures nothing (records from before the flag: steprelu alone)."""
    if "exact_at_t1" in record:
        return bool(record["exact_at_t1"])
    return record["method"] == "steprelu"


def _ordered(cfg: dict, records: list[dict]) -> list[tuple[tuple, list[dict]]]:
    """(method, leak) groups in the preset's method order, leak 1 first."""
    order = {m: i for i, m in enumerate(cfg["methods"])}
    return sorted(_by_setting(records).items(), key=lambda kv: (order.get(kv[0][0], 99), -kv[0][1]))


def summary_table(cfg: dict, records: list[dict]) -> str:
    ts = cfg["summary_t"]
    T = cfg["T_max"]
    head = (["method", "leak", "ANN acc (folded)", "ANN acc (unfolded)"]
            + [f"SNN t={t}" for t in ts]
            + [f"conv. err t=1", f"conv. err t={T}", f"ops/ANN MACs t={T}", f"energy/ANN t={T}",
               "largest n used (spikes/step)", "identical at t=1 (exact methods)"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (method, leak), rs in _ordered(cfg, records):
        ident = [f"{r['identical_at_t1']}/{r['n_images']}" for r in rs
                 if r["identical_at_t1"] is not None and _claims_exactness(r)]
        row = ([method, f"{leak:g}", _fmt([r["ann_acc"] for r in rs]),
                _fmt([r["ann_acc_unfolded"] for r in rs])]
               + [_fmt([r["acc"][t - 1] for r in rs]) for t in ts]
               + [_fmt([r["conv_error"][0] for r in rs], 1, 4), _fmt([r["conv_error"][-1] for r in rs], 1, 4),
                  _fmt([r["ops_ratio"][-1] for r in rs], 1, 3), _fmt([r["energy_ratio"][-1] for r in rs], 1, 3),
                  _fmt([r["max_spikes_per_step"] for r in rs], 1, 0), ", ".join(ident) or "-"])
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def paired_table(cfg: dict, records: list[dict]) -> str:
    """McNemar between the exact method (the one under study) and every other setting on the
    same test images, at fixed budgets of 1, 4 and T_max steps, pooled over seeds."""
    groups = _ordered(cfg, records)
    refs = [(k, rs) for k, rs in groups if any(_claims_exactness(r) for r in rs)]
    if not refs:
        return ""
    (ref_m, ref_leak), ref_rs = refs[0]
    ts = sorted({t for t in (1, 4, cfg["T_max"]) if t <= cfg["T_max"]})
    head = ["method", "leak", "t", f"acc {ref_m} - acc method (points)", f"only {ref_m} right",
            "only method right", "McNemar p (exact)", "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (m, leak), rs in groups:
        if (m, leak) == (ref_m, ref_leak):
            continue
        for t in ts:
            res = stats.paired(ref_rs, rs, t)
            if res is None:
                continue
            a, b, p, k = res
            n = sum(r["n_images"] for r in rs[:k])
            lines.append(f"| {m} | {leak:g} | {t} | {100 * (a - b) / n:+.2f} | {a} | {b} | {stats.fmt_p(p)} | {k} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def _curves_frame(records: list[dict]) -> pd.DataFrame:
    """Long table (setting, seed, t, accuracy %, energy ratio) for seaborn."""
    rows = []
    for r in records:
        label = r["method"] if r["leak"] == 1.0 else f"{r['method']} (leak {r['leak']:g})"
        for t, (a, e) in enumerate(zip(r["acc"], r["energy_ratio"]), start=1):
            rows.append({"setting": label, "seed": r.get("seed", 0), "t": t, "acc": 100 * a,
                         "energy": e})
    return pd.DataFrame(rows)


def accuracy_plot(cfg: dict, records: list[dict], path: Path) -> None:
    """Accuracy vs t, mean over seeds with a 95 % confidence band (seaborn)."""
    df = _curves_frame(records)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sns.lineplot(data=df, x="t", y="acc", hue="setting", marker="o", markersize=4,
                 errorbar=stats.t_band, ax=ax)
    for (method, leak), rs in _by_setting(records).items():
        ann = [r["ann_acc"] for r in rs if r["ann_acc"] is not None]
        if ann and leak == 1.0:
            ax.axhline(100 * np.mean(ann), color="grey", ls=":", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("time step t")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{cfg['name']}: {cfg['dataset']} / {cfg['arch']}\n"
                 f"{len(cfg['seeds'])} seed(s); band: 95 % CI over seeds; dotted: source ANNs",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def cost_plot(cfg: dict, records: list[dict], path: Path) -> None:
    """Accuracy against energy/ANN, one point per (method, t): the trade-off at a glance."""
    df = _curves_frame(records)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sns.lineplot(data=df, x="energy", y="acc", hue="setting", marker="o", markersize=4,
                 errorbar=None, sort=False, estimator="mean", ax=ax)
    ax.set_xscale("log")
    ax.set_xlabel("SNN energy / ANN energy (first layer every step), t = 1 .. T_max")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{cfg['name']}: accuracy against cost (up and left is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def manifest(cfg: dict, wall: float, uri: str, run_ids: dict, out: Path | None = None) -> dict:
    # results/ holds outputs, never code: another preset's fresh, uncommitted results in the
    # same checkout (a smoke run just before) do not make this run's code "-dirty"
    ignore = [tracking.PROJECT_ROOT / "results"] + ([out] if out else [])
    return {
        "preset": cfg, "git_commit": tracking.git_commit(ignore=ignore), "versions": tracking.versions(),
        "seeds": cfg["seeds"], "wall_seconds": round(wall, 1),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"platform": platform.platform(), "processor": platform.machine(),
                    "cpus": os.cpu_count()},
        "tracking_uri": uri.replace(str(tracking.PROJECT_ROOT), "<project>"),
        "mlflow_parent_runs": run_ids,
    }


def exactness_lines(records: list[dict]) -> list[str]:
    """The exactness claim on the trained network, one line per run of a method that claims it."""
    return [f"- {r['method']} (seed {r.get('seed', 0)}, leak {r['leak']:g}): identical predictions: "
            f"{r['identical_at_t1']}/{r['n_images']} at t = 1"
            for r in records if _claims_exactness(r) and r["identical_at_t1"] is not None]


DEVIATIONS = (
    "Baselines as their papers define them, with these stated differences: maxnorm, robustnorm "
    "and opi reset by subtraction (Rueckauer et al. 2017), not to zero (Diehl et al. 2015); "
    "robustnorm takes the 99.9th percentile over the non-zero activations (Rueckauer's toolbox), "
    "robustnorm-all over all values incl. zeros (SpikingJelly's converter); thresholds come from "
    "a fixed calibration set of training images. qcfs trains lam_q from 8 with the weights' "
    "weight decay as Bu et al.'s code, but with this preset's schedule and epochs (CPU scale), no "
    "weight decay on BatchNorm and biases (their SGD decays every parameter), and a "
    "straight-through window 0 <= floor(x L / lam + 1/2) <= L instead of their clamp's "
    "0 <= x <= lam. steprelu-single starts at V0 = theta*L/2, as QCFS's neuron does, so the "
    "ablation isolates the binary spikes.")


def _methods_table(records: list[dict], cfg: dict) -> str:
    said = {r["method"]: r["description"] for r in records if r.get("description")}
    names = [m for m in cfg["methods"] if any(r["method"] == m for r in records)]
    rows = [f"| `{m}` | {said.get(m) or 'not recorded by this run: see its commit'} |" for m in names]
    return "| method | what it is |\n|---|---|\n" + "\n".join(rows)


def render(cfg: dict, records: list[dict], man: dict) -> str:
    """summary.md from the run's records and manifest (re-renderable: ``python -m bench report``)."""
    exact = "\n".join(exactness_lines(records))
    groups = _ordered(cfg, records)
    spikes = costs.spike_distribution_table(groups)
    paired = paired_table(cfg, records)
    return (f"# {cfg['name']}: {cfg['dataset']} / {cfg['arch']}\n\n{cfg.get('description', '')}\n\n"
            f"Test split ({records[0]['n_images'] if records else 0} images), seeds {cfg['seeds']}, "
            f"T_max = {cfg['T_max']}. Accuracies in %, mean ± std over seeds where there are several. "
            f"ANN acc (folded) is the source ANN after BatchNorm folding, the reference the SNN is "
            f"compared with; 'identical at t=1' counts test images whose SNN prediction at t = 1 equals "
            f"the folded ANN's, shown only for methods that claim that exactness. "
            f"ops/ANN MACs = (first-layer MACs x t + synaptic operations) / ANN MACs; "
            f"energy at 4.6 pJ/MAC, 0.9 pJ/AC. 'largest n used' is the most spikes one neuron sent "
            f"in one step (1 for binary neurons). The SNN at t = 1, 2 and 4 is each method's "
            f"accuracy at a fixed budget of that many steps.\n\n{summary_table(cfg, records)}\n\n"
            + (f"Exactness at t = 1 on the trained network:\n{exact}\n\n" if exact else "")
            + "## Operating point: where each SNN reaches its own ANN, and what it costs there\n\n"
            "First t at which the SNN is within 1.0 (0.5) points of its source ANN; costs at that t. "
            "Energy with the first layer's analog MACs paid at every step, and paid once per image "
            "(the static input's current is the same at every step). Binary sub-steps: t x the "
            "largest n a layer used, for the largest layer and summed over layers (layers in "
            "sequence), the latency on hardware that only sends binary spikes.\n\n"
            f"{costs.operating_point_table(groups)}\n\n"
            + (f"## Spike counts per step (multi-spike methods)\n\nFraction of neuron-steps that "
               f"send n spikes, per layer, over all test images and steps (firing rate in the "
               f"results is spikes per neuron per step, above 1 where n > 1 is allowed).\n\n"
               f"{spikes}\n\n" if spikes else "")
            + (f"## Paired comparisons on the same test images\n\n"
               f"Each method against the one that claims exactness, at fixed budgets of t steps; "
               f"discordant images summed over seeds.\n\n{paired}\n\n" if paired else "")
            + f"## Methods\n\n{_methods_table(records, cfg)}\n\n"
            + (f"{DEVIATIONS}\n\n" if all(r.get("description") for r in records) else
               "This run predates the recorded method definitions; the baselines' conventions "
               "are those of its commit.\n\n")
            + "![accuracy vs t](accuracy_vs_t.png)\n\n![accuracy vs energy](accuracy_vs_energy.png)\n\n"
            + (f"## Why this setting\n\nFrom the preset's `why` (how the network, schedule and budget "
               f"were chosen, and what the test split influenced):\n\n{cfg['why']}\n\n" if cfg.get("why") else "")
            + provenance(man) + "\n")


def provenance(man: dict) -> str:
    """Commit and wall time; when seed jobs came from different commits, each seed's."""
    commits = man.get("git_commits") or {}
    if len(set(commits.values())) > 1:
        head = "Seeds from different commits: " + ", ".join(
            f"seed {k} `{(c or 'unknown')[:7]}`" for k, c in commits.items())
    else:
        head = f"Commit `{man['git_commit']}`"
    jobs = man.get("jobs") or 1
    return (f"{head}, wall time {man['wall_seconds']:.0f} s"
            + (f" summed over {jobs} seed runs" if jobs > 1 else "") + ", versions in manifest.json.")


def _plots(cfg: dict, records: list[dict], out: Path) -> None:
    accuracy_plot(cfg, records, out / "accuracy_vs_t.png")
    cost_plot(cfg, records, out / "accuracy_vs_energy.png")


def write(cfg: dict, records: list[dict], out: Path, wall: float, uri: str, run_ids: dict) -> str:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(records, indent=1))
    _plots(cfg, records, out)
    man = manifest(cfg, wall, uri, run_ids, out)
    (out / "manifest.json").write_text(json.dumps(man, indent=2))
    (out / "summary.md").write_text(render(cfg, records, man))
    return (summary_table(cfg, records) + "\n" + "\n".join(exactness_lines(records)) + "\n\n"
            + costs.operating_point_table(_ordered(cfg, records)))


def rerender(out: Path) -> str:
    """Rewrite summary.md and the plot from results.json + manifest.json (no new numbers)."""
    records = json.loads((out / "results.json").read_text())
    man = json.loads((out / "manifest.json").read_text())
    _plots(man["preset"], records, out)
    text = render(man["preset"], records, man)
    (out / "summary.md").write_text(text)
    return text


def expected_seeds(name: str) -> list[int] | None:
    """The seeds bench/presets/<name>.yaml lists (None when there is no such preset)."""
    from . import presets
    try:
        return list(presets.load(name)["seeds"])
    except (presets.PresetError, OSError):
        return None


def seeds_line(run: "_agg.Run", expected: list[int] | None) -> str:
    missing = _agg.missing_seeds(run, expected)
    return (f"[report] results/{run.name} ({run.layout} layout): seeds found {run.seeds_found}"
            + (f"; listed by the preset but missing: {missing}" if missing else "")
            + ("; legacy folder: `python -m bench report --migrate " + run.name + "` moves it to seeds/"
               if run.layout == "legacy" else ""))


def aggregate(out_dir: Path, expected: list[int] | None = None, plots: bool = True) -> str:
    """Merge the finished seeds of results/<preset>/ (seeds/seed*/) and write the top-level
    results.json, manifest.json, summary.md, plots and robustness files. A legacy folder
    (top-level results.json only) is re-rendered from its own files. Returns the summary's
    main tables (what the runner prints). Raises aggregate.MixedPresets when seed jobs ran
    different presets."""
    run = _agg.load(Path(out_dir))
    print(seeds_line(run, expected if expected is not None else expected_seeds(run.name)))
    return write_run(run, plots)


def write_run(run: "_agg.Run", plots: bool = True) -> str:
    """The top-level files of a loaded run (see ``aggregate``)."""
    out = run.folder
    if run.layout == "seeds":
        (out / "results.json").write_text(json.dumps(run.records, indent=1))
        (out / "manifest.json").write_text(json.dumps(run.manifest, indent=2))
    if plots:
        _plots(run.cfg, run.records, out)
    (out / "summary.md").write_text(render(run.cfg, run.records, run.manifest))
    if run.rows is not None and not _agg.robustness_is_current(run.rows):
        print(f"[report] results/{run.name}/robustness.csv has an older column set than the robustness "
              "stage writes today: robustness.md left as it is; rerun the preset to renew it")
    elif run.rows is not None:
        from . import robustness
        if run.layout == "seeds":
            robustness.write(run.cfg, run.rows, out)
        else:
            (out / "robustness.md").write_text(robustness.render(run.cfg, run.rows))
    return (summary_table(run.cfg, run.records) + "\n" + "\n".join(exactness_lines(run.records))
            + "\n\n" + costs.operating_point_table(_ordered(run.cfg, run.records)))


# README.md's result sections: the block between these markers is generated; the prose
# around it is not. The drift test renders every block again and compares.
BLOCK_START = "<!-- generated from results/{name}: python -m bench report --all -->"
BLOCK_END = "<!-- end of generated block -->"


def readme_block(run: "_agg.Run") -> str:
    """What README.md shows of a run: the main table, the exactness line, the 1-point
    operating points, the paired tests (several seeds) and the provenance, from its data."""
    cfg, records, man = run.cfg, run.records, run.manifest
    groups = _ordered(cfg, records)
    op = costs.operating_point_table(groups).splitlines()
    op = op[:2] + [line for line in op[2:] if "| 1 pt |" in line]
    exact = exactness_lines(records)
    n_seeds = len(cfg["seeds"])
    parts = [(f"Mean ± std [95 % CI] over seeds {cfg['seeds']}:" if n_seeds > 1 else
              f"One seed ({cfg['seeds'][0]}):"), "", summary_table(cfg, records), ""]
    if exact:
        same = {ln.split(": identical predictions: ")[1] for ln in exact}
        parts += [f"Exactness at t = 1 on the trained network: {len(exact)} run(s) of the exact method, "
                  f"identical predictions {', '.join(sorted(same))}.", ""]
    parts += ["Where each SNN first comes within 1 point of its own ANN, and what it costs there "
              "(the 0.5-point rows, the spike-count distribution and the methods' definitions are in "
              "the summary):", "", "\n".join(op), ""]
    paired = paired_table(cfg, records)
    if paired and n_seeds > 1:
        parts += ["Paired with the exact method on the same test images (McNemar, discordant images "
                  "pooled over the seeds), at fixed budgets of t steps:", "", paired, ""]
    parts.append(f"{provenance(man)} Machine: {man.get('machine', {}).get('cpus', '?')} CPU(s). "
                 f"Data: `results/{run.name}/`.")
    return "\n".join([BLOCK_START.format(name=run.name), ""] + parts + ["", BLOCK_END])


def readme_blocks(text: str) -> dict[str, str]:
    """name -> the generated block as it stands in ``text`` (README.md)."""
    out = {}
    for m in re.finditer(r"<!-- generated from results/([^:]+): .*? -->.*?" + re.escape(BLOCK_END),
                         text, flags=re.S):
        out[m.group(1)] = m.group(0)
    return out


def update_readme(text: str, runs: dict[str, "_agg.Run"]) -> str:
    """README.md with every generated block rendered again from its run's data."""
    for name, block in readme_blocks(text).items():
        if name in runs:
            text = text.replace(block, readme_block(runs[name]))
    return text


RESULTS = Path(__file__).resolve().parents[1] / "results"


def report_all(results_dir: Path | None = None, readme: Path | None = None) -> list[Path]:
    """Aggregate every results/<preset>/ folder, then write results/README.md (the verdict per
    claim) and the generated blocks of the project README. Returns the files written."""
    from . import claims
    results_dir = Path(results_dir or RESULTS)
    runs = {}
    for folder in sorted(p for p in results_dir.iterdir() if p.is_dir() and _agg.is_run(p)):
        run = _agg.load(folder)
        print(seeds_line(run, expected_seeds(run.name)))
        write_run(run)
        runs[folder.name] = run
    written = [results_dir / "README.md"]
    written[0].write_text(claims.render(list(runs.values())))
    readme = readme if readme is not None else results_dir.parent / "README.md"
    if readme.exists():
        text = readme.read_text()
        new = update_readme(text, runs)
        if new != text:
            readme.write_text(new)
            written.append(readme)
    return written
