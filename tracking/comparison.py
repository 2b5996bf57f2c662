"""One MLflow run per seed that holds every method's curves, and the run's canonical params.

The MLflow chart view draws one line per *visible run* and shows the first ten runs only,
and each method lives in a nested run under its ANN's run: the five methods of a preset
never share a chart there. ``update_comparison`` therefore keeps a top-level run
``compare-seed<k>`` per experiment and seed, holding ``snn_acc/<method>-leak<l>`` (and the
same for ``conv_error`` and ``energy_ratio``) with ``step = t``: its "Model metrics" tab
shows one chart per metric family with every method in it, and ``comparison.png`` is the
same in one figure. It is rebuilt from the latest nested run of each setting, so a resumed
or repeated run never logs a step twice.

Runs of one invocation share a run group (``run_group``: a hash of the preset as run, the seed
and the commit), a tag on every run it makes and a column of the runs table. A compare run
(``compare-seed<k>-<group>``) is built only from runs of its group: runs with other settings,
another commit or an interrupted short test never meet in one figure.

``run_params``: the one name of every knob is its key in the preset, as ``--set`` takes it
(``activations.steprelu.theta``, ``train.lr``, ``arch_kwargs.width``).
"""
from __future__ import annotations

import hashlib
import json

from mlflow.tracking import MlflowClient

from .mlflow_runs import flatten, log_batch, log_figure, log_params
from .plots import accuracy_figure

CURVES = ("snn_acc", "conv_error", "energy_ratio")   # per-method metric families
SNN_KIND = "snn"                                      # tag kind of a nested conversion run


def run_params(cfg: dict, seed: int, activation: str) -> dict[str, str]:
    """The params of an ANN run and of its nested runs: the preset as run, keyed as in the
    preset, with only this run's activation under ``activations``."""
    keep = {k: v for k, v in cfg.items() if k not in ("name", "activations")}
    return flatten({"preset": cfg["name"], "seed": seed, "activation": activation,
                    "activations": {activation: cfg["activations"][activation]}, **keep})


WORDS = ("description", "why", "budget_minutes", "seeds", "caveats", "selection")   # change no number


def run_group(cfg: dict, seed, commit: str) -> str:
    """The invocation's id: the preset as run (words aside), the seed and the commit."""
    keep = {k: v for k, v in cfg.items() if k not in WORDS}
    blob = json.dumps({"preset": keep, "seed": str(seed), "commit": commit}, sort_keys=True, default=str)
    return "g" + hashlib.sha1(blob.encode()).hexdigest()[:8]


def comparison_name(seed, group: str | None = None) -> str:
    return f"compare-seed{seed}" + (f"-{group}" if group else "")


def update_comparison(client: MlflowClient, experiment_id: str, seed, group: str | None = None) -> str:
    """(Re)build ``compare-seed<seed>-<group>`` from the newest nested run of every (method,
    leak) of that seed and run group in the experiment; returns its run id."""
    only = f" and tags.run_group = '{group}'" if group else ""
    kids = client.search_runs([experiment_id], filter_string=f"tags.kind = '{SNN_KIND}' and tags.seed = '{seed}'{only}",
                              order_by=["attributes.start_time DESC"], max_results=5000)
    latest = {}
    for r in kids:
        latest.setdefault(r.data.tags.get("mlflow.runName"), r)
    name = comparison_name(seed, group)
    for old in client.search_runs([experiment_id], filter_string=f"tags.kind = 'comparison' and "
                                                                  f"tags.mlflow.runName = '{name}'"):
        client.delete_run(old.info.run_id)
    run = client.create_run(experiment_id, run_name=name, tags={
        "kind": "comparison", "seed": str(seed), **({"run_group": group} if group else {}),
        "mlflow.note.content": "Every method's curves with step = t (one chart per metric family): "
                               "open Model metrics. Rebuilt after each method is evaluated."})
    rid, acc, ann, metrics = run.info.run_id, {}, {}, []
    for setting, r in sorted(latest.items()):
        for fam in CURVES:
            hist = client.get_metric_history(r.info.run_id, fam)
            metrics += [type(m)(f"{fam}/{setting}", m.value, m.timestamp, m.step) for m in hist]
            if fam == "snn_acc" and hist:
                acc[setting] = [m.value for m in sorted(hist, key=lambda m: m.step)]
        ann[setting] = r.data.metrics.get("ann_acc")
    log_batch(client, rid, metrics=metrics)
    log_params(client, rid, {"seed": seed, "run_group": group or "", "settings": ",".join(sorted(latest)),
                             "methods": ",".join(sorted({r.data.tags.get("method", "") for r in latest.values()}))})
    if acc:
        log_figure(client, rid, accuracy_figure(acc, f"all methods, seed {seed}", ann), "comparison.png")
    client.set_terminated(rid)
    return rid
