"""The report of a leak / time-step study, once its trials are done: the Pareto-optimal (or
best) settings, chosen on validation, evaluated once on the test split next to the method's
default neuron; study.md, pareto.png, study.json, and the MLflow runs."""
from __future__ import annotations

import argparse
import json
import math
import shlex
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

import tracking
from annsnn.recipes import get_recipe

from . import roles as R
from . import storage as st
from . import workers as W
from .leak_inputs import datamodule, loader_of, method_phi, run_snn

PROG = "python -m studies.leak_timestep"


def pareto_trials(study: optuna.Study, objectives) -> list:
    best = study.best_trials if len(objectives) > 1 else [study.best_trial]
    seen, out = set(), []
    for t in sorted(best, key=lambda t: t.number):
        key = tuple(round(v, 12) for v in t.values)
        if key not in seen:          # ties: keep the earliest trial
            seen.add(key)
            out.append(t)
    x = 1 if len(objectives) > 1 else None
    return sorted(out, key=lambda t: (t.values[x] if x else 0, -t.values[0]))


def evaluate_on_test(args, inputs, points, perturb, default_phi) -> tuple[dict, dict]:
    """Test accuracy of each (leak, phi, T), plus the default setting's curve and the ANN's."""
    dm = datamodule(inputs["meta"], args, test_subset=args.test_subset)
    test = dm.test_dataloader()
    calib = loader_of(inputs["calib"], args.batch_size)
    ann = inputs["ann"]
    groups: dict[tuple, int] = {}
    for p in points:
        key = (p["leak"], p["phi"])
        groups[key] = max(groups.get(key, 0), p["T"])
    curves = {}
    for (leak, phi), T in groups.items():
        r = run_snn(ann, args.method, leak, phi, T, test, perturb, args.seed, calib)
        curves[(leak, phi)] = r
    T_def = max(args.T_max, max(groups.values()))
    r_def = run_snn(ann, args.method, 1.0, default_phi, T_def, test, perturb, args.seed, calib,
                    with_ann=True)
    for p in points:
        r = curves[(p["leak"], p["phi"])]
        p["test_acc"] = r.acc[p["T"] - 1]
        p["test_energy_ratio"] = r.energy_ratio(p["T"])
        p["default_test_acc"] = r_def.acc[p["T"] - 1]
    default = {"leak": 1.0, "phi": default_phi, "test_acc": r_def.acc,
               "test_energy_ratio": [r_def.energy_ratio(t) for t in range(1, T_def + 1)],
               "ann_test_acc_folded": r_def.ann_acc, "n_test": r_def.n_images,
               "identical_at_t1": r_def.identical_at_t1}
    return {"n_test": r_def.n_images}, default


