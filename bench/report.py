"""results/<preset>/: summary.md, accuracy_vs_t.png, results.json, manifest.json.

Every number written here comes from the records of the run; the manifest holds
the preset as run, the commit, the package versions and the wall time beside them.
"""
from __future__ import annotations

import json
import os
import platform
import time
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import tracking  # noqa: E402


def _fmt(values, scale=100.0, digits=2) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "n/a"
    arr = np.asarray(vals, dtype=float) * scale
    if len(arr) == 1:
        return f"{arr[0]:.{digits}f}"
    return f"{arr.mean():.{digits}f} ± {arr.std(ddof=1):.{digits}f}"


def _by_setting(records: list[dict]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["method"], r["leak"])].append(r)
    return groups


def summary_table(cfg: dict, records: list[dict]) -> str:
    ts = cfg["summary_t"]
    T = cfg["T_max"]
    head = (["method", "leak", "ANN acc (folded)", "ANN acc (unfolded)"]
            + [f"SNN t={t}" for t in ts]
            + [f"conv. err t=1", f"conv. err t={T}", f"ops/ANN MACs t={T}", f"energy/ANN t={T}",
               "max spikes/step", "identical at t=1"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = {m: i for i, m in enumerate(cfg["methods"])}
    for (method, leak), rs in sorted(_by_setting(records).items(), key=lambda kv: (order.get(kv[0][0], 99), -kv[0][1])):
        ident = [f"{r['identical_at_t1']}/{r['n_images']}" for r in rs if r["identical_at_t1"] is not None]
        row = ([method, f"{leak:g}", _fmt([r["ann_acc"] for r in rs]),
                _fmt([r["ann_acc_unfolded"] for r in rs])]
               + [_fmt([r["acc"][t - 1] for r in rs]) for t in ts]
               + [_fmt([r["conv_error"][0] for r in rs], 1, 4), _fmt([r["conv_error"][-1] for r in rs], 1, 4),
                  _fmt([r["ops_ratio"][-1] for r in rs], 1, 3), _fmt([r["energy_ratio"][-1] for r in rs], 1, 3),
                  _fmt([r["max_spikes_per_step"] for r in rs], 1, 0), ", ".join(ident) or "n/a"])
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def accuracy_plot(cfg: dict, records: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (method, leak), rs in _by_setting(records).items():
        acc = np.array([r["acc"] for r in rs]) * 100
        t = np.arange(1, acc.shape[1] + 1)
        label = method if leak == 1.0 else f"{method} (leak {leak:g})"
        line, = ax.plot(t, acc.mean(0), marker="o", ms=3, label=label)
        if len(rs) > 1:
            ax.fill_between(t, acc.min(0), acc.max(0), color=line.get_color(), alpha=0.2)
        ann = [r["ann_acc"] for r in rs if r["ann_acc"] is not None]
        if ann and leak == max(l for (m, l) in _by_setting(records) if m == method):
            ax.axhline(100 * np.mean(ann), color=line.get_color(), ls=":", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("time step t")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{cfg['name']}: {cfg['dataset']} / {cfg['arch']} (dotted: source ANN)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def manifest(cfg: dict, wall: float, uri: str, run_ids: dict, out: Path | None = None) -> dict:
    return {
        "preset": cfg, "git_commit": tracking.git_commit(ignore=[out] if out else []), "versions": tracking.versions(),
        "seeds": cfg["seeds"], "wall_seconds": round(wall, 1),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"platform": platform.platform(), "processor": platform.machine(),
                    "cpus": os.cpu_count()},
        "tracking_uri": uri.replace(str(tracking.PROJECT_ROOT), "<project>"),
        "mlflow_parent_runs": run_ids,
    }


def exactness_lines(records: list[dict]) -> list[str]:
    """The exactness claim on the trained network, one line per steprelu run."""
    return [f"- steprelu (seed {r.get('seed', 0)}, leak {r['leak']:g}): identical predictions: "
            f"{r['identical_at_t1']}/{r['n_images']} at t = 1"
            for r in records if r["method"] == "steprelu" and r["identical_at_t1"] is not None]


def render(cfg: dict, records: list[dict], man: dict) -> str:
    """summary.md from the run's records and manifest (re-renderable: ``python -m bench report``)."""
    exact = "\n".join(exactness_lines(records))
    return (f"# {cfg['name']}: {cfg['dataset']} / {cfg['arch']}\n\n{cfg.get('description', '')}\n\n"
            f"Test split ({records[0]['n_images'] if records else 0} images), seeds {cfg['seeds']}, "
            f"T_max = {cfg['T_max']}. Accuracies in %, mean ± std over seeds where there are several. "
            f"ANN acc (folded) is the source ANN after BatchNorm folding, the reference the SNN is "
            f"compared with; 'identical at t=1' counts test images whose SNN prediction at t = 1 equals "
            f"the folded ANN's. ops/ANN MACs = (first-layer MACs x t + synaptic operations) / ANN MACs; "
            f"energy at 4.6 pJ/MAC, 0.9 pJ/AC.\n\n{summary_table(cfg, records)}\n\n"
            + (f"Exactness at t = 1 on the trained network:\n{exact}\n\n" if exact else "")
            + f"![accuracy vs t](accuracy_vs_t.png)\n\n"
            f"Commit `{man['git_commit']}`, wall time {man['wall_seconds']:.0f} s, versions in manifest.json.\n")


def write(cfg: dict, records: list[dict], out: Path, wall: float, uri: str, run_ids: dict) -> str:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(records, indent=1))
    accuracy_plot(cfg, records, out / "accuracy_vs_t.png")
    man = manifest(cfg, wall, uri, run_ids, out)
    (out / "manifest.json").write_text(json.dumps(man, indent=2))
    (out / "summary.md").write_text(render(cfg, records, man))
    return summary_table(cfg, records) + "\n" + "\n".join(exactness_lines(records))


def rerender(out: Path) -> str:
    """Rewrite summary.md and the plot from results.json + manifest.json (no new numbers)."""
    records = json.loads((out / "results.json").read_text())
    man = json.loads((out / "manifest.json").read_text())
    accuracy_plot(man["preset"], records, out / "accuracy_vs_t.png")
    text = render(man["preset"], records, man)
    (out / "summary.md").write_text(text)
    return text
