"""Robustness curves in MLflow (docs/method.md#robustness): each curve is ONE metric whose step is the
perturbation strength, so charting one metric over the method runs overlays their curves.

Metric names (mean over the rows' seeds; <point> is T_1, T_4 or T_op):
  rob/clean/<point>                         step 0
  rob/transfer_<source>_<attack>/<point>    step = eps in units of 1/255
  rob/pgd_snn/<point>                       step = eps in units of 1/255 (white-box, through time)
  rob/robust/<point>                        step = eps in units of 1/255 (per-image min over attacks)
  rob/noise_<sp|gauss>_<static|dynamic>/<point>   step = s or sigma in percent
  rob/noise_authors/<point>                 step = s in percent (AddNoise(s, p), static)
  rob/leak_<exp|linear>_<clean|authors>/<point>   step = leak in percent (leak 1 = 100 is on both
                                            modes' curves: it is the same neuron); <point> is T_2 ... T_32
                                            (older runs: rob/leak_<mode>_<sp|gauss>_<static|dynamic>/<point>)

``log_overlay`` puts every method of one invocation (run group) on the compare run:
  rob_vs_eps/<transfer_<source>|pgd_snn|robust>/<method>   step = eps in units of 1/255, at T_op
  rob_vs_noise/<sp|gauss>_<static|dynamic>/<method>       step = s or sigma in percent, at T_op
and one figure, robustness_overlay.png.
"""
from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from .groups import AUTHORS, robust_rows

SHORT = {"salt_pepper": "sp", "gaussian": "gauss", AUTHORS: "authors", "clean": "clean"}


def _step(v: float) -> int:
    return int(round(v))


def curves(rows: list[dict], method: str) -> dict[str, dict[int, float]]:
    """{metric key: {step: accuracy}} for one method (accuracy as a fraction, mean over seeds)."""
    acc = defaultdict(lambda: defaultdict(list))
    mine = [r for r in rows if r["method"] == method and r["n"]]
    for r in mine:
        f, pt = r["family"], r["point"]
        if f == "clean":
            acc[f"rob/clean/{pt}"][0].append(r["acc"])
        elif f == "transfer":
            acc[f"rob/transfer_{r['source']}_{r['attack']}/{pt}"][_step(r["level"])].append(r["acc"])
        elif f == "snn_pgd":
            acc[f"rob/pgd_snn/{pt}"][_step(r["level"])].append(r["acc"])
        elif f == "noise" and r["attack"] == "salt_pepper_authors":
            acc[f"rob/noise_authors/{pt}"][_step(100 * r["level"])].append(r["acc"])
        elif f == "noise":
            acc[f"rob/noise_{SHORT[r['attack']]}_{r['mode']}/{pt}"][_step(100 * r["level"])].append(r["acc"])
        elif f == "leak":
            modes = sorted({x["leak_mode"] for x in mine if x["family"] == "leak" and x["leak_mode"] != "-"}) \
                if r["leak_mode"] == "-" else [r["leak_mode"]]
            cond = SHORT.get(r["attack"], r["attack"])
            if r["attack"] not in ("clean", AUTHORS):   # older runs: the leak under a sweep setting
                cond = f"{cond}_{r['mode']}"
            for lm in modes:
                acc[f"rob/leak_{lm}_{cond}/{pt}"][_step(100 * r["leak"])].append(r["acc"])
    for r in robust_rows(rows):
        if r["method"] == method and r["n"]:
            acc[f"rob/robust/{r['point']}"][_step(r["level"])].append(r["acc"])
    return {k: {s: float(np.mean(v)) for s, v in sorted(c.items())} for k, c in acc.items()}


