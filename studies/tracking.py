"""MLflow logging of a finished (or partly finished) Optuna study, once, from one process.

One parent run per study (found again by its tags, so a rerun adds to it), one nested run
per trial (any state; found again by trial number, so nothing is logged twice). Workers never
talk to MLflow: with many workers on a cluster the tracking store sees one writer.
"""
from __future__ import annotations

import json
from pathlib import Path

from optuna.trial import TrialState

import tracking as T


def client_for(uri: str | None):
    from mlflow.tracking import MlflowClient
    uri = T.tracking_uri(uri)
    return MlflowClient(uri), uri


def experiment_id(client, name: str) -> str:
    """Like lightning_modules.tracking.get_or_create_experiment, but a local SQLite store keeps
    its artifacts next to its database file (for the project's mlflow.db that is mlartifacts/,
    the project default; a test's temporary database keeps them in its own folder)."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    uri = client.tracking_uri
    loc = None
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):]).expanduser().resolve()
        loc = (db.parent / "mlartifacts" / name).as_uri()
    return client.create_experiment(name, artifact_location=loc)


def parent_run(client, exp_id: str, study_name: str, kind: str, tags: dict, params: dict) -> str:
    found = client.search_runs([exp_id], filter_string=f"tags.`optuna.study_name` = '{study_name}' "
                                                      f"and tags.kind = '{kind}'")
    if found:
        return found[0].info.run_id
    run = client.create_run(exp_id, run_name=study_name, tags={
        "kind": kind, "optuna.study_name": study_name, "git_commit": T.git_commit(), **tags})
    T.log_params(client, run.info.run_id, {k: (json.dumps(v) if isinstance(v, (list, dict)) else v)
                                           for k, v in params.items()})
    return run.info.run_id


def log_trials(client, exp_id: str, parent: str, study_name: str, trials, value_keys: list[str],
               scalar_attrs=(), curve_attrs=()) -> int:
    """One nested run per trial not logged yet; returns the number of trial runs in all."""
    logged = {r.data.tags.get("optuna.trial_number") for r in client.search_runs(
        [exp_id], filter_string=f"tags.mlflow.parentRunId = '{parent}' and tags.kind = 'optuna-trial'",
        max_results=50000)}
    n_new = 0
    for t in trials:
        if str(t.number) in logged or t.state in (TrialState.RUNNING, TrialState.WAITING):
            continue
        rid = T.start_child_run(client, parent, f"trial-{t.number}", tags={
            "kind": "optuna-trial", "optuna.study_name": study_name,
            "optuna.trial_number": str(t.number), "optuna.trial_state": t.state.name,
            "optuna.retried_from": str(t.system_attrs.get("failed_trial", "")),
            "surplus": str(bool(t.user_attrs.get("surplus", False)))})
        T.log_params(client, rid, {"study_name": study_name, "trial_number": t.number, **t.params})
        scal = {}
        if t.values is not None:
            scal.update(dict(zip(value_keys, t.values)))
        if t.intermediate_values:
            T.log_curve(client, rid, "intermediate_value",
                        [t.intermediate_values[k] for k in sorted(t.intermediate_values)])
        scal.update({k: t.user_attrs[k] for k in scalar_attrs
                     if isinstance(t.user_attrs.get(k), (int, float))})
        T.log_scalars(client, rid, scal)
        for k in curve_attrs:
            if isinstance(t.user_attrs.get(k), list):
                T.log_curve(client, rid, k, t.user_attrs[k])
        client.set_terminated(rid, {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}.get(t.state.name, "FAILED"))
        n_new += 1
    return len(logged) + n_new
