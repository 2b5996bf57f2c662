"""tracking/: batched logging within MLflow's own limits, nested child runs, figures as
artifacts, the experiment's artifact location. A sqlite store in tmp_path (nothing is
written into the repository)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import (MAX_ENTITY_KEY_LENGTH, MAX_METRICS_PER_BATCH, MAX_PARAM_VAL_LENGTH,
                                     MAX_PARAMS_TAGS_PER_BATCH)

import tracking


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("mlflow")
    client = MlflowClient(f"sqlite:///{d}/t.db")
    return client, d


@pytest.fixture
def run(store, request):
    client, _ = store
    exp = tracking.get_or_create_experiment(client, request.node.name[:100])
    return client, client.create_run(exp).info.run_id


class BatchSpy:
    """Wraps ``client.log_batch`` and records the size of every request."""

    def __init__(self, client, monkeypatch):
        self.sizes, real = [], client.log_batch

        def spy(run_id, metrics=(), params=(), tags=(), **kw):
            self.sizes.append((len(metrics), len(params) + len(tags)))
            return real(run_id, metrics=metrics, params=params, tags=tags, **kw)
        monkeypatch.setattr(client, "log_batch", spy)


def test_more_params_than_one_batch_all_arrive(run, monkeypatch):
    client, run_id = run
    spy = BatchSpy(client, monkeypatch)
    n = 2 * MAX_PARAMS_TAGS_PER_BATCH + 7
    tracking.log_params(client, run_id, {"grp": {f"p{i}": i for i in range(n)}})
    params = client.get_run(run_id).data.params
    assert params == {f"grp.p{i}": str(i) for i in range(n)}
    assert len(spy.sizes) == 3 and all(p <= MAX_PARAMS_TAGS_PER_BATCH for _, p in spy.sizes)


def test_long_curve_and_many_scalars_all_arrive(run, monkeypatch):
    client, run_id = run
    spy = BatchSpy(client, monkeypatch)
    n = MAX_METRICS_PER_BATCH + 3
    tracking.log_curve(client, run_id, "snn_acc", [i / n for i in range(n)])
    tracking.log_scalars(client, run_id, {f"m{i}": i for i in range(n)} | {"skipped": None})
    hist = client.get_metric_history(run_id, "snn_acc")
    assert sorted((m.step, m.value) for m in hist) == [(t, (t - 1) / n) for t in range(1, n + 1)]
    metrics = client.get_run(run_id).data.metrics
    assert all(metrics[f"m{i}"] == i for i in range(n)) and "skipped" not in metrics
    assert len(spy.sizes) == 4 and all(m <= MAX_METRICS_PER_BATCH for m, _ in spy.sizes)


def test_params_cut_to_mlflow_lengths(run, monkeypatch):
    """Cut here, not by MLflow's own optional truncation (off here, so MLflow would reject)."""
    monkeypatch.setenv("MLFLOW_TRUNCATE_LONG_VALUES", "false")
    client, run_id = run
    key = "k" * (MAX_ENTITY_KEY_LENGTH + 20)
    tracking.log_params(client, run_id, {key: "v" * (MAX_PARAM_VAL_LENGTH + 50)})
    params = client.get_run(run_id).data.params
    assert params == {key[:MAX_ENTITY_KEY_LENGTH]: "v" * MAX_PARAM_VAL_LENGTH}


def test_replace_child_run_keeps_one_child_per_name(run):
    client, parent = run
    first = tracking.replace_child_run(client, parent, "steprelu-leak1", tags={"method": "steprelu"})
    tracking.log_curve(client, first, "snn_acc", [0.5])  # half-logged, then interrupted
    second = tracking.replace_child_run(client, parent, "steprelu-leak1", tags={"method": "steprelu"})
    other = tracking.start_child_run(client, parent, "qcfs-leak1")
    kids = tracking.find_child_run(client, parent, "steprelu-leak1")
    assert [k.info.run_id for k in kids] == [second] != [first]
    assert kids[0].data.tags["method"] == "steprelu"
    assert client.get_run(other).data.tags["mlflow.parentRunId"] == parent


def test_figure_logged_as_png_artifact_and_closed(run):
    client, run_id = run
    fig = tracking.accuracy_figure({"steprelu": [0.5, 0.9]}, "t", {"steprelu": 0.9})
    tracking.log_figure(client, run_id, fig, "accuracy_vs_t.png")
    assert [a.path for a in client.list_artifacts(run_id)] == ["accuracy_vs_t.png"]
    assert not plt.get_fignums()
    local = client.download_artifacts(run_id, "accuracy_vs_t.png")
    with open(local, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_sqlite_experiment_keeps_artifacts_beside_its_database(store):
    client, d = store
    exp_id = tracking.get_or_create_experiment(client, "beside")
    assert client.get_experiment(exp_id).artifact_location == (d / "mlartifacts" / "beside").as_uri()
    client.delete_experiment(exp_id)
    assert tracking.get_or_create_experiment(client, "beside") == exp_id
    assert client.get_experiment(exp_id).lifecycle_stage == "active"