def plot(path: Path, trials, points, objectives, default_val, default_test, title: str,
         leak_range: tuple[float, float]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xkey = objectives[1] if len(objectives) > 1 else "T"

    def xval(t_or_p, T=None):
        if xkey == "energy":
            return t_or_p["energy_ratio"] if isinstance(t_or_p, dict) else t_or_p.user_attrs["energy_ratio"]
        return t_or_p["T"] if isinstance(t_or_p, dict) else t_or_p.params["T"]

    fig, ax = plt.subplots(figsize=(7, 4.6))
    xs = [xval(t) for t in trials]
    ys = [100 * t.values[0] for t in trials]
    leaks = [t.params["leak"] for t in trials]
    marks = {p: m for p, m in zip(sorted({t.params["phi"] for t in trials}), "o^sD")}
    sc = None
    for phi, mk in marks.items():
        idx = [i for i, t in enumerate(trials) if t.params["phi"] == phi]
        sc = ax.scatter([xs[i] for i in idx], [ys[i] for i in idx], c=[leaks[i] for i in idx],
                        cmap="viridis", vmin=leak_range[0], vmax=leak_range[1], marker=mk, s=28,
                        alpha=0.8, label=f"trials, phi={phi:g}", edgecolors="none")
    if sc is not None:
        fig.colorbar(sc, ax=ax, label="leak")
    px = [xval(p) for p in points]
    ax.plot(px, [100 * p["val_acc"] for p in points], "-o", color="crimson", ms=6, mfc="none",
            mew=1.5, drawstyle="steps-post" if len(objectives) > 1 else "default",
            label="Pareto front (validation)" if len(objectives) > 1 else "best (validation)")
    ax.plot(px, [100 * p["test_acc"] for p in points], "x--", color="black", ms=7, lw=0.8,
            label="same settings on test")
    if default_val is not None:
        if xkey == "energy":
            dx = default_val["energy_ratio"]
        else:
            dx = list(range(1, len(default_val["acc"]) + 1))
        ax.plot(dx, [100 * a for a in default_val["acc"]], ":", color="grey",
                label=f"default leak 1, phi={default_val['phi']:g} (validation)")
    if default_test is not None and xkey == "T":
        ax.plot(range(1, len(default_test["test_acc"]) + 1), [100 * a for a in default_test["test_acc"]],
                "-.", color="silver", lw=1, label="default (test)")
    ax.set_xlabel("time steps T" if xkey == "T" else "SNN/ANN energy ratio at step T")
    if xkey == "T":
        ax.set_xscale("log", base=2)
        top = max([1] + xs + px)
        ticks = [2 ** k for k in range(0, int(math.log2(top)) + 2) if 2 ** k <= 2 * top]
        ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _pct(v) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"


def markdown(ctx: dict) -> str:
    m, cfg, pts, d = ctx["meta"], ctx["config"], ctx["points"], ctx["default_test"]
    hp = m["hparams"]
    act = hp.get("activation", {})
    objectives = cfg["objectives"]
    multi = len(objectives) > 1
    pert = ctx["perturbation"]
    lines = [
        f"# Leak / time-step study `{ctx['study_name']}`", "",
        f"- **ANN**: `{m['path']}` (sha256 `{m['sha256'][:12]}`), {hp.get('arch')} "
        f"{json.dumps(hp.get('arch_kwargs') or {})}, activation {json.dumps(act)}, dataset "
        f"**{m['dataset']}**" + (f", MLflow run `{m['run_id']}`" if m.get("run_id") else ""),
        f"- **Method**: `{cfg['method']}` — {get_recipe(cfg['method']).description}",
        f"- **Search** (validation only): leak in [{cfg['leak_range'][0]}, {cfg['leak_range'][1]}], T in "
        f"{{1..{cfg['T_max']}}}, neuron phi in {{{', '.join(f'{p:g}' for p in cfg['phi_choices'])}}}; "
        f"the method's own phi is {ctx['default_phi']:g} (exact at T = 1); another phi changes the "
        "neuron only (the ANN and thresholds stay as trained).",
        f"- **Validation**: the first {m['n_val']} images of the held-out validation part "
        f"({m['n_val_split']} images, val_fraction {m['val_fraction']}, split seed "
        f"{m['split_seed']}, the training run's); the same images for every trial.",
        f"- **Perturbation**: {pert}" + (f", noise seed {cfg['noise_seed']} (same draws in every "
                                         "trial and in the test evaluation)" if pert != "none" else ""),
        "- **Objectives**: " + ", ".join(f"{d} {label}" for d, label in ctx["objectives"].values())
        + f"; sampler {ctx['sampler']}",
        f"- **Trials**: {ctx['counts']['finished']} complete, {ctx['counts']['fail']} failed "
        f"({ctx['n_retried']} retried after a worker died, {ctx['n_surplus']} surplus starts "
        f"stopped unevaluated), median {ctx['median_seconds']:.1f} s per trial; {ctx['workers']}; "
        f"storage `{ctx['storage']}`",
        "",
        f"## {'Pareto front' if multi else 'Best setting'}: chosen on validation, evaluated once on test",
        "",
        f"Test: {d['n_test']} images of the test split. ANN test accuracy (BatchNorm folded): "
        f"{_pct(d['ann_test_acc_folded'])} % (clean)."
        + (f" The default setting (leak 1, phi {ctx['default_phi']:g}) reproduces the ANN at "
           f"t = 1 on {d['identical_at_t1']}/{d['n_test']} test images." if pert == "none" else ""),
        "",
        "| # | trial | T | leak | phi | val acc % | test acc % | default test acc % (leak 1) | "
        "energy ratio (val) | max spikes/step |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, p in enumerate(pts):
        lines.append(f"| {i} | {p['trial']} | {p['T']} | {p['leak']:.4f} | {p['phi']:g} | "
                     f"{_pct(p['val_acc'])} | {_pct(p['test_acc'])} | {_pct(p['default_test_acc'])} | "
                     f"{p['energy_ratio']:.3f} | {p['max_spikes_per_step']:g} |")
    lines += [
        "", "![Pareto front](pareto.png)", "",
        "Selection used the validation subset only; the test column was computed once, after "
        "the search, for the rows above. 'default' is the method's own neuron (leak 1, its phi) "
        "at the same T on the same test images and noise draws.",
    ]
    if ctx.get("mlflow"):
        ml = ctx["mlflow"]
        lines += ["", f"MLflow ({tracking.portable(ml['uri'])}): experiment `{ml['experiment']}`, study run "
                      f"`{ml['parent']}` with {ml['n_trial_runs']} nested trial runs, test run "
                      f"`{ml['test']}`."]
    lines += ["", f"Command: `{ctx['command']}`", ""]
    return "\n".join(lines)


def log_mlflow(args, ctx: dict, trials, out: Path) -> dict:
    """Parent run for the study, a nested run per trial, a nested test-evaluation run."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    import tracking
    uri = tracking.tracking_uri(args.tracking_uri)
    client = MlflowClient(uri)
    exp_name = args.experiment or f"{ctx['meta']['label']}-studies"
    name, meta, cfg = ctx["study_name"], ctx["meta"], ctx["config"]
    parent = tracking.study_parent_run(
        client, exp_name, name, "optuna-study",
        tags={"dataset": meta["dataset"], "method": cfg["method"], "storage": ctx["storage_key"],
              "study": "leak_timestep"},
        params={**cfg, "checkpoint": meta["path"], "source_run_id": meta.get("run_id"),
                "label": meta["label"], "arch": meta["hparams"].get("arch"), "sampler": ctx["sampler"]},
        key=tracking.study_key(name, ctx["storage_key"], meta.get("sha256"), cfg["objectives"]))
    keys = {"acc": "val_acc", "T": "T", "energy": "energy_ratio"}
    n_runs = tracking.log_trials(client, parent, name, trials, [keys[o] for o in cfg["objectives"]],
                                 scalar_attrs=("energy_ratio", "max_spikes_per_step", "seconds"),
                                 curve_attrs=("val_acc_curve",))
    test = tracking.replace_child_run(client, parent, "test-evaluation", tags={
        "kind": "test-evaluation", "optuna.study_name": name})
    tracking.log_params(client, test, {"n_test": ctx["default_test"]["n_test"], "test_subset": args.test_subset,
                                       "points": len(ctx["points"]), "selection": "validation split only",
                                       "perturbation": ctx["perturbation"]})
    now = int(time.time() * 1000)
    ms = []
    for i, p in enumerate(ctx["points"]):   # one step per Pareto point, in the order of the table
        for k in ("test_acc", "val_acc", "default_test_acc", "T", "leak", "phi", "energy_ratio",
                  "test_energy_ratio", "trial"):
            ms.append(Metric(f"pareto.{k}", float(p[k]), now, i))
        if "T" in cfg["objectives"]:
            ms.append(Metric("test_acc_at_T", float(p["test_acc"]), now, int(p["T"])))
    ms += [Metric("default.test_acc", float(a), now, t)
           for t, a in enumerate(ctx["default_test"]["test_acc"], start=1)]
    if ctx["default_test"]["ann_test_acc_folded"] is not None:
        ms.append(Metric("ann_test_acc_folded", float(ctx["default_test"]["ann_test_acc_folded"]), now, 0))
    tracking.log_batch(client, test, metrics=ms)
    client.log_artifact(test, str(out / "pareto.png"))
    client.log_artifact(test, str(out / "study.json"))
    client.set_terminated(test)
    client.set_terminated(parent)
    return {"uri": uri, "experiment": exp_name, "parent": parent, "test": test, "n_trial_runs": n_runs}


def report(args, inputs, storage, name, config, perturb, argv, objectives: dict, sampler: str) -> Path:
    """Evaluate the Pareto-optimal (or best) settings on test; write study.md, pareto.png,
    study.json to ``--out``; log to MLflow. ``objectives``: name -> (direction, label)."""
    study = optuna.load_study(study_name=name, storage=storage)
    W.check_config(study, config)
    labels, objectives = objectives, list(objectives)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        raise SystemExit(f"study '{name}' has no complete trial yet; nothing to report")
    meta = inputs["meta"]
    calib = loader_of(inputs["calib"], args.batch_size)
    default_phi = method_phi(inputs["ann"], args.method, calib)
    pts = []
    for t in pareto_trials(study, objectives):
        pts.append({"trial": t.number, "T": t.params["T"], "leak": t.params["leak"],
                    "phi": t.params["phi"], "val_acc": t.values[0],
                    "energy_ratio": t.user_attrs.get("energy_ratio", float("nan")),
                    "max_spikes_per_step": t.user_attrs.get("max_spikes_per_step", float("nan"))})
    print(f"[study] '{name}': {len(complete)} complete trials; evaluating {len(pts)} "
          f"{'Pareto-optimal settings' if len(objectives) > 1 else 'best setting'} on the test split",
          flush=True)
    R.set_threads(argparse.Namespace(threads=args.threads, workers=1))
    val = loader_of(inputs["val"], args.batch_size)
    r = run_snn(inputs["ann"], args.method, 1.0, default_phi, args.T_max, val, perturb, args.seed, calib)
    default_val = {"phi": default_phi, "acc": r.acc,
                   "energy_ratio": [r.energy_ratio(t) for t in range(1, args.T_max + 1)]}
    _, default_test = evaluate_on_test(args, inputs, pts, perturb, default_phi)
    out = R.out_path(args.out) if args.out else (st.PROJECT_ROOT / "results" / meta["label"] / "study")
    out.mkdir(parents=True, exist_ok=True)
    n = W.counts(study)
    fails = [t for t in trials if t.state == TrialState.FAIL]
    ctx = {
        "study_name": name, "meta": meta, "config": config, "points": pts,
        "default_test": default_test, "default_val": default_val, "default_phi": default_phi,
        "perturbation": f"{perturb.name}" if perturb else "none",
        "sampler": sampler, "objectives": labels,
        "counts": n, "storage": tracking.portable(st.public_url(storage)), "workers": W.workers_line(study),
        "storage_key": tracking.portable(st.describe(storage)),   # the MLflow parent's identity
        "n_retried": sum(1 for t in trials if "failed_trial" in t.system_attrs),
        "n_surplus": sum(1 for t in fails if t.user_attrs.get("surplus")),
        "median_seconds": sorted(t.user_attrs.get("seconds", 0.0) for t in complete)[len(complete) // 2],
        "command": f"{PROG} {shlex.join(argv)}",
    }
    title = (f"{meta['label']} {meta['hparams'].get('arch')} {args.method}, "
             f"{ctx['perturbation']}, {len(complete)} trials")
    plot(out / "pareto.png", complete, pts, objectives, default_val, default_test, title,
         tuple(config["leak_range"]))
    (out / "study.json").write_text(json.dumps({
        "study_name": name, "config": config, "meta": meta, "points": pts, "default_test": default_test,
        "default_val": default_val, "counts": n, "command": ctx["command"],
        "trials": [{"number": t.number, "state": t.state.name, "params": t.params, "values": t.values,
                    "user_attrs": t.user_attrs} for t in trials]}, indent=1, default=str))
    (out / "study.md").write_text(markdown(ctx))
    if not args.no_mlflow:
        ctx["mlflow"] = log_mlflow(args, ctx, trials, out)
        (out / "study.md").write_text(markdown(ctx))
        from mlflow.tracking import MlflowClient
        client = MlflowClient(ctx["mlflow"]["uri"])
        for rid in (ctx["mlflow"]["test"], ctx["mlflow"]["parent"]):
            client.log_artifact(rid, str(out / "study.md"))
        client.log_artifact(ctx["mlflow"]["parent"], str(out / "pareto.png"))
    print(markdown(ctx))
    print(f"[study] wrote {out / 'study.md'} and {out / 'pareto.png'}", flush=True)
    return out
