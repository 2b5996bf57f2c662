"""Optuna study over the spiking neuron's leak, the number of time steps T and its initial
potential phi, for one trained ANN converted with one method, optionally under input noise.

    python -m studies.leak_timestep --preset smoke --train-seed 0 --method steprelu \\
        --objectives acc,T --perturbation salt_pepper:0.9:dynamic --n-trials 40 --workers 2

Search space (docs/method.md#spiking-neuron and docs/method.md#leak):

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
split, next to the default setting (leak 1, the method's phi) at the same T (``leak_report``).

The ANN: ``--preset P --train-seed K`` (where ``python -m bench P`` put it), ``--run-id`` (its
MLflow run) or ``--checkpoint PATH``. Roles and workers: see ``studies.roles``
(studies/slurm/leak_timestep.sbatch runs ``--role init``, then the array, then the report).
``--n-trials`` is the study's total number of COMPLETE trials; rerunning the same command
continues the same study (its name and settings must match).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass

import optuna
import torch
from torch.utils.data import DataLoader

from annsnn.noise import KINDS, make_perturbation
from annsnn.recipes import RECIPES, get_recipe

from . import checkpoint as ck
from . import leak_report
from . import roles as R
from . import storage as st
from . import workers as W
from .leak_inputs import loader_of, method_phi, prepare_inputs, run_snn

PROG = "python -m studies.leak_timestep"
OBJECTIVES = {  # name -> (direction, label)
    "acc": ("maximize", "validation accuracy at step T"),
    "T": ("minimize", "time steps T"),
    "energy": ("minimize", "SNN/ANN energy ratio at step T"),
}
VALID_OBJECTIVES = ("acc", "acc,T", "acc,energy")
LEAK_RANGE = (0.5, 1.0)
PHI_CHOICES = (0.0, 0.5)


def objective(trial: optuna.Trial, s: Search):
    """One trial: the SNN with the trial's leak, T and phi, on the fixed validation subset."""
    leak = trial.suggest_float("leak", *LEAK_RANGE)
    T = trial.suggest_int("T", 1, s.T_max)
    phi = trial.suggest_categorical("phi", s.phis)
    t0 = time.perf_counter()
    res = run_snn(s.ann, s.method, leak, phi, T, s.val, s.perturb, s.seed, s.calib)
    trial.set_user_attr("val_acc_curve", [round(a, 6) for a in res.acc])
    trial.set_user_attr("energy_ratio", res.energy_ratio(T))
    trial.set_user_attr("max_spikes_per_step", res.max_spikes_per_step)
    trial.set_user_attr("seconds", round(time.perf_counter() - t0, 3))
    trial.set_user_attr("worker", f"{os.uname().nodename}:{os.getpid()}")
    values = {"acc": res.acc[-1], "T": T, "energy": res.energy_ratio(T)}
    out = [values[o] for o in s.objectives]
    return out[0] if len(out) == 1 else out


@dataclass
class Search:
    """What every trial shares: the ANN, its method, the validation images, the noise."""
    ann: torch.nn.Module
    method: str
    val: DataLoader
    calib: DataLoader | None
    perturb: object
    seed: int
    T_max: int
    phis: list[float]
    objectives: list[str]


# ----------------------------------------------------------------------------- options

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


# ----------------------------------------------------------------------------- the study

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


