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


# ----------------------------------------------------------------------------- a store that survives Ctrl-C

import os  # noqa: E402
import signal  # noqa: E402
import sqlite3  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# what the bench runner and the studies do first: resolve the URI, then open a client
FIRST_RUN = ("import sys, tracking; from mlflow.tracking import MlflowClient; "
             "uri = tracking.tracking_uri(sys.argv[1]); "
             "tracking.get_or_create_experiment(MlflowClient(uri), 'first')")


def next_run_logs(uri: str) -> None:
    """What the next benchmark run does first: open the store, its experiment, log."""
    client = MlflowClient(tracking.tracking_uri(uri))
    exp = tracking.get_or_create_experiment(client, "next")
    rid = client.create_run(exp).info.run_id
    tracking.log_curve(client, rid, "snn_acc", [0.5, 0.75])
    assert [m.step for m in client.get_metric_history(rid, "snn_acc")] == [1, 2]


def _largest_db_file(d: Path) -> int:
    """Size of the largest database file in ``d``; sqlite's journals come and go while we look."""
    sizes = [0]
    for f in d.iterdir():
        if ".db" in f.name:
            try:
                sizes.append(f.stat().st_size)
            except FileNotFoundError:
                pass
    return max(sizes)


def kill_when(d: Path, uri: str, size: int) -> None:
    """Start a first run and SIGKILL it once a database file in ``d`` has ``size`` bytes
    (0: as soon as the process runs), i.e. at a point of the schema's creation."""
    p = subprocess.Popen([sys.executable, "-c", FIRST_RUN, uri], cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and p.poll() is None:
            if size == 0 or _largest_db_file(d) >= size:
                break
            time.sleep(0.02)
        assert p.poll() is None, "the first run finished before it could be killed"
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()


@pytest.mark.parametrize("size", [0, 4096, 200_000, 500_000, 800_000])
def test_store_killed_during_first_creation_opens_next_time(tmp_path, size):
    """A Ctrl-C in the very first run, at several points of the migration (the
    finished schema is about 950 kB): the next run opens the store and logs to it."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    kill_when(tmp_path, uri, size)
    tracking.store._READY.clear()
    next_run_logs(uri)
    assert not list(tmp_path.glob(".mlflow.db.*"))          # no scratch file left behind



class _DiedAfterTheSchema(Exception):
    pass


def test_a_new_store_is_built_on_a_scratch_file_and_renamed_into_place(tmp_path, monkeypatch):
    """The tables of a new store are created on another file in the same folder while the
    store's own path does not exist yet; a creation that dies before the rename leaves
    nothing at that path, and the next open builds it again and logs."""
    import mlflow.store.db.utils as db_utils
    db = (tmp_path / "fresh.db").resolve()
    uri = f"sqlite:///{db}"
    real, built = db_utils._initialize_tables, []

    def initialize_tables(engine):
        built.append(Path(engine.url.database).resolve())
        assert not db.exists(), "the new store's tables are being created at its final path"
        real(engine)
        if len(built) == 1:
            raise _DiedAfterTheSchema()   # the first creation dies before its rename
    monkeypatch.setattr(db_utils, "_initialize_tables", initialize_tables)
    tracking.store._READY.clear()
    with pytest.raises(_DiedAfterTheSchema):
        tracking.ensure_store(uri, quiet=True)
    assert not db.exists(), "a creation that died left a store at the final path"
    next_run_logs(uri)                      # opens (and so creates) the store again
    assert len(built) == 2 and all(b != db and b.parent == db.parent for b in built)
    assert tracking.store.inspect(db)["revision"] == tracking.store.head_revision()
    assert not list(tmp_path.glob(".fresh.db.*"))            # the scratch files are gone

def _complete_store(tmp_path) -> tuple[str, Path, str]:
    db = tmp_path / "s.db"
    uri = f"sqlite:///{db}"
    client = MlflowClient(uri)
    exp = tracking.get_or_create_experiment(client, "kept")
    rid = client.create_run(exp).info.run_id
    client.log_metric(rid, "snn_acc", 0.9)
    tracking.store._READY.clear()
    return uri, db, rid


@pytest.mark.parametrize("original_kept", [True, False])
def test_stray_alembic_tmp_table_is_repaired_and_runs_kept(tmp_path, capsys, original_kept):
    """The table rebuild alembic left half-done: ``_alembic_tmp_trace_tags`` beside the
    original (dropped), or instead of it (renamed back)."""
    uri, db, rid = _complete_store(tmp_path)
    con = sqlite3.connect(db)
    con.execute("create table _alembic_tmp_trace_tags as select * from trace_tags")
    if not original_kept:
        con.execute("drop table trace_tags")
    con.commit()
    con.close()
    tracking.ensure_store(uri)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "repairing" in out[0] and "_alembic_tmp_trace_tags" in out[0], out
    info = tracking.store.inspect(db)
    assert not info["stray"] and "trace_tags" in info["tables"]
    assert MlflowClient(uri).get_run(rid).data.metrics["snn_acc"] == 0.9
    assert list(tmp_path.glob("s.db.broken-*"))              # the damaged file is kept
    tracking.store._READY.clear()
    next_run_logs(uri)


def test_unrepairable_store_is_one_line_and_left_unchanged(tmp_path):
    uri, db, _ = _complete_store(tmp_path)
    con = sqlite3.connect(db)
    con.execute("update alembic_version set version_num = 'ffffffffffff'")   # a newer MLflow's
    con.commit()
    con.close()
    before = db.read_bytes()
    with pytest.raises(tracking.StoreError) as e:
        tracking.ensure_store(uri)
    assert "\n" not in str(e.value) and str(db) in str(e.value) and "move it aside" in str(e.value)
    assert db.read_bytes() == before


def test_experiments_open_in_the_model_training_view(store):
    client, _ = store
    exp = tracking.get_or_create_experiment(client, "kind")
    assert client.get_experiment(exp).tags["mlflow.experimentKind"] == "custom_model_development"
    client.delete_experiment_tag(exp, "mlflow.experimentKind")
    tracking.get_or_create_experiment(client, "kind")       # older experiments get the tag too
    assert client.get_experiment(exp).tags["mlflow.experimentKind"] == "custom_model_development"


def test_default_storages_share_one_folder_outside_the_sources():
    from studies import storage
    assert storage.STORE_DIR == tracking.STORE_DIR
    for uri in (tracking.DEFAULT_TRACKING_URI, storage.DEFAULT_STORAGE):
        assert Path(uri[len("sqlite:///"):]).parent == tracking.STORE_DIR
    assert Path(tracking.DEFAULT_ARTIFACTS[len("file://"):]).parent == tracking.STORE_DIR
    if not os.environ.get("ANNSNN_STORE_DIR"):
        assert tracking.STORE_DIR == tracking.PROJECT_ROOT / "store"


# ----------------------------------------------------------------------------- no telemetry

# Variables under which MLflow 3.17 turns its telemetry off by itself (CI services, pytest:
# mlflow.telemetry.utils._is_ci_env_or_testing); the commands below run without them, as in a
# user's shell, so that only the tracking package's setting can turn it off.
CI_VARS = ("PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS", "CIRCLECI", "GITLAB_CI", "JENKINS_URL",
           "TRAVIS", "TF_BUILD", "BITBUCKET_BUILD_NUMBER", "CODEBUILD_BUILD_ARN", "BUILDKITE",
           "TEAMCITY_VERSION", "CLOUD_RUN_EXECUTION", "RUNBOT_HOST_URL", "RUNBOT_BUILD_NAME",
           "RUNBOT_WORKER_ID")
TELEMETRY = ("import json, os; {imports}; "
             "from mlflow.telemetry import get_telemetry_client; "
             "from mlflow.telemetry.utils import is_telemetry_disabled; "
             "print(json.dumps([is_telemetry_disabled(), get_telemetry_client() is None, "
             "os.environ.get('MLFLOW_DISABLE_TELEMETRY'), os.environ.get('DO_NOT_TRACK')]))")


@pytest.mark.parametrize("imports", ["import tracking, mlflow", "import mlflow, tracking"])
def test_mlflow_telemetry_is_off_once_tracking_is_imported(imports):
    """MLflow 3 sends usage telemetry unless opted out; a command that imports ``tracking``
    (before or after MLflow) runs with it off and no telemetry client."""
    import json
    e = {k: v for k, v in os.environ.items() if k not in CI_VARS and k not in tracking.TELEMETRY_OPT_OUT}
    p = subprocess.run([sys.executable, "-c", TELEMETRY.format(imports=imports)], cwd=ROOT, env=e,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads(p.stdout.splitlines()[-1]) == [True, True, "true", "true"], p.stdout


def test_a_users_telemetry_choice_is_kept():
    for user in ({"MLFLOW_DISABLE_TELEMETRY": "false"}, {"DO_NOT_TRACK": "false"},
                 {"MLFLOW_DISABLE_TELEMETRY": "true"}):
        environ = dict(user)
        tracking.telemetry_off(environ)
        assert environ == user
    environ = {}
    tracking.telemetry_off(environ)
    assert environ == {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


# ----------------------------------------------------------------------------- run groups

def _snn_run(client, exp, parent, method, group, seed, accs):
    rid = tracking.start_child_run(client, parent, f"{method}-leak1", tags={
        "method": method, "leak": "1.0", "seed": str(seed), "kind": tracking.comparison.SNN_KIND,
        "run_group": group})
    tracking.log_curve(client, rid, "snn_acc", accs)
    client.set_terminated(rid)


def test_a_compare_run_holds_only_its_own_invocation(store):
    """Two invocations of one preset with different settings: each compare run is built from its
    own group's runs only, and names the group (the runs table's column)."""
    client, _ = store
    exp = tracking.get_or_create_experiment(client, "groups")
    cfg_a, cfg_b = {"name": "p", "T_max": 4, "test_subset": 200}, {"name": "p", "T_max": 4, "test_subset": 100}
    ga, gb = tracking.run_group(cfg_a, 0, "c0"), tracking.run_group(cfg_b, 0, "c0")
    assert ga != gb and ga == tracking.run_group(dict(cfg_a, description="other words"), 0, "c0")
    assert tracking.run_group(cfg_a, 0, "c1") != ga and tracking.run_group(cfg_a, 1, "c0") != ga
    for group, methods, level in ((ga, ("steprelu", "qcfs"), 0.9), (gb, ("steprelu", "opi"), 0.1)):
        parent = client.create_run(exp, run_name="ann", tags={"run_group": group, "seed": "0"}).info.run_id
        for m in methods:
            _snn_run(client, exp, parent, m, group, 0, [level] * 4)
    for group, want, level in ((ga, {"steprelu", "qcfs"}, 0.9), (gb, {"steprelu", "opi"}, 0.1)):
        rid = tracking.update_comparison(client, exp, 0, group)
        run = client.get_run(rid)
        assert run.info.run_name == f"compare-seed0-{group}" and run.data.tags["run_group"] == group
        methods = {k.split("/")[1].rsplit("-leak", 1)[0] for k in run.data.metrics if k.startswith("snn_acc/")}
        assert methods == want
        assert all(v == level for k, v in run.data.metrics.items() if k.startswith("snn_acc/"))
