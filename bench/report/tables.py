"""The cost tables of a run: each method's operating point and what it costs there, and the
spike-count distribution of the multi-spike methods (conventions: ``bench.costs``)."""
from __future__ import annotations

import numpy as np

from ..costs import GAPS, energy_static_input, operating_t, substeps
from ..stats import spread


def operating_point_table(groups: list[tuple[tuple, list[dict]]]) -> str:
    """One row per (method, leak, gap): where the SNN reaches its ANN and what it costs there."""
    head = ["method", "leak", "within", "first t (per seed)", "SNN acc at t", "ops/ANN MACs",
            "energy/ANN (first layer every step)", "energy/ANN (first layer once)",
            "binary sub-steps (max layer)", "binary sub-steps (sum of layers)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (method, leak), rs in groups:
        for gap in GAPS:
            ts = [operating_t(r, gap) for r in rs]
            reached = [(r, t) for r, t in zip(rs, ts) if t is not None]
            first = ", ".join(str(t) if t is not None else f"not by {r['T_max']}" for r, t in zip(rs, ts))
            sub = [substeps(r, t) for r, t in reached]
            row = [method, f"{leak:g}", f"{gap:g} pt", first,
                   spread([100 * r["acc"][t - 1] for r, t in reached], ".2f"),
                   spread([r["ops_ratio"][t - 1] for r, t in reached], ".3f"),
                   spread([r["energy_ratio"][t - 1] for r, t in reached], ".3f"),
                   spread([energy_static_input(r, t) for r, t in reached], ".3f"),
                   spread([s[0] for s in sub if s], ".0f"), spread([s[1] for s in sub if s], ".0f")]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def spike_distribution_table(groups: list[tuple[tuple, list[dict]]]) -> str:
    """Per layer of each multi-spike method: how often a neuron-step sends n = 0, 1, 2, >= 3
    spikes, the mean n when it sends any, and the largest n used (first seed's run)."""
    head = ["method", "leak", "layer", "n = 0", "n = 1", "n = 2", "n >= 3", "mean n given n > 0",
            "largest n used", "cap"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = 0
    for (method, leak), rs in groups:
        hist = rs[0].get("spike_hist")
        if not hist:
            continue
        for layer, counts in hist.items():
            c = np.asarray(counts, dtype=float)
            total, levels = c.sum(), np.arange(len(c))
            if total == 0:
                continue
            frac = c / total
            firing = c[1:].sum()
            mean_n = float((levels * c).sum() / firing) if firing else 0.0
            used = int(levels[c > 0].max())
            lines.append("| " + " | ".join([
                method, f"{leak:g}", layer, f"{frac[0]:.3f}", f"{frac[1]:.3f}" if len(c) > 1 else "0",
                f"{frac[2]:.3f}" if len(c) > 2 else "0", f"{frac[3:].sum():.3f}", f"{mean_n:.2f}",
                str(used), str(len(c) - 1)]) + " |")
            rows += 1
    return "\n".join(lines) if rows else ""
