"""Seaborn figures of the robustness stage, from its rows (docs/method.md#robustness): accuracy vs eps with 95 % Student-t
bands over seeds, the transfer matrix as a heatmap and the noise sweeps (accuracy and drop from
clean) at every method's operating point (T_op), and the leak's effect (leak minus leak 1, on the
same images and noise draws) against T, clean and under the authors' noise."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .. import stats  # noqa: E402
from .groups import AUTHORS, methods_of, robust_rows  # noqa: E402
from .render import condition_label  # noqa: E402

FILES = ("robustness_eps.png", "robustness_transfer.png", "robustness_noise.png", "robustness_leak.png")


def _frame(rows) -> pd.DataFrame:
    df = pd.DataFrame([{k: r[k] for k in ("seed", "family", "method", "source", "attack", "mode", "level",
                                          "leak", "leak_mode", "point", "n", "acc")} for r in rows])
    df = df[df["n"] > 0].copy()
    df["acc"] = 100 * df["acc"]
    return df


def _save(g, path: Path) -> Path:
    fig = g.figure if hasattr(g, "figure") else g
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def plots(cfg: dict, rows: list[dict], out: Path) -> list[Path]:
    """The figures that have data, written into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    methods = methods_of(cfg, rows)
    if not methods:
        return []
    df = _frame(rows)
    op = df[df["point"] == "T_op"]
    files = []
    src = cfg["robustness"]["common_source"]
    # accuracy vs eps: common-source transfer PGD, white-box PGD through time, robust (min over attacks)
    clean = op[op["family"] == "clean"].assign(level=0.0)
    rob = pd.DataFrame([dict(seed=r["seed"], method=r["method"], level=r["level"], acc=100 * r["acc"])
                        for r in robust_rows(rows) if r["point"] == "T_op" and r["n"]])
    curves = []
    for name, part in ((f"PGD from the {src} ANN", op[(op["family"] == "transfer") & (op["source"] == src)
                                                      & (op["attack"] == "pgd")]),
                       ("white-box PGD through time", op[op["family"] == "snn_pgd"]),
                       ("robust (min over attacks)", rob)):
        if len(part):
            curves.append(pd.concat([clean, part])[["seed", "method", "level", "acc"]].assign(panel=name))
    if curves:
        data = pd.concat(curves, ignore_index=True)
        g = sns.relplot(data=data, x="level", y="acc", hue="method", hue_order=methods, col="panel",
                        kind="line", marker="o", errorbar=stats.t_band, height=3.4, aspect=1.1)
        g.set_axis_labels("eps (units of 1/255)", "accuracy (%) at T_op")
        g.set_titles("{col_name}")
        files.append(_save(g, out / FILES[0]))
    tr = op[op["family"] == "transfer"]
    if len(tr):
        eps = tr["level"].max()
        att = "pgd" if (tr["attack"] == "pgd").any() else tr["attack"].iloc[0]
        mat = (tr[(tr["level"] == eps) & (tr["attack"] == att)].groupby(["source", "method"])["acc"].mean()
               .unstack("method").reindex(columns=[m for m in methods if m in set(tr["method"])]))
        fig, ax = plt.subplots(figsize=(1.1 * mat.shape[1] + 2.5, 0.6 * mat.shape[0] + 1.8))
        sns.heatmap(mat, annot=True, fmt=".1f", cmap="viridis", ax=ax, cbar_kws={"label": "accuracy (%)"})
        ax.set_title(f"{att.upper()} eps {eps:g}/255 crafted on (rows), run on SNN at T_op (columns)")
        ax.set_xlabel("SNN method")
        ax.set_ylabel("source ANN")
        files.append(_save(fig, out / FILES[1]))
    nz = op[(op["family"] == "noise") & (op["attack"] != AUTHORS)].copy()
    if len(nz):
        clean_acc = op[op["family"] == "clean"].set_index(["seed", "method"])["acc"]
        nz["setting"] = nz["attack"] + ", " + nz["mode"]
        nz["drop"] = [clean_acc.get((s, m), float("nan")) - a for s, m, a in zip(nz["seed"], nz["method"], nz["acc"])]
        data = pd.concat([nz.assign(measure="accuracy (%)", value=nz["acc"]),
                          nz.assign(measure="drop from clean (points)", value=nz["drop"])], ignore_index=True)
        g = sns.relplot(data=data, x="level", y="value", hue="method", hue_order=methods, col="setting",
                        row="measure", kind="line", marker="o", errorbar=stats.t_band, height=3.0, aspect=1.0,
                        facet_kws={"sharex": False, "sharey": False})
        g.set_axis_labels("noise level (s or sigma)", "")
        g.set_titles("{col_name}")
        for i, name in enumerate(g.row_names):
            g.axes[i, 0].set_ylabel(f"{name} at T_op")
        files.append(_save(g, out / FILES[2]))
    lk = leak_frame(cfg, rows)
    if len(lk):
        g = sns.relplot(data=lk, x="T", y="diff", hue="leak", style="leak_mode", col="condition", row="method",
                        kind="line", marker="o", errorbar=stats.t_band, height=3.2, aspect=1.2,
                        facet_kws={"sharey": False})
        g.set_axis_labels("T (time steps)", "leak minus leak 1 (points)")
        g.set_titles("{row_name}: {col_name}")
        for ax in g.axes.flat:
            ax.set_xscale("log", base=2)
            ax.axhline(0.0, color="grey", lw=0.8, ls=":")
        files.append(_save(g, out / FILES[3]))
    return files


def leak_frame(cfg: dict, rows: list[dict]) -> pd.DataFrame:
    """Per (seed, method, condition, T, leak mode, leak < 1): accuracy minus leak 1's at the same
    point on the same images and noise draws (points)."""
    rc = cfg["robustness"]
    base = {(r["seed"], r["method"], r["attack"], r["mode"], r["level"], r["point"]): r["acc"]
            for r in rows if r["family"] == "leak" and r["leak"] == 1.0 and r["n"]}
    out = []
    for r in rows:
        if r["family"] != "leak" or r["leak"] == 1.0 or not r["n"]:
            continue
        b = base.get((r["seed"], r["method"], r["attack"], r["mode"], r["level"], r["point"]))
        if b is not None:
            out.append(dict(seed=r["seed"], method=r["method"], T=r["T"], leak=f"{r['leak']:g}",
                            leak_mode=r["leak_mode"], diff=100 * (r["acc"] - b),
                            condition=condition_label(r["attack"], r["mode"], r["level"], rc)))
    return pd.DataFrame(out)
