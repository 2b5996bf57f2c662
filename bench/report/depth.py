"""Depth as an axis, and each method's ANN as it was trained (docs/method.md#metrics).

Rate-coded conversion accumulates error layer after layer, so it needs more steps as a
network gets deeper, while a conversion exact at t = 1 does not. The records keep, per
spiking layer in network order, the firing rate and the conversion error (the layer's output
averaged over steps 1..t against the folded ANN's activation there); the tables below show
them by depth. Beside them: each ANN's accuracy gap to the ReLU ANN of the same seed (what a
quantised activation costs before any conversion) and the thresholds each activation learned.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import stats
from .records import ordered

DEPTH_T = (1, 4, 32)


def _mean(values) -> str:
    vals = [v for v in values if v is not None]
    return "n/a" if not vals else f"{np.mean(vals):.3g}"


def _layers(rs: list[dict]) -> list[str]:
    err = next((r.get("layer_conv_error") for r in rs if r.get("layer_conv_error")), None)
    return list(err) if err else list(rs[0].get("firing_rate") or {})


def depth_tables(cfg: dict, records: list[dict]) -> str:
    """Per method (leak 1): firing rate and conversion error at t = 1, 4, T_max by spiking layer,
    means over seeds; '' when the records predate the per-layer error."""
    groups = [(k, rs) for k, rs in ordered(cfg, records) if k[1] == 1.0 and rs[0].get("layer_conv_error")]
    if not groups:
        return ""
    n = max(len(_layers(rs)) for _, rs in groups)
    head = ["method", "what"] + [f"layer {i}" for i in range(1, n + 1)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (method, _), rs in groups:
        layers = _layers(rs)
        ts = rs[0].get("layer_conv_error_ts") or []
        lines.append("| " + " | ".join([method, "firing rate"] + [
            _mean([(r.get("firing_rate") or {}).get(layer) for r in rs]) for layer in layers]) + " |")
        for t in [t for t in DEPTH_T if t in ts] + ([max(ts)] if ts and max(ts) not in DEPTH_T else []):
            k = ts.index(t)
            lines.append("| " + " | ".join([method, f"conv. error t = {t}"] + [
                _mean([(r["layer_conv_error"].get(layer) or [None] * len(ts))[k] for r in rs]) for layer in layers])
                + " |")
    return "\n".join(lines)


def depth_plot(cfg: dict, records: list[dict], path: Path) -> bool:
    """Conversion error against depth at t = 4 and at T_max, one line per method (log scale)."""
    groups = [(k, rs) for k, rs in ordered(cfg, records) if k[1] == 1.0 and rs[0].get("layer_conv_error")]
    if not groups:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ts = groups[0][1][0]["layer_conv_error_ts"]
    picks = [t for t in (4, max(ts)) if t in ts]
    fig, axes = plt.subplots(1, len(picks), figsize=(5.5 * len(picks), 4), squeeze=False)
    for ax, t in zip(axes[0], picks):
        k = ts.index(t)
        for (method, _), rs in groups:
            layers = _layers(rs)
            ys = [np.mean([r["layer_conv_error"][layer][k] for r in rs]) for layer in layers]
            ax.plot(range(1, len(layers) + 1), [max(y, 1e-6) for y in ys], marker="o", ms=3, label=method)
        ax.set_yscale("log")
        ax.set_xlabel("spiking layer (network order)")
        ax.set_ylabel(f"conversion error at t = {t}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{cfg['name']}: conversion error by depth (0 plotted at 1e-6)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return True


def ann_table(cfg: dict, records: list[dict]) -> str:
    """Each activation's ANN: folded accuracy, its gap to the same seed's ReLU ANN, and the
    thresholds it learned per layer (QCFS: lambda, its neuron's threshold; StepReLU: theta)."""
    by_act: dict[str, dict[int, dict]] = {}
    for r in records:   # the method named as its activation carries that ANN's own thresholds
        if float(r["leak"]) == 1.0 and r.get("activation"):
            seeds = by_act.setdefault(r["activation"], {})
            if r.get("seed", 0) not in seeds or r["method"] == r["activation"]:
                seeds[r.get("seed", 0)] = r
    if not by_act:
        return ""
    relu = by_act.get("relu", {})
    lines = ["| ANN | knobs | ANN acc (folded) | gap to the ReLU ANN (points, same seed) | "
             "learned range per layer (mean over seeds) |", "|---|---|---|---|---|"]
    for act in [a for a in ("relu", "qcfs", "steprelu") if a in by_act] + \
               sorted(a for a in by_act if a not in ("relu", "qcfs", "steprelu")):
        rs = by_act[act]
        knobs = cfg.get("activations", {}).get(act, {})
        gaps = [100 * (r["ann_acc"] - relu[s]["ann_acc"]) for s, r in rs.items() if s in relu and act != "relu"]
        th = [r.get("thresholds") or {} for r in rs.values()]
        layers = list(th[0]) if th and th[0] else []
        rng = ", ".join(f"{np.mean([t[layer] for t in th if isinstance(t.get(layer), float)]):.4g}"
                        for layer in layers) if act != "relu" else "n/a (calibrated per method)"
        label = "lambda" if act == "qcfs" else "theta"
        lines.append(f"| {act} | `{knobs}` | {stats.spread([100 * r['ann_acc'] for r in rs.values()], '.2f')} | "
                     f"{stats.spread(gaps, '.2f') if gaps else '-'} | "
                     f"{(label + ': ' + rng) if layers and act != 'relu' else rng} |")
    return "\n".join(lines)


def spiking_depth(records: list[dict]) -> int | None:
    """The number of spiking layers of a run's networks (from its per-layer records)."""
    for r in records:
        layers = r.get("layer_conv_error") or r.get("firing_rate")
        if layers:
            return len(layers)
    return None


def depth_axis_table(runs: list, gap_points: float = 1.0) -> str:
    """One row per preset, ordered by depth: each paper method's operating point (first t within
    ``gap_points`` of its ANN on validation; mean over seeds, and how many seeds reached one by
    T_max) and StepReLU's largest spike count per step. Rate-coded conversion should need more
    steps as depth grows; a conversion exact at t = 1 should not. '' without per-layer records."""
    from .. import costs, paper
    rows = []
    for run in runs:
        depth = spiking_depth(run.records)
        if depth is None:
            continue
        rows.append((depth, run))
    if not rows:
        return ""
    methods = [paper.SUBJECT, *paper.PAPER_BASELINES]
    head = ["preset", "spiking layers", *[f"{m} T_op" for m in methods], f"{paper.SUBJECT} largest n per step"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for depth, run in sorted(rows, key=lambda x: (x[0], x[1].name)):
        cells = []
        for m in methods:
            rs = [r for r in run.records if r["method"] == m and r.get("leak", 1.0) == 1.0]
            if not rs:
                cells.append("not run")
                continue
            ts = [costs.operating_t(r, gap_points) for r in rs]
            got = [t for t in ts if t is not None]
            if all(r.get("val_acc") is None for r in rs):
                cells.append("no validation curve")
            elif not got:
                cells.append(f"not by {rs[0]['T_max']} (0/{len(rs)})")
            else:
                cells.append(f"{np.mean(got):.3g} ({len(got)}/{len(rs)})")
        step = [r for r in run.records if r["method"] == paper.SUBJECT and r.get("max_n_per_layer")]
        n = max((max(int(v) for v in r["max_n_per_layer"].values()) for r in step), default=None)
        lines.append(f"| {run.name} | {depth} | " + " | ".join(cells) + f" | {n if n is not None else 'n/a'} |")
    return "\n".join(lines)