def population(args) -> int:
    return args.population_size or max(4, min(50, args.n_trials // 4))


def make_sampler(args, objectives, seed: int | None):
    if len(objectives) == 1:
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=population(args))


def sampler_label(args, objectives) -> str:
    kind = "TPESampler" if len(objectives) == 1 else f"NSGAIISampler (population {population(args)})"
    return f"{kind}, seed ({args.seed} mod {W.SEED_STRIDE}) + {W.SEED_STRIDE} x worker number"


def open_study(args, storage, name, config, objectives, seed: int | None = None) -> optuna.Study:
    study = st.create_or_load_study(storage, name, directions=[OBJECTIVES[o][0] for o in objectives],
                                    sampler=make_sampler(args, objectives, seed))
    W.check_config(study, config)
    return study


def run_trials(args, storage, name, config, objectives, s: Search, meta: dict) -> dict:
    threads = R.set_threads(args)
    worker = W.register(storage, name, args.seed)
    study = open_study(args, storage, name, config, objectives, worker.seed)
    print(f"{worker.tag} {threads} threads: {meta['n_val']} validation images, "
          f"{len(s.objectives)} objective(s)", flush=True)
    return W.run_worker(study, lambda trial: objective(trial, s), args.n_trials, poll=args.poll,
                        worker=worker)


# ----------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", help="the ANN python -m bench PRESET trained (with --train-seed)")
    src.add_argument("--run-id", help=f"MLflow run of a trained ANN (artifact {ck.CHECKPOINT_ARTIFACT})")
    src.add_argument("--checkpoint", help="ANN checkpoint file (give --split-seed and --dataset)")
    p.add_argument("--train-seed", type=int, default=0, help="--preset: the run's seed (default 0)")
    p.add_argument("--runs-dir", default=None,
                   help="--preset: the runner's folder (default $ANNSNN_RUNS_DIR, else runs/)")
    p.add_argument("--dataset", default=None,
                   help="dataset the ANN was trained on (default: the preset's or MLflow run's, "
                        "else fashion-mnist)")
    p.add_argument("--data-dir", default=None, help="dataset folder (default: the usual search)")
    p.add_argument("--method", default="steprelu", help=f"conversion method: {', '.join(RECIPES)}")
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
    p.add_argument("--seed", type=int, default=0,
                   help="noise seed and sampler seed: worker k (numbered by the storage) samples "
                        "with (SEED mod 1000) + 1000 k (default 0)")
    p.add_argument("--population-size", type=int, default=0,
                   help="NSGA-II population (0: n_trials/4 within [4, 50])")
    R.add_output_args(p, "results/<preset or dataset>/study", "<preset or dataset>-studies")
    R.add_common_args(p, default_trials=40)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        objectives = parse_objectives(args.objectives)
        perturb = parse_perturbation(args.perturbation)
        if args.T_max < 1 or args.val_subset < 1 or args.n_trials < 1 or args.workers < 1:
            raise ValueError("--T-max, --val-subset, --n-trials and --workers must be >= 1")
        get_recipe(args.method)
        storage = R.open_storage(args)
        inputs = R.load_bundle(args.bundle) if args.bundle else prepare_inputs(args)
    except (ValueError, st.StorageError) as e:   # CheckpointError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        if type(e).__name__ != "DataUnavailableError":
            raise
        print(f"error: {e.one_line()}", file=sys.stderr)
        return 2
    meta = inputs["meta"]
    calib = loader_of(inputs["calib"], args.batch_size)
    phis = sorted(set(PHI_CHOICES) | {method_phi(inputs["ann"], args.method, calib)})
    config = study_config(args, meta, objectives, perturb, phis)
    name = args.study_name or default_study_name(meta, args, objectives, perturb)
    search = Search(inputs["ann"], args.method, loader_of(inputs["val"], args.batch_size), calib,
                    perturb, args.seed, args.T_max, phis, objectives)

    def report():
        study = optuna.load_study(study_name=name, storage=storage)
        n = W.counts(study)
        if n["finished"] < args.n_trials and args.role == "all":
            print(f"[study] only {n['finished']}/{args.n_trials} trials complete (a worker failed?); "
                  "rerun the same command to finish the study; reporting what there is", file=sys.stderr)
        leak_report.report(args, inputs, storage, name, config, perturb, argv,
                           {o: OBJECTIVES[o] for o in objectives}, sampler_label(args, objectives))

    return R.dispatch(args, argv, "studies.leak_timestep", name,
                      open_study=lambda: open_study(args, storage, name, config, objectives),
                      run_trials=lambda: run_trials(args, storage, name, config, objectives, search, meta),
                      report=report, bundle=inputs)


if __name__ == "__main__":
    sys.exit(main())
