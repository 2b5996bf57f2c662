"""MLflow logging of a finished (or partly finished) Optuna study, once, from one process.

One parent run per study, found again by the study's identity (``study_key``: its name,
storage, checkpoint and objectives), so a rerun adds to it and two studies that share a name
on different storages never share a parent run; one nested run per trial (any state; found again by trial number, so nothing is logged twice). Workers never
talk to MLflow: with many workers on a cluster the tracking store sees one writer. Trials are
read through their public attributes only, so this module needs no Optuna import.
"""
from __future__ import annotations

import hashlib
import json

from mlflow.tracking import MlflowClient

from .mlflow_runs import get_or_create_experiment, log_curve, log_params, log_scalars, start_child_run
from .provenance import git_commit

RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}   # any other final state: FAILED


def study_key(study_name: str, storage: str, checkpoint: str | None = None, objectives=()) -> str:
    """What makes a study one study: its name, its storage (a description without password),
    the checkpoint it studies (hash) and its objectives; 16 hex digits."""
    ident = json.dumps({"name": study_name, "storage": str(storage), "checkpoint": checkpoint,
                        "objectives": list(objectives)}, sort_keys=True)
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def study_parent_run(client: MlflowClient, experiment: str, study_name: str, kind: str,
                     tags: dict, params: dict, key: str) -> str:
    """The parent run in ``experiment`` of the study whose ``study_key`` is ``key`` (created
    on first use); returns its id."""
    exp_id = get_or_create_experiment(client, experiment)
    found = client.search_runs([exp_id], filter_string=f"tags.`optuna.study_key` = '{key}' "
                                                      f"and tags.kind = '{kind}'")
    if found:
        return found[0].info.run_id
    run = client.create_run(exp_id, run_name=study_name, tags={
        "kind": kind, "optuna.study_name": study_name, "optuna.study_key": key,
        "git_commit": git_commit(), **tags})
    log_params(client, run.info.run_id, {k: (json.dumps(v) if isinstance(v, (list, dict)) else v)
                                         for k, v in params.items()})
    return run.info.run_id


def log_trials(client: MlflowClient, parent: str, study_name: str, trials, value_keys: list[str],
               scalar_attrs=(), curve_attrs=()) -> int:
    """One nested run per finished trial not logged yet; returns the number of trial runs."""
    exp_id = client.get_run(parent).info.experiment_id
    logged = {r.data.tags.get("optuna.trial_number") for r in client.search_runs(
        [exp_id], filter_string=f"tags.mlflow.parentRunId = '{parent}' and tags.kind = 'optuna-trial'",
        max_results=50000)}
    n_new = 0
    for t in trials:
        if str(t.number) in logged or t.state.name in ("RUNNING", "WAITING"):
            continue
        rid = start_child_run(client, parent, f"trial-{t.number}", tags={
            "kind": "optuna-trial", "optuna.study_name": study_name,
            "optuna.trial_number": str(t.number), "optuna.trial_state": t.state.name,
            "optuna.retried_from": str(t.system_attrs.get("failed_trial", "")),
            "surplus": str(bool(t.user_attrs.get("surplus", False)))})
        log_params(client, rid, {"study_name": study_name, "trial_number": t.number, **t.params})
        scal = dict(zip(value_keys, t.values)) if t.values is not None else {}
        if t.intermediate_values:
            log_curve(client, rid, "intermediate_value",
                      [t.intermediate_values[k] for k in sorted(t.intermediate_values)])
        scal.update({k: t.user_attrs[k] for k in scalar_attrs
                     if isinstance(t.user_attrs.get(k), (int, float))})
        log_scalars(client, rid, scal)
        for k in curve_attrs:
            if isinstance(t.user_attrs.get(k), list):
                log_curve(client, rid, k, t.user_attrs[k])
        client.set_terminated(rid, RUN_STATUS.get(t.state.name, "FAILED"))
        n_new += 1
    return len(logged) + n_new
