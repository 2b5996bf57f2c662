"""How every study command runs: its shared options and the ``--role`` dispatch.

Roles (the same for ``leak_timestep``, ``train_hparams`` and ``toy``):

- ``init``: create the storage's schema and the study, then exit. Run it once before workers
  that start together (a SLURM array: ``sbatch --dependency=afterok:<init job>``), so they
  never race to create them (https://github.com/optuna/optuna/issues/1092; opening also retries that race).
- ``worker``: run trials until the study holds ``--n-trials`` finished ones. Each worker takes
  its number (and so its sampler seed) from the storage (``workers.register``): no flag tells
  workers apart, so a shell loop of identical commands, a SLURM array and ``--workers N``
  all sample different points.
- ``report``: only the final report.
- ``all`` (default): init, trials (in this process, or ``--workers N`` local processes), report.

A command hands ``dispatch`` three callables (open the study, run trials, report) and,
optionally, a ``bundle``: inputs prepared once (the ANN, the validation images) that local
worker processes load with ``load_bundle`` instead of reading the checkpoint and data again.
"""
from __future__ import annotations

import argparse
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from . import storage as st

ROLES = ("all", "init", "worker", "report")


def add_output_args(p: argparse.ArgumentParser, default_out: str, default_experiment: str) -> None:
    """Where a study's report and MLflow runs go (the same four flags for every study)."""
    p.add_argument("--out", default=None, help=f"output folder (default {default_out})")
    p.add_argument("--experiment", default=None, help=f"MLflow experiment (default {default_experiment})")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default "
                                                        "$MLFLOW_TRACKING_URI or sqlite:///store/mlflow.db)")
    p.add_argument("--no-mlflow", action="store_true", help="skip MLflow logging")


def add_common_args(p: argparse.ArgumentParser, default_trials: int) -> None:
    g = p.add_argument_group("study and workers")
    g.add_argument("--storage", default=st.DEFAULT_STORAGE,
                   help="sqlite:///PATH, PATH.journal or journal:PATH, or postgresql://... "
                        "(default: %(default)s)")
    g.add_argument("--study-name", default=None, help="default: derived from the settings")
    g.add_argument("--n-trials", type=int, default=default_trials,
                   help="total finished trials the study should end with, over all workers and "
                        "reruns (default %(default)s)")
    g.add_argument("--workers", type=int, default=1,
                   help="local worker processes sharing the storage (default 1: run in this process)")
    g.add_argument("--role", choices=ROLES, default="all",
                   help="all: create the study, run trials (with --workers processes), report; "
                        "init: only create the storage schema and the study (once, before workers "
                        "that start together); worker: only run trials (e.g. one SLURM array "
                        "task); report: only the final report")
    g.add_argument("--threads", type=int, default=1,
                   help="torch threads per worker (default 1: fastest for small models, and on a "
                        "busy machine 2 threads ran a cnn-small simulation 3x slower; 0: CPU cores "
                        "/ workers)")
    g.add_argument("--heartbeat-interval", type=int, default=st.DEFAULT_HEARTBEAT_INTERVAL,
                   help="seconds between heartbeats of a running trial (0: off; default %(default)s)")
    g.add_argument("--grace-period", type=int, default=st.DEFAULT_GRACE_PERIOD,
                   help="a running trial without a heartbeat for this long is failed and retried "
                        "(default %(default)s)")
    g.add_argument("--max-retry", type=int, default=st.DEFAULT_MAX_RETRY,
                   help="retries of a trial whose worker died (default %(default)s)")
    g.add_argument("--poll", type=float, default=2.0, help=argparse.SUPPRESS)
    g.add_argument("--bundle", default=None, help=argparse.SUPPRESS)  # inputs from the launcher


def open_storage(args):
    return st.make_storage(args.storage, heartbeat_interval=args.heartbeat_interval or None,
                           grace_period=args.grace_period, max_retry=args.max_retry)


def set_threads(args) -> int:
    import torch
    n = args.threads or max(1, (os.cpu_count() or 1) // max(1, args.workers))
    torch.set_num_threads(n)
    return n


def out_path(p: str | os.PathLike) -> Path:
    return Path(p).expanduser().resolve()


def load_bundle(path: str | os.PathLike):
    """The inputs the launching process prepared (our own file, written by ``dispatch``)."""
    with open(path, "rb") as f:
        return pickle.load(f)


def launch_workers(module: str, argv: list[str], n: int, extra: list[str]) -> list[int]:
    """Start ``n`` copies of ``python -m module argv --role worker ...`` and wait for them.

    Later flags override earlier ones in argparse, so the worker options are appended. Returns
    their exit codes. Ctrl-C (or SIGTERM) stops all of them.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(st.PROJECT_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    procs = []
    for _ in range(n):   # each numbers itself through the storage (workers.register)
        cmd = [sys.executable, "-m", module, *argv, "--role", "worker", "--workers", str(n), *extra]
        procs.append(subprocess.Popen(cmd, cwd=os.getcwd(), env=env))
    print(f"[study] started {n} worker processes: pids {', '.join(str(p.pid) for p in procs)}",
          flush=True)

    def stop(*_):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
    old = signal.signal(signal.SIGTERM, lambda *a: (stop(), sys.exit(143)))
    try:
        return [p.wait() for p in procs]
    except KeyboardInterrupt:
        stop()
        for p in procs:
            p.wait()
        raise
    finally:
        signal.signal(signal.SIGTERM, old)


def dispatch(args, argv: list[str], module: str, name: str, *, open_study: Callable,
             run_trials: Callable, report: Callable, bundle=None) -> int:
    """Do what ``args.role`` asks (see the module docstring); returns the exit code.

    ``open_study()`` creates or loads the study and checks its setting; ``run_trials()`` and
    ``report()`` take no arguments. ``bundle`` (picklable) is handed to local workers.
    """
    if args.role in ("init", "all", "report") and not getattr(args, "no_mlflow", True):
        import tracking   # the MLflow store is made whole before any trial, not at the report
        try:
            tracking.ensure_store(tracking.tracking_uri(getattr(args, "tracking_uri", None)))
        except tracking.StoreError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    if args.role in ("init", "all"):
        study = open_study()
        if args.role == "init":
            print(f"[study] '{study.study_name}' ready on {st.public_url(args.storage)}", flush=True)
            return 0
    if args.role in ("all", "worker"):
        if args.role == "all" and args.workers > 1:
            tmp = Path(tempfile.mkdtemp(prefix="study-"))
            try:
                extra = ["--study-name", name]
                if bundle is not None:
                    with open(tmp / "inputs.pkl", "wb") as f:
                        pickle.dump(bundle, f)
                    extra += ["--bundle", str(tmp / "inputs.pkl")]
                print(f"[study] '{name}' on {st.public_url(args.storage)}: {args.n_trials} trials in "
                      f"total, {args.workers} workers", flush=True)
                codes = launch_workers(module, argv, args.workers, extra)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            if any(codes):
                print(f"[study] worker exit codes {codes}", file=sys.stderr)
        else:
            run_trials()
    if args.role in ("all", "report"):
        report()
    return 0