def log_to_mlflow(client, run_id: str, cfg: dict, rows: list[dict], method: str, out_dir: Path) -> list[Path]:
    """Log ``method``'s curves, its rows as an MLflow table and its figures into ``run_id``;
    returns the files written under ``out_dir`` (and logged as artifacts)."""
    from mlflow.entities import Metric

    from .files import write
    from .rows import FIELDS

    ts = int(time.time() * 1000)
    metrics = [Metric(key, value, ts, step) for key, c in curves(rows, method).items() for step, value in c.items()]
    for i in range(0, len(metrics), 1000):   # MLflow's log_batch takes at most 1000 metrics
        client.log_batch(run_id, metrics=metrics[i:i + 1000])
    mine = [r for r in rows if r["method"] == method]
    if mine:
        import pandas as pd
        client.log_table(run_id, data=pd.DataFrame(mine, columns=FIELDS),
                         artifact_file=f"robustness_{method}.json")
    files = write(dict(cfg, methods=[method]), mine, Path(out_dir))
    for f in files:
        client.log_artifact(run_id, str(f))
    return files


def overlay_curves(rows: list[dict], common_source: str) -> dict[str, dict[int, float]]:
    """{metric key: {step: accuracy}} with every method at its operating point (see module doc)."""
    acc = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if not r["n"] or r["point"] != "T_op":
            continue
        m, f = r["method"], r["family"]
        if f == "transfer" and r["source"] == common_source and r["attack"] == "pgd":
            acc[f"rob_vs_eps/transfer_{common_source}/{m}"][_step(r["level"])].append(r["acc"])
        elif f == "snn_pgd":
            acc[f"rob_vs_eps/pgd_snn/{m}"][_step(r["level"])].append(r["acc"])
        elif f == "noise" and r["attack"] in SHORT:
            acc[f"rob_vs_noise/{SHORT[r['attack']]}_{r['mode']}/{m}"][_step(100 * r["level"])].append(r["acc"])
    for r in robust_rows(rows):
        if r["n"] and r["point"] == "T_op":
            acc[f"rob_vs_eps/robust/{r['method']}"][_step(r["level"])].append(r["acc"])
    return {k: {s: float(np.mean(v)) for s, v in sorted(c.items())} for k, c in acc.items()}


def overlay_figure(curves: dict[str, dict[int, float]]):
    """Two panels: accuracy against eps (common-source transfer solid, white-box dashed) and
    against noise strength, every method in both."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"transfer": "-", "pgd_snn": "--", "robust": ":"}
    for key, c in sorted(curves.items()):
        group, what, method = key.split("/")
        if not c:
            continue
        xs, ys = list(c), [100 * v for v in c.values()]
        if group == "rob_vs_eps":
            kind = "transfer" if what.startswith("transfer") else what
            a.plot(xs, ys, styles[kind], marker="o", ms=3, label=f"{method} ({what})")
        else:
            b.plot(xs, ys, marker="o", ms=3, label=f"{method} ({what})")
    a.set_xlabel("eps (units of 1/255)")
    a.set_ylabel("accuracy at each method's operating point (%)")
    a.set_title("attacks: common-source transfer (solid), white-box through time (dashed)", fontsize=9)
    b.set_xlabel("noise strength (sigma or s, percent)")
    b.set_title("noise, every method at its operating point", fontsize=9)
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def log_overlay(client, experiment_id: str, seed, group: str | None, rows: list[dict], common_source: str) -> str | None:
    """Every method's robustness curves of one run group on its compare run; its run id."""
    from mlflow.entities import Metric

    import tracking
    name = tracking.comparison_name(seed, group)
    found = client.search_runs([experiment_id], filter_string=f"tags.kind = 'comparison' and "
                                                               f"tags.mlflow.runName = '{name}'")
    if not found:
        return None
    rid = found[0].info.run_id
    curves = overlay_curves(rows, common_source)
    ts = int(time.time() * 1000)
    metrics = [Metric(k, v, ts, step) for k, c in curves.items() for step, v in c.items()]
    for i in range(0, len(metrics), 1000):
        client.log_batch(rid, metrics=metrics[i:i + 1000])
    if curves:
        tracking.log_figure(client, rid, overlay_figure(curves), "robustness_overlay.png")
    return rid
