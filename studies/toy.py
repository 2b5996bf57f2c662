"""A synthetic study that needs no data or model: checks a storage and a worker set-up.

    python -m studies.toy --storage shared.journal --n-trials 20 --workers 4
    python -m studies.toy --storage postgresql://user:pw@db-host/optuna --role init    # once
    python -m studies.toy --storage postgresql://user:pw@db-host/optuna --role worker  # per node

Minimises (x - 1)^2 + y over x in [-5, 5], y in {0..10}; each trial sleeps ``--sleep``
seconds. Run it on a cluster before a real study to see that workers find the storage, share
the trials, and that a killed worker's trial is retried. The tests use it too.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import optuna

from . import roles as R
from . import storage as st
from . import workers as W


def objective_factory(sleep: float):
    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("pid", os.getpid())
        x = trial.suggest_float("x", -5.0, 5.0)
        y = trial.suggest_int("y", 0, 10)
        end = time.monotonic() + sleep
        while time.monotonic() < end:
            time.sleep(min(0.05, max(0.0, end - time.monotonic())))
        return (x - 1.0) ** 2 + y
    return objective


def summary(study: optuna.Study, storage) -> dict:
    trials = study.get_trials(deepcopy=False)
    return {"study": study.study_name, "storage": st.public_url(storage), **W.counts(study),
            "numbers": [t.number for t in trials],
            "states": [t.state.name for t in trials],
            "sampler_seeds": [w["sampler_seed"] for w in W.workers_of(study)],
            "best": study.best_value if any(t.state.name == "COMPLETE" for t in trials) else None}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m studies.toy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    R.add_common_args(p, default_trials=10)
    p.add_argument("--sleep", type=float, default=0.0, help="seconds per trial")
    p.add_argument("--seed", type=int, default=0,
                   help="sampler seed: worker k (numbered by the storage) uses (SEED mod 1000) + 1000 k")
    args = p.parse_args(argv)
    args.study_name = args.study_name or "toy"
    try:
        storage = R.open_storage(args)
    except (ValueError, st.StorageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    def open_study(seed: int | None = None):
        return st.create_or_load_study(storage, args.study_name,
                                       sampler=optuna.samplers.TPESampler(seed=seed))

    def run_trials():
        worker = W.register(storage, args.study_name, args.seed)
        W.run_worker(open_study(worker.seed), objective_factory(args.sleep), args.n_trials,
                     poll=args.poll, worker=worker)

    def report():
        study = optuna.load_study(study_name=args.study_name, storage=storage)
        print(json.dumps(summary(study, storage)))

    return R.dispatch(args, argv, "studies.toy", args.study_name, open_study=open_study,
                      run_trials=run_trials, report=report)


if __name__ == "__main__":
    sys.exit(main())
