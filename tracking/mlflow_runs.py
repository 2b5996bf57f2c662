"""MLflow runs: the store, one experiment per preset or study, nested child runs, and
batched logging within MLflow's own request limits.

One implementation for the callback, the benchmark and the studies, so they log the
same names (``snn_acc`` and ``conv_error`` with ``step = t``) and the MLflow UI can
chart any selection of runs side by side.
"""
from __future__ import annotations

import json
import os
import time
from itertools import islice
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import (MAX_ENTITY_KEY_LENGTH, MAX_METRICS_PER_BATCH,
                                     MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH)

from .plots import plt  # pyplot with the headless Agg backend
from .provenance import PROJECT_ROOT
from .store import ensure_store

# Every default storage lives in one ignored folder, store/ (or $ANNSNN_STORE_DIR): the MLflow
# database and its artifacts here, the Optuna database beside them (studies.storage).
STORE_DIR = Path(os.environ.get("ANNSNN_STORE_DIR") or PROJECT_ROOT / "store").expanduser().resolve()
DEFAULT_TRACKING_URI = f"sqlite:///{STORE_DIR / 'mlflow.db'}"
DEFAULT_ARTIFACTS = (STORE_DIR / "mlartifacts").as_uri()
# MLflow 3 opens an experiment without this tag in its GenAI (traces) view; this value is
# the "Model training" view, whose runs table and charts show these runs. (MLflow 3.17's
# Experiments list still opens the GenAI overview first: ``ui_links`` prints the runs table's link.)
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
# A saved view of the runs table, kept as an experiment tag in the envelope MLflow 3.17's UI
# writes for its own saved views: listed by name under Views, and opened by its key from a link
# (``#/experiments/<id>/runs?viewStateShareKey=runs-by-group``, see ``ui_links``). It shows the
# run_group and seed tags as columns (the UI's column keys), newest run first.
VIEW_KEY = "runs-by-group"
RUNS_VIEW = {"selectedColumns": ["tags.`run_group`", "tags.`seed`"],
             "orderByKey": "attributes.start_time", "orderByAsc": False}
VIEW_TAGS = {f"mlflow.sharedViewState.{VIEW_KEY}": json.dumps(
    {"name": "Run groups", "createdAt": 1767225600000, "state": json.dumps(RUNS_VIEW)})}


def tracking_uri(override: str | None = None) -> str:
    """The explicit URI, else ``$MLFLOW_TRACKING_URI``, else the project's sqlite file, with
    its store made whole first (``ensure_store``). Call it before ``MlflowClient(uri)``: the
    client creates a missing SQLite schema itself, migration by migration, in place, which a
    Ctrl-C can leave half-done. ``StoreError`` (one line) if a damaged store cannot be repaired."""
    return ensure_store(override or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI)


def get_or_create_experiment(client: MlflowClient, name: str) -> str:
    """One experiment per preset or study (restored if deleted), shown in MLflow's classic
    "Model training" view, with the runs table's run_group view (``ui_links``). The store is
    created or repaired first (``ensure_store``). A
    local SQLite store keeps its artifacts in ``mlartifacts/<name>`` beside its database
    file: the default store under store/, a test's temporary database its own folder (the
    plain-folder artifact store MLflow deprecates is never used)."""
    ensure_store(client.tracking_uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        for k, v in {**EXPERIMENT_KIND, **VIEW_TAGS}.items():   # made before these tags existed here
            if exp.tags.get(k) is None:
                client.set_experiment_tag(exp.experiment_id, k, v)
        return exp.experiment_id
    uri, loc = client.tracking_uri, None
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):]).expanduser().resolve()
        loc = (db.parent / "mlartifacts" / name).as_uri()
    return client.create_experiment(name, artifact_location=loc, tags={**EXPERIMENT_KIND, **VIEW_TAGS})


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    """Nested dict -> ``{"a.b": "value"}`` with string values (MLflow params are strings)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)
    return out


def _chunks(items, size: int):
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def log_batch(client: MlflowClient, run_id: str, metrics=(), params=(), tags=()) -> None:
    """``client.log_batch`` split into requests MLflow accepts (its per-batch limits on
    metrics and on params + tags), however many entities there are."""
    for chunk in _chunks(metrics, MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=chunk)
    for chunk in _chunks([*params, *tags], MAX_PARAMS_TAGS_PER_BATCH):
        client.log_batch(run_id, params=[p for p in chunk if isinstance(p, Param)],
                         tags=[t for t in chunk if isinstance(t, RunTag)])


def log_params(client: MlflowClient, run_id: str, params: dict) -> None:
    """Flattened params, keys and values cut to MLflow's length limits."""
    log_batch(client, run_id, params=[Param(k[:MAX_ENTITY_KEY_LENGTH], v[:MAX_PARAM_VAL_LENGTH])
                                      for k, v in flatten(params).items()])


def log_curve(client: MlflowClient, run_id: str, key: str, values) -> None:
    """Log ``values[t-1]`` as metric ``key`` at ``step = t`` (one curve in the UI)."""
    now = int(time.time() * 1000)
    log_batch(client, run_id, metrics=[Metric(key, float(v), now, t) for t, v in enumerate(values, start=1)])


def log_scalars(client: MlflowClient, run_id: str, metrics: dict[str, float]) -> None:
    """Scalars at step 0; ``None`` values are skipped."""
    now = int(time.time() * 1000)
    log_batch(client, run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()
                                       if v is not None])


def start_child_run(client: MlflowClient, parent_run_id: str, name: str, tags: dict | None = None) -> str:
    """A nested run under ``parent_run_id`` in the parent's experiment; returns its id."""
    parent = client.get_run(parent_run_id)
    run = client.create_run(parent.info.experiment_id, run_name=name,
                            tags={"mlflow.parentRunId": parent_run_id, **(tags or {})})
    return run.info.run_id


def find_child_run(client: MlflowClient, parent_run_id: str, name: str) -> list:
    """The children of ``parent_run_id`` named ``name`` (empty list if none)."""
    parent = client.get_run(parent_run_id)
    return client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' "
                                            f"and tags.mlflow.runName = '{name}'")


def replace_child_run(client: MlflowClient, parent_run_id: str, name: str, tags: dict | None = None) -> str:
    """A fresh child run ``name``; a half-logged one of the same name (from an interrupted
    run) is deleted first, so a resumed run never duplicates a setting."""
    for old in find_child_run(client, parent_run_id, name):
        client.delete_run(old.info.run_id)
    return start_child_run(client, parent_run_id, name, tags)


def log_figure(client: MlflowClient, run_id: str, fig, artifact_file: str, dpi: int = 120) -> None:
    """Log a matplotlib figure as an artifact (no temporary files) and close it."""
    try:
        client.log_figure(run_id, fig, artifact_file, save_kwargs={"dpi": dpi})
    finally:
        plt.close(fig)
