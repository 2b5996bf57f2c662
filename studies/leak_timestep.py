"""Optuna study over the spiking neuron's leak, the number of time steps T and its initial
potential phi, for one trained ANN converted with one method, optionally under input noise.

    python -m studies.leak_timestep --checkpoint runs/smoke/seed0/steprelu/last.ckpt \\
        --objectives acc,T --perturbation salt_pepper:0.9:dynamic --n-trials 40 --workers 2

Search space (DESIGN sections 2 and 4):

- ``leak`` in [0.5, 1] (continuous): the factor on the potential carried between steps;
- ``T`` in {1, ..., T_max}: the SNN is simulated for T steps and predicts at step T;
- ``phi`` in {0, 0.5} plus the phi the method itself uses: the neuron's initial potential in
  units of its threshold. For ``steprelu`` the phi trained into the ANN (0 in the authors'
  code) is the exact one: with it the SNN reproduces the ANN at T = 1. Another phi changes the
  neuron only (the ANN and its thresholds stay as trained), a legitimate knob of the spiking
  side that trades the T = 1 exactness for a different rounding of the carried residual, the
  way QCFS's neuron starts at half a threshold. Every method's neuron takes it.

Everything is selected on the VALIDATION split only: a fixed subset (``--val-subset``, the
head of the seeded validation part held out of the training set with the training run's own
split seed and fraction) and, with a perturbation, one fixed noise seed, so every trial sees
the same images and the same noise draws. Objectives: ``acc`` (maximise validation accuracy at
step T; TPE), ``acc,T`` or ``acc,energy`` (also minimise T or the SNN/ANN energy ratio;
NSGA-II). The Pareto-optimal settings (or the best one) are then evaluated once on the TEST
split, next to the default setting (leak 1, the method's phi) at the same T.

Workers: ``--workers N`` starts N local processes on one storage; on a cluster start one
``--role worker`` per task (studies/slurm/leak_timestep.sbatch) and ``--role report`` once
after them. ``--n-trials`` is the study's total number of COMPLETE trials; rerunning the same
command continues the same study (its name and settings must match).

Outputs in ``--out`` (default results/<preset or dataset>/study/): study.md, pareto.png,
study.json; MLflow: a parent run for the study with one nested run per trial and a nested
``test-evaluation`` run.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState
from torch.utils.data import DataLoader, TensorDataset

from annsnn.activations import check_phi
from annsnn.convert import METHODS, convert
from annsnn.neurons import spiking_layers
from annsnn.noise import KINDS, make_perturbation
from annsnn.simulate import simulate

from . import storage as st
from . import workers as W

PROG = "python -m studies.leak_timestep"
OBJECTIVES = {  # name -> (direction, label)
    "acc": ("maximize", "validation accuracy at step T"),
    "T": ("minimize", "time steps T"),
    "energy": ("minimize", "SNN/ANN energy ratio at step T"),
}
VALID_OBJECTIVES = ("acc", "acc,T", "acc,energy")
LEAK_RANGE = (0.5, 1.0)
PHI_CHOICES = (0.0, 0.5)
CHECKPOINT_ARTIFACT = "checkpoint/last.ckpt"   # where bench.runner logs an ANN's checkpoint


class CheckpointError(ValueError):
    """The checkpoint cannot serve this dataset/method, or is not an ANN checkpoint."""


# ----------------------------------------------------------------------------- parsing

def parse_objectives(text: str) -> list[str]:
    objs = [o.strip() for o in str(text).split(",") if o.strip()]
    if ",".join(objs) not in VALID_OBJECTIVES:
        raise ValueError(f"--objectives {text!r}: valid are {', '.join(VALID_OBJECTIVES)}")
    return objs


def parse_perturbation(text: str | None):
    """'none' | 'gaussian:SIGMA' | 'salt_pepper:S', optionally ':dynamic' (or ':static')."""
    if text is None or str(text).strip().lower() in ("", "none"):
        return None
    parts = str(text).strip().split(":")
    usage = ("expected none, gaussian:SIGMA or salt_pepper:S, optionally followed by :dynamic "
             "(noise redrawn every step) or :static (drawn once per image, the default)")
    if len(parts) not in (2, 3) or parts[0].lower().replace("-", "_") not in KINDS:
        raise ValueError(f"--perturbation {text!r}: {usage}")
    dynamic = False
    if len(parts) == 3:
        if parts[2].lower() not in ("dynamic", "static"):
            raise ValueError(f"--perturbation {text!r}: {usage}")
        dynamic = parts[2].lower() == "dynamic"
    try:
        level = float(parts[1])
    except ValueError:
        raise ValueError(f"--perturbation {text!r}: level {parts[1]!r} is not a number; {usage}") from None
    return make_perturbation(parts[0], level, dynamic)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------- checkpoint

def _dataset_info():
    # lightning_modules.data imports lightning (slow); the facts are all we need here
    from lightning_modules.data import DATASETS
    return DATASETS


def check_checkpoint(hp: dict, dataset: str, method: str, where: str) -> None:
    """Clear errors when the checkpoint cannot serve ``dataset`` with ``method``."""
    datasets = _dataset_info()
    if dataset not in datasets:
        raise CheckpointError(f"unknown dataset {dataset!r}; valid: {', '.join(sorted(datasets))}")
    need = ("arch", "activation", "num_classes", "in_channels", "image_size")
    missing = [k for k in need if k not in hp]
    if missing:
        raise CheckpointError(f"{where} is not an ANNClassifier checkpoint (hyperparameters lack "
                              f"{', '.join(missing)}); pass a checkpoint written by python -m bench")
    info = datasets[dataset]
    shape = lambda i: {"in_channels": i.in_channels, "num_classes": i.num_classes, "image_size": i.image_size}
    got = {k: hp[k] for k in ("in_channels", "num_classes", "image_size")}
    has_stats = "mean" in hp and "std" in hp

    def same_stats(i) -> bool:  # models carry their dataset's normalisation (DESIGN section 4)
        close = lambda a, b: len(a) == len(b) and all(abs(float(x) - float(y)) < 1e-3 for x, y in zip(a, b))
        return not has_stats or (close(hp["mean"], i.mean) and close(hp["std"], i.std))

    if got != shape(info) or not same_stats(info):
        fits = [n for n, i in datasets.items() if shape(i) == got and same_stats(i)]
        if got != shape(info):
            detail = ", ".join(f"{k}={v}" for k, v in got.items())
            want = ", ".join(f"{k}={v}" for k, v in shape(info).items())
        else:
            detail = f"input normalisation mean={tuple(hp['mean'])} std={tuple(hp['std'])}"
            want = f"mean={info.mean} std={info.std}"
        raise CheckpointError(
            f"checkpoint {where} does not match dataset '{dataset}': the network was built for "
            f"{detail}, but {dataset} has {want}"
            + (f"; it looks like a {' or '.join(fits)} checkpoint: pass --dataset {fits[0]}" if fits
               else "; pass the --dataset it was trained on"))
    act = hp["activation"]["name"] if isinstance(hp["activation"], dict) else str(hp["activation"])
    if method not in METHODS:
        raise CheckpointError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    if METHODS[method].activation != act:
        fits = [m for m, spec in METHODS.items() if spec.activation == act]
        raise CheckpointError(f"checkpoint {where} is a {hp['arch']} with activation '{act}', but "
                              f"method '{method}' converts {METHODS[method].activation} networks; "
                              f"use --method {' or '.join(fits) or '(none converts it)'}")


def load_ann(path: Path, dataset: str, method: str) -> tuple[torch.nn.Module, dict]:
    """The trained ANN (eval mode, CPU) and its hyperparameters, after the checks above."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=False)  # our own Lightning files
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None
    if not isinstance(raw, dict) or "state_dict" not in raw:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no state_dict)")
    hp = dict(raw.get("hyper_parameters") or {})
    check_checkpoint(hp, dataset, method, str(path))
    from lightning_modules.module import ANNClassifier
    try:
        module = ANNClassifier.load_from_checkpoint(path, map_location="cpu")
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()][:4]
        raise CheckpointError(
            f"checkpoint {path} does not match the {hp['arch']} network that annsnn.models.build "
            f"makes now ({' '.join(lines)}); it was probably trained with another version of the "
            "architecture code: retrain it (python -m bench) or check out that version") from None
    return module.model.eval(), hp


