"""MLflow helpers: nested runs per conversion setting, metric curves with step = t, plots.

Kept in one place so the Lightning callback, the benchmark and the studies log
the same names (``snn_acc`` and ``conv_error`` with ``step = t``) and the MLflow
UI can chart any selection of runs side by side.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TRACKING_URI = f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"
DEFAULT_ARTIFACTS = (PROJECT_ROOT / "mlartifacts").as_uri()
PACKAGES = ("torch", "torchvision", "lightning", "mlflow", "optuna", "optuna-integration", "numpy",
            "adversarial-robustness-toolbox")


def tracking_uri(override: str | None = None) -> str:
    return override or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def git_commit(ignore: list | tuple = ()) -> str:
    """HEAD, with ``-dirty`` when tracked files differ from it. ``ignore``: paths whose
    changes do not count, i.e. the outputs being written by the run asking."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        excludes = [f":(exclude){Path(p).resolve().relative_to(PROJECT_ROOT.resolve())}"
                    for p in ignore if Path(p).resolve().is_relative_to(PROJECT_ROOT.resolve())]
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                *excludes],
                               cwd=PROJECT_ROOT, capture_output=True, text=True).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return out


def get_or_create_experiment(client: MlflowClient, name: str) -> str:
    """One experiment per preset; with a local sqlite store its artifacts go to mlartifacts/."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    local = client.tracking_uri.startswith("sqlite")
    return client.create_experiment(name, artifact_location=f"{DEFAULT_ARTIFACTS}/{name}" if local else None)


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)
    return out


def log_params(client: MlflowClient, run_id: str, params: dict) -> None:
    items = [Param(k[:250], v[:6000]) for k, v in flatten(params).items()]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i:i + 100])


def log_curve(client: MlflowClient, run_id: str, key: str, values) -> None:
    """Log ``values[t-1]`` as metric ``key`` at ``step = t``."""
    now = int(time.time() * 1000)
    ms = [Metric(key, float(v), now, t) for t, v in enumerate(values, start=1)]
    for i in range(0, len(ms), 900):
        client.log_batch(run_id, metrics=ms[i:i + 900])


def log_scalars(client: MlflowClient, run_id: str, metrics: dict[str, float]) -> None:
    now = int(time.time() * 1000)
    ms = [Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None]
    for i in range(0, len(ms), 900):
        client.log_batch(run_id, metrics=ms[i:i + 900])


def start_child_run(client: MlflowClient, parent_run_id: str, name: str, tags: dict | None = None) -> str:
    parent = client.get_run(parent_run_id)
    run = client.create_run(parent.info.experiment_id, run_name=name,
                            tags={"mlflow.parentRunId": parent_run_id, **(tags or {})})
    return run.info.run_id


def find_child_run(client: MlflowClient, parent_run_id: str, name: str):
    parent = client.get_run(parent_run_id)
    runs = client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' "
                                            f"and tags.mlflow.runName = '{name}'")
    return runs


def accuracy_plot(curves: dict[str, list[float]], title: str, path: Path, ann_acc: dict | None = None) -> Path:
    """Accuracy against time step, one line per method (log-2 x axis)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (name, acc) in enumerate(curves.items()):
        line, = ax.plot(range(1, len(acc) + 1), [100 * a for a in acc], marker="o", ms=3, label=name)
        if ann_acc and name in ann_acc and ann_acc[name] is not None:
            ax.axhline(100 * ann_acc[name], color=line.get_color(), ls=":", lw=1)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("time step t")
    ax.set_ylabel("SNN test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def log_figure(client: MlflowClient, run_id: str, curves, title, filename, ann_acc=None) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = accuracy_plot(curves, title, Path(d) / filename, ann_acc)
        client.log_artifact(run_id, str(p))
