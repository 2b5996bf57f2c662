"""The run's figures: accuracy against t and against energy, mean over seeds with the
tables' 95 % Student-t band (``bench.stats.t_band``), so a figure renders the same twice."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .. import stats  # noqa: E402
from .records import by_setting  # noqa: E402


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
    for (method, leak), rs in by_setting(records).items():
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



def write_plots(cfg: dict, records: list[dict], out: Path) -> None:
    from .depth import depth_plot
    accuracy_plot(cfg, records, out / "accuracy_vs_t.png")
    cost_plot(cfg, records, out / "accuracy_vs_energy.png")
    depth_plot(cfg, records, out / "depth.png")