def resolve_source(args) -> dict:
    """Checkpoint path, dataset, split seed/fraction and a label, from --checkpoint or --run-id."""
    src = {"run_id": None, "experiment": None}
    if args.run_id:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        import tracking
        uri = tracking.tracking_uri(args.tracking_uri)
        client = MlflowClient(uri)
        try:
            run = client.get_run(args.run_id)
        except MlflowException as e:
            raise CheckpointError(f"MLflow run {args.run_id} not found at {uri}: "
                                  f"{str(e).splitlines()[0]}") from None
        params, tags = run.data.params, run.data.tags
        ds = params.get("dataset") or tags.get("dataset")
        if args.dataset and ds and args.dataset != ds:
            raise CheckpointError(f"--dataset {args.dataset} but MLflow run {args.run_id} trained "
                                  f"on {ds}")
        dst = Path(tempfile.mkdtemp(prefix="leak_timestep-ckpt-"))
        try:
            import mlflow.artifacts
            local = mlflow.artifacts.download_artifacts(run_id=args.run_id, artifact_path=CHECKPOINT_ARTIFACT,
                                                        dst_path=str(dst), tracking_uri=uri)
        except Exception as e:
            raise CheckpointError(f"MLflow run {args.run_id} has no artifact {CHECKPOINT_ARTIFACT} "
                                  f"({str(e).splitlines()[0]})") from None
        exp = client.get_experiment(run.info.experiment_id)
        src.update(path=Path(local), dataset=args.dataset or ds or "fashion-mnist",
                   split_seed=int(params.get("seed", 0)) if args.split_seed is None else args.split_seed,
                   val_fraction=float(params.get("val_fraction", 0.1)) if args.val_fraction is None
                   else args.val_fraction,
                   label=params.get("preset") or (exp.name if exp else None) or ds,
                   run_id=args.run_id, experiment=exp.name if exp else None, tmp=dst)
        return src
    path = Path(args.checkpoint).expanduser().resolve()
    parts = path.parts
    m = re.fullmatch(r"seed(\d+)", parts[-3]) if len(parts) >= 3 else None
    preset = parts[-4] if (m and len(parts) >= 5 and parts[-5] == "runs") else None
    split_seed = args.split_seed if args.split_seed is not None else (int(m.group(1)) if m else 0)
    note = None
    if args.split_seed is None and not m:
        note = (f"[study] split seed unknown for {path} (not runs/<preset>/seed<k>/...): using 0; "
                "pass --split-seed with the training seed, or validation images may have been "
                "trained on")
    dataset = args.dataset or "fashion-mnist"
    src.update(path=path, dataset=dataset, split_seed=split_seed,
               val_fraction=0.1 if args.val_fraction is None else args.val_fraction,
               label=preset or dataset, tmp=None, note=note)
    return src


