"""Figures shared by the MLflow runs: built in memory, so a caller logs them with
``MlflowClient.log_figure`` or saves them, without temporary files."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def accuracy_figure(curves: dict[str, list[float]], title: str, ann_acc: dict | None = None) -> Figure:
    """Accuracy against time step, one line per curve (log-2 x axis); a dotted line at
    each curve's ANN accuracy where ``ann_acc`` has it."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, acc in curves.items():
        line, = ax.plot(range(1, len(acc) + 1), [100 * a for a in acc], marker="o", ms=3, label=name)
        if ann_acc and ann_acc.get(name) is not None:
            ax.axhline(100 * ann_acc[name], color=line.get_color(), ls=":", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("time step t")
    ax.set_ylabel("SNN test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