# ----------------------------------------------------------------------------- inputs

def _take(loader, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys, have = [], [], 0
    for x, y in loader:
        xs.append(x)
        ys.append(y)
        have += len(y)
        if n is not None and have >= n:
            break
    x, y = torch.cat(xs), torch.cat(ys)
    return (x[:n], y[:n]) if n is not None else (x, y)


def datamodule(meta: dict, args, test_subset: int | None = None):
    from lightning_modules.data import build_datamodule
    dm = build_datamodule(meta["dataset"], data_dir=args.data_dir, batch_size=args.batch_size,
                          val_fraction=meta["val_fraction"], seed=meta["split_seed"],
                          calib_size=args.calib_size, eval_batch_size=args.batch_size,
                          test_subset=test_subset)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def prepare_inputs(args) -> dict:
    """Everything a worker needs: the ANN, the validation subset, calibration images, metadata."""
    src = resolve_source(args)
    try:
        ann, hp = load_ann(src["path"], src["dataset"], args.method)
        digest = sha256(src["path"])
    finally:
        if src.get("tmp"):
            shutil.rmtree(src["tmp"], ignore_errors=True)
    if src.get("note"):
        print(src["note"], file=sys.stderr)
    meta = {k: (str(v) if isinstance(v, Path) else v) for k, v in src.items() if k not in ("tmp", "note")}
    meta.update(sha256=digest, hparams=json.loads(json.dumps(hp, default=str)))
    if src.get("run_id"):   # the download was temporary: name the artifact instead
        meta["path"] = f"runs:/{src['run_id']}/{CHECKPOINT_ARTIFACT}"
    dm = datamodule(meta, args)
    val_x, val_y = _take(dm.val_dataloader(), args.val_subset)
    calib = _take(dm.calib_dataloader(), None) if METHODS[args.method].needs_calibration else None
    meta.update(n_val=len(val_y), n_val_split=len(dm.val_set), data_source=str(getattr(dm, "source", "")))
    return {"ann": ann, "val": (val_x, val_y), "calib": calib, "meta": meta}


def loader_of(xy, batch_size: int) -> DataLoader:
    return DataLoader(TensorDataset(*xy), batch_size=batch_size, shuffle=False)


def method_phi(ann, method: str, calib_loader) -> float:
    """The phi the method's own neuron starts with (the exact one for steprelu)."""
    snn = convert(ann, method, calib_loader)
    return float(spiking_layers(snn)[0][1].phi)


def phi_choices(default_phi: float) -> list[float]:
    return sorted(set(PHI_CHOICES) | {float(default_phi)})


def run_snn(ann, method: str, leak: float, phi: float, T: int, loader, perturb, seed: int,
            calib_loader=None, with_ann: bool = False):
    snn = convert(ann, method, calib_loader, leak=leak)
    for _, m in spiking_layers(snn):
        m.phi = check_phi(phi)
    return simulate(snn, loader, T, ann=ann if with_ann else None, perturb=perturb, seed=seed,
                    progress=False)


def study_config(args, meta: dict, objectives: list[str], perturb, phis: list[float]) -> dict:
    return {"kind": "leak_timestep", "checkpoint_sha256": meta["sha256"], "dataset": meta["dataset"],
            "method": args.method, "objectives": objectives,
            "perturbation": perturb.name if perturb else "none", "noise_seed": args.seed,
            "T_max": args.T_max, "leak_range": list(LEAK_RANGE), "phi_choices": phis,
            "val_subset": meta["n_val"], "split_seed": meta["split_seed"],
            "val_fraction": meta["val_fraction"]}


def default_study_name(meta: dict, args, objectives, perturb) -> str:
    pert = perturb.name.replace("/", "_") if perturb else "clean"
    return (f"leak_timestep-{meta['label']}-{args.method}-{'_'.join(objectives)}-{pert}-"
            f"{meta['sha256'][:8]}")


def make_sampler(args, objectives, worker_index: int):
    if len(objectives) == 1:
        return W.seeded(optuna.samplers.TPESampler, args.seed, worker_index)
    pop = args.population_size or max(4, min(50, args.n_trials // 4))
    return W.seeded(optuna.samplers.NSGAIISampler, args.seed, worker_index, population_size=pop)


def sampler_label(args, objectives) -> str:
    s = make_sampler(args, objectives, 0)
    pop = getattr(s, "_population_size", None)
    return type(s).__name__ + (f" (population {pop})" if pop else "") + f", seed {args.seed} + 1000 x worker"


def open_study(args, storage, name, objectives, worker_index=0) -> optuna.Study:
    return optuna.create_study(study_name=name, storage=storage, load_if_exists=True,
                               directions=[OBJECTIVES[o][0] for o in objectives],
                               sampler=make_sampler(args, objectives, worker_index))


# ----------------------------------------------------------------------------- worker

def run_trials(args, inputs: dict, storage, name: str, config: dict, objectives, perturb) -> dict:
    threads = W.set_threads(args)
    study = open_study(args, storage, name, objectives, args.worker_index)
    W.check_config(study, config)
    ann, meta = inputs["ann"], inputs["meta"]
    val = loader_of(inputs["val"], args.batch_size)
    calib = loader_of(inputs["calib"], args.batch_size) if inputs["calib"] is not None else None
    phis = config["phi_choices"]
    print(f"[study] worker {args.worker_index} (pid {os.getpid()}, {threads} threads) on '{name}': "
          f"{meta['n_val']} validation images, {len(objectives)} objective(s)", flush=True)

    def objective(trial: optuna.Trial):
        leak = trial.suggest_float("leak", *LEAK_RANGE)
        T = trial.suggest_int("T", 1, args.T_max)
        phi = trial.suggest_categorical("phi", phis)
        t0 = time.perf_counter()
        res = run_snn(ann, args.method, leak, phi, T, val, perturb, args.seed, calib)
        trial.set_user_attr("val_acc_curve", [round(a, 6) for a in res.acc])
        trial.set_user_attr("energy_ratio", res.energy_ratio(T))
        trial.set_user_attr("max_spikes_per_step", res.max_spikes_per_step)
        trial.set_user_attr("seconds", round(time.perf_counter() - t0, 3))
        trial.set_user_attr("worker", f"{os.uname().nodename}:{os.getpid()}")
        values = {"acc": res.acc[-1], "T": T, "energy": res.energy_ratio(T)}
        out = [values[o] for o in objectives]
        return out[0] if len(out) == 1 else out

    return W.run_worker(study, objective, args.n_trials, poll=args.poll)


# ----------------------------------------------------------------------------- report

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
    meta = inputs["meta"]
    dm = datamodule(meta, args, test_subset=args.test_subset)
    test = dm.test_dataloader()
    calib = loader_of(inputs["calib"], args.batch_size) if inputs["calib"] is not None else None
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


def plot(path: Path, trials, points, objectives, default_val, default_test, title: str) -> None:
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
                        cmap="viridis", vmin=LEAK_RANGE[0], vmax=LEAK_RANGE[1], marker=mk, s=28,
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
        f"- **Method**: `{cfg['method']}` — {METHODS[cfg['method']].description}",
        f"- **Search** (validation only): leak in [{LEAK_RANGE[0]}, {LEAK_RANGE[1]}], T in "
        f"{{1..{cfg['T_max']}}}, neuron phi in {{{', '.join(f'{p:g}' for p in cfg['phi_choices'])}}}; "
        f"the method's own phi is {ctx['default_phi']:g} (exact at T = 1); another phi changes the "
        "neuron only (the ANN and thresholds stay as trained).",
        f"- **Validation**: the first {m['n_val']} images of the held-out validation part "
        f"({m['n_val_split']} images, val_fraction {m['val_fraction']}, split seed "
        f"{m['split_seed']}, the training run's); the same images for every trial.",
        f"- **Perturbation**: {pert}" + (f", noise seed {cfg['noise_seed']} (same draws in every "
                                         "trial and in the test evaluation)" if pert != "none" else ""),
        "- **Objectives**: " + ", ".join(f"{OBJECTIVES[o][0]} {OBJECTIVES[o][1]}" for o in objectives)
        + f"; sampler {ctx['sampler']}",
        f"- **Trials**: {ctx['counts']['finished']} complete, {ctx['counts']['fail']} failed "
        f"({ctx['n_retried']} retried after a worker died, {ctx['n_surplus']} surplus starts "
        f"stopped unevaluated), median {ctx['median_seconds']:.1f} s per trial; storage "
        f"`{ctx['storage']}`",
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
        lines += ["", f"MLflow ({ml['uri']}): experiment `{ml['experiment']}`, study run "
                      f"`{ml['parent']}` with {ml['n_trial_runs']} nested trial runs, test run "
                      f"`{ml['test']}`."]
    lines += ["", f"Command: `{ctx['command']}`", ""]
    return "\n".join(lines)


def log_mlflow(args, ctx: dict, trials, out: Path) -> dict:
    """Parent run for the study, a nested run per trial, a nested test-evaluation run."""
    from mlflow.entities import Metric

    import tracking as LT

    from . import tracking
    client, uri = tracking.client_for(args.tracking_uri)
    exp_name = args.experiment or f"{ctx['meta']['label']}-studies"
    exp_id = tracking.experiment_id(client, exp_name)
    name, meta, cfg = ctx["study_name"], ctx["meta"], ctx["config"]
    parent = tracking.parent_run(
        client, exp_id, name, "optuna-study",
        tags={"dataset": meta["dataset"], "method": cfg["method"], "storage": ctx["storage"],
              "study": "leak_timestep"},
        params={**cfg, "checkpoint": meta["path"], "source_run_id": meta.get("run_id"),
                "label": meta["label"], "arch": meta["hparams"].get("arch"), "sampler": ctx["sampler"]})
    keys = {"acc": "val_acc", "T": "T", "energy": "energy_ratio"}
    n_runs = tracking.log_trials(client, exp_id, parent, name, trials,
                                 [keys[o] for o in cfg["objectives"]],
                                 scalar_attrs=("energy_ratio", "max_spikes_per_step", "seconds"),
                                 curve_attrs=("val_acc_curve",))
    test = LT.start_child_run(client, parent, "test-evaluation", tags={
        "kind": "test-evaluation", "optuna.study_name": name})
    LT.log_params(client, test, {"n_test": ctx["default_test"]["n_test"], "test_subset": args.test_subset,
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
    for i in range(0, len(ms), 900):
        client.log_batch(test, metrics=ms[i:i + 900])
    client.log_artifact(test, str(out / "pareto.png"))
    client.log_artifact(test, str(out / "study.json"))
    client.set_terminated(test)
    client.set_terminated(parent)
    return {"uri": uri, "experiment": exp_name, "parent": parent, "test": test, "n_trial_runs": n_runs}


def report(args, inputs, storage, name, config, objectives, perturb, argv) -> Path:
    study = optuna.load_study(study_name=name, storage=storage)
    W.check_config(study, config)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        raise SystemExit(f"study '{name}' has no complete trial yet; nothing to report")
    meta = inputs["meta"]
    calib = loader_of(inputs["calib"], args.batch_size) if inputs["calib"] is not None else None
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
    W.set_threads(argparse.Namespace(threads=args.threads, workers=1))
    val = loader_of(inputs["val"], args.batch_size)
    r = run_snn(inputs["ann"], args.method, 1.0, default_phi, args.T_max, val, perturb, args.seed, calib)
    default_val = {"phi": default_phi, "acc": r.acc,
                   "energy_ratio": [r.energy_ratio(t) for t in range(1, args.T_max + 1)]}
    _, default_test = evaluate_on_test(args, inputs, pts, perturb, default_phi)
    out = W.out_path(args.out) if args.out else (st.PROJECT_ROOT / "results" / meta["label"] / "study")
    out.mkdir(parents=True, exist_ok=True)
    n = W.counts(study)
    fails = [t for t in trials if t.state == TrialState.FAIL]
    ctx = {
        "study_name": name, "meta": meta, "config": config, "points": pts,
        "default_test": default_test, "default_val": default_val, "default_phi": default_phi,
        "perturbation": f"{perturb.name}" if perturb else "none",
        "sampler": sampler_label(args, objectives),
        "counts": n, "storage": st.describe(storage),
        "n_retried": sum(1 for t in trials if "failed_trial" in t.system_attrs),
        "n_surplus": sum(1 for t in fails if t.user_attrs.get("surplus")),
        "median_seconds": sorted(t.user_attrs.get("seconds", 0.0) for t in complete)[len(complete) // 2],
        "command": f"{PROG} {shlex.join(argv)}",
    }
    title = (f"{meta['label']} {meta['hparams'].get('arch')} {args.method}, "
             f"{ctx['perturbation']}, {len(complete)} trials")
    plot(out / "pareto.png", complete, pts, objectives, default_val, default_test, title)
    (out / "study.json").write_text(json.dumps({
        "study_name": name, "config": config, "meta": meta, "points": pts, "default_test": default_test,
        "default_val": default_val, "counts": n, "command": ctx["command"],
        "trials": [{"number": t.number, "state": t.state.name, "params": t.params, "values": t.values,
                    "user_attrs": t.user_attrs} for t in trials]}, indent=1, default=str))
    (out / "study.md").write_text(markdown(ctx))
    if not args.no_mlflow:
        ctx["mlflow"] = log_mlflow(args, ctx, trials, out)
        (out / "study.md").write_text(markdown(ctx))
        from . import tracking
        client, _ = tracking.client_for(ctx["mlflow"]["uri"])
        for rid in (ctx["mlflow"]["test"], ctx["mlflow"]["parent"]):
            client.log_artifact(rid, str(out / "study.md"))
        client.log_artifact(ctx["mlflow"]["parent"], str(out / "pareto.png"))
    print(markdown(ctx))
    print(f"[study] wrote {out / 'study.md'} and {out / 'pareto.png'}", flush=True)
    return out


# ----------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="ANN checkpoint (runs/<preset>/seed<k>/<activation>/last.ckpt)")
    src.add_argument("--run-id", help=f"MLflow run of a trained ANN (artifact {CHECKPOINT_ARTIFACT})")
    p.add_argument("--dataset", default=None,
                   help="dataset the ANN was trained on (default: the MLflow run's, else fashion-mnist)")
    p.add_argument("--data-dir", default=None, help="dataset folder (default: the usual search)")
    p.add_argument("--method", default="steprelu", help=f"conversion method: {', '.join(METHODS)}")
    p.add_argument("--objectives", default="acc,T", help=f"{' | '.join(VALID_OBJECTIVES)} (default %(default)s)")
    p.add_argument("--perturbation", default="none",
                   help="none | gaussian:SIGMA | salt_pepper:S, optionally :dynamic (default %(default)s)")
    p.add_argument("--T-max", dest="T_max", type=int, default=32, help="largest T searched (default 32)")
    p.add_argument("--val-subset", type=int, default=2000,
                   help="validation images per trial (fixed subset; default %(default)s)")
    p.add_argument("--test-subset", type=int, default=None,
                   help="test images for the final evaluation (default: the whole test split)")
    p.add_argument("--split-seed", type=int, default=None,
                   help="seed of the train/validation split (default: the training run's)")
    p.add_argument("--val-fraction", type=float, default=None, help="default: the training run's (0.1)")
    p.add_argument("--calib-size", type=int, default=1000, help="calibration images (maxnorm/robustnorm)")
    p.add_argument("--batch-size", type=int, default=200, help="evaluation batch size (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="noise seed and sampler seed (default 0)")
    p.add_argument("--population-size", type=int, default=0,
                   help="NSGA-II population (0: n_trials/4 within [4, 50])")
    W.add_output_args(p, "results/<preset or dataset>/study", "<preset or dataset>-studies")
    p.add_argument("--bundle", default=None, help=argparse.SUPPRESS)  # inputs prepared by the launcher
    W.add_common_args(p, default_trials=40)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        objectives = parse_objectives(args.objectives)
        perturb = parse_perturbation(args.perturbation)
        if args.T_max < 1 or args.val_subset < 1 or args.n_trials < 1 or args.workers < 1:
            raise ValueError("--T-max, --val-subset, --n-trials and --workers must be >= 1")
        if args.method not in METHODS:
            raise ValueError(f"unknown --method {args.method!r}; valid: {', '.join(METHODS)}")
        storage = W.open_storage(args)
        if args.bundle:
            inputs = torch.load(args.bundle, map_location="cpu", weights_only=False)
        else:
            inputs = prepare_inputs(args)
    except (ValueError, st.StorageError) as e:   # CheckpointError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        if type(e).__name__ != "DataUnavailableError":
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    meta = inputs["meta"]
    calib = loader_of(inputs["calib"], args.batch_size) if inputs["calib"] is not None else None
    phis = phi_choices(method_phi(inputs["ann"], args.method, calib))
    config = study_config(args, meta, objectives, perturb, phis)
    name = args.study_name or default_study_name(meta, args, objectives, perturb)
    if args.role != "report":
        if args.role == "all" and args.workers > 1:
            tmp = Path(tempfile.mkdtemp(prefix="leak_timestep-"))
            try:
                bundle = tmp / "inputs.pt"
                torch.save(inputs, bundle)
                print(f"[study] '{name}' on {st.describe(storage)}: {args.n_trials} trials in total, "
                      f"{args.workers} workers", flush=True)
                codes = W.launch_workers("studies.leak_timestep", argv, args.workers,
                                         ["--bundle", str(bundle), "--study-name", name])
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            if any(codes):
                print(f"[study] worker exit codes {codes}", file=sys.stderr)
        else:
            run_trials(args, inputs, storage, name, config, objectives, perturb)
    if args.role == "worker":
        return 0
    study = optuna.load_study(study_name=name, storage=storage)
    n = W.counts(study)
    if n["finished"] < args.n_trials and args.role == "all":
        print(f"[study] only {n['finished']}/{args.n_trials} trials complete (a worker failed?); "
              "rerun the same command to finish the study; reporting what there is", file=sys.stderr)
    report(args, inputs, storage, name, config, objectives, perturb, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
