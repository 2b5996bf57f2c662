"""Optuna studies: storages, workers sharing one study, crashed workers, DDP, bad input, smoke.

Workers are real processes (``python -m studies.toy`` / ``studies.leak_timestep``), as on a
cluster; the toy study has no data or model so that these tests measure the coordination only.
The PostgreSQL tests start a throwaway server on 127.0.0.1 (CI installs Debian's postgresql).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from studies import optuna_private, roles
from studies import storage as st
from studies import workers as W
from conftest import find_postgres, run_if

ROOT = Path(__file__).resolve().parents[1]
needs_fashion = run_if(fashion_mnist=True)
optuna.logging.set_verbosity(optuna.logging.WARNING)


def env():
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([e["PYTHONPATH"]] if e.get("PYTHONPATH") else []))
    e["OMP_NUM_THREADS"] = "1"
    return e


def toy(storage: str, *args: str, **kw) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "studies.toy", "--storage", storage, "--study-name", "s",
           "--poll", "0.3", *args]
    return subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def finish(p: subprocess.Popen, timeout: float = 90) -> str:
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        pytest.fail(f"worker timed out:\n{out[-3000:]}")
    assert p.returncode == 0, out[-3000:]
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- PostgreSQL server

@pytest.fixture(scope="module")
def postgres_url():
    pg = find_postgres()
    if isinstance(pg, str):
        pytest.skip(pg)
    bindir, as_user = pg.bindir, pg.as_user
    tmp = Path(tempfile.mkdtemp(prefix="studies-pg-"))
    data, log = tmp / "data", tmp / "server.log"
    if as_user:
        os.chown(tmp, pg.uid, pg.gid)
    port = free_port()

    def run(*cmd, check=True):
        return subprocess.run([*as_user, *map(str, cmd)], capture_output=True, text=True, check=check,
                              timeout=120)
    try:
        run(bindir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        run(bindir / "pg_ctl", "-D", data, "-l", log, "-w", "-t", "60", "start", "-o",
            f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off")
    except subprocess.CalledProcessError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL: {e.stdout}\n{e.stderr}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(bindir / "pg_ctl", "-D", data, "-m", "immediate", "stop", check=False)
        shutil.rmtree(tmp, ignore_errors=True)


def fresh_pg_db(url: str, name: str) -> str:
    """A new database per test, so tests share the server but not the study."""
    import sqlalchemy
    eng = sqlalchemy.create_engine(st.sqlalchemy_url(url), isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}"'))
        c.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    eng.dispose()
    return url.rsplit("/", 1)[0] + f"/{name}"


# ----------------------------------------------------------------------------- storages

def test_storage_forms(tmp_path):
    assert st.kind_of(f"sqlite:///{tmp_path}/a.db") == "sqlite"
    assert st.kind_of(str(tmp_path / "a.journal")) == "journal"
    assert st.kind_of(f"journal:{tmp_path}/any-name") == "journal"
    assert st.kind_of("postgresql://u:p@h:5432/db") == "postgresql"
    assert st.kind_of(None) == "sqlite" and st.DEFAULT_STORAGE.endswith("/optuna.db")
    s = st.make_storage(f"journal:{tmp_path}/sub/x.log", heartbeat_interval=5, grace_period=20)
    assert isinstance(s, st.HeartbeatJournalStorage) and s.get_heartbeat_interval() == 5
    assert isinstance(s.get_heartbeat_stale_trial_callback(), optuna.storages.RetryHeartbeatStaleTrialCallback)
    r = st.make_storage(f"sqlite:///{tmp_path}/a.db", heartbeat_interval=5, grace_period=20)
    assert isinstance(r, optuna.storages.RDBStorage) and r.get_heartbeat_interval() == 5


@pytest.mark.parametrize("url", ["mysql://u:pw@host/db", "redis://localhost:6379", "optuna.db",
                                 "http://example.org/study"])
def test_unknown_storage_scheme(url):
    with pytest.raises(ValueError) as e:
        st.make_storage(url)
    msg = str(e.value)
    assert "sqlite:///" in msg and "journal:PATH" in msg and "postgresql://" in msg, msg
    assert "pw" not in msg  # no password in messages


def test_unreachable_database():
    url = f"postgresql://optuna:s3cret@127.0.0.1:{free_port()}/optuna"
    t = time.monotonic()
    with pytest.raises(st.StorageError) as e:
        st.make_storage(url)
    msg = str(e.value)
    assert f"postgresql://optuna:***@127.0.0.1:{url.split(':')[3].split('/')[0]}/optuna" in msg, msg
    assert "s3cret" not in msg and "cannot open the Optuna storage" in msg
    assert "\n" not in msg and "Traceback" not in msg
    assert time.monotonic() - t < 30


def test_cli_reports_bad_storage_cleanly(tmp_path):
    """The command line: one 'error:' line, exit code 2, no traceback."""
    for url, want in [("ftp://host/x", "unknown storage scheme 'ftp:'"),
                      (f"postgresql://u:pw@127.0.0.1:{free_port()}/db", "cannot open the Optuna storage")]:
        p = subprocess.run([sys.executable, "-m", "studies.toy", "--storage", url], cwd=ROOT,
                           env=env(), capture_output=True, text=True, timeout=60)
        assert p.returncode != 0 and want in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_guard_stops_surplus_trials():
    """Two workers raced past the budget check: the later trial (by number) is surplus."""
    study = optuna.create_study()
    budget = W.ExactBudget(2, poll=0.01)
    a, b, c = study.ask(), study.ask(), study.ask()     # three started, budget two
    budget.guard(a)
    budget.guard(b)
    with pytest.raises(W.SurplusTrial):
        budget.guard(c)
    assert c.user_attrs["surplus"] is True
    study.tell(c, state=TrialState.FAIL)
    study.tell(a, 1.0)
    study.tell(b, 2.0)
    assert not budget.slot_available(study)       # two complete: done, returns at once
    assert W.ExactBudget(4, poll=0.01).slot_available(study)   # two complete, two slots free


# ----------------------------------------------------------------------------- workers

def check_exact(storage, n: int, workers: int = 2) -> list:
    study = optuna.load_study(study_name="s", storage=storage)
    trials = study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == n
    numbers = [t.number for t in trials]
    assert len(set(numbers)) == len(numbers) == len(trials)
    assert all(t.value is not None and t.value == (t.params["x"] - 1) ** 2 + t.params["y"]
               for t in complete)
    others = [t for t in trials if t.state != TrialState.COMPLETE]
    assert all(t.state == TrialState.FAIL and t.user_attrs.get("surplus") for t in others), others
    assert len({t.user_attrs["pid"] for t in complete}) == workers, "both workers should run trials"
    return trials


def test_two_workers_journal(tmp_path):
    url = str(tmp_path / "study.journal")
    out = finish(toy(url, "--n-trials", "10", "--workers", "2", "--sleep", "0.5"))
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["finished"] == 10
    check_exact(st.make_storage(url), 10)


def test_two_workers_postgresql(postgres_url):
    url = fresh_pg_db(postgres_url, "two_workers")
    finish(toy(url, "--n-trials", "10", "--workers", "2", "--sleep", "0.5"))
    check_exact(st.make_storage(url), 10)


def wait_for_running(storage, proc: subprocess.Popen, timeout: float = 60):
    """The RUNNING trial of worker ``proc``; fails with the worker's output if it exits first."""
    pid = proc.pid
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            pytest.fail(f"the slow worker exited ({proc.returncode}) before starting a trial:\n"
                        f"{proc.communicate()[0]}")
        try:
            study = optuna.load_study(study_name="s", storage=storage)
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if t.user_attrs.get("pid") == pid and "y" in t.params:
                    return t
        except KeyError:  # study not created yet
            pass
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"the slow worker never started a trial:\n{proc.communicate()[0]}")


def wait_for_heartbeat(storage, trial, timeout: float = 60):
    """Until ``trial`` has a recorded heartbeat: a trial without one is never stale, so the
    kill below must come after it (a fixed sleep was too short on a loaded machine)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if optuna_private.last_heartbeat(storage, trial) is not None:
            return
        time.sleep(0.2)
    pytest.fail("the slow worker never recorded a heartbeat")


@pytest.mark.parametrize("kind", ["journal", "postgresql"])
def test_killed_worker_trial_is_retried(kind, tmp_path, request):
    url = (str(tmp_path / "study.journal") if kind == "journal"
           else fresh_pg_db(request.getfixturevalue("postgres_url"), "killed_worker"))
    beat = ["--heartbeat-interval", "1", "--grace-period", "3"]
    slow = toy(url, "--role", "worker", "--n-trials", "4", "--sleep", "60", *beat)
    storage = st.make_storage(url, heartbeat_interval=1, grace_period=3)
    victim = wait_for_running(storage, slow)
    wait_for_heartbeat(storage, victim)
    os.kill(slow.pid, signal.SIGKILL)            # dies in the middle of its trial
    slow.communicate()
    fast = toy(url, "--role", "worker", "--n-trials", "4", "--sleep", "0.05", *beat)
    finish(fast, timeout=90)
    study = optuna.load_study(study_name="s", storage=storage)
    trials = study.get_trials()
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 4
    dead = trials[victim.number]
    assert dead.state == TrialState.FAIL
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert retried[0].params == dead.params
    assert retried[0].user_attrs["pid"] == fast.pid
    assert len(trials) == 5


# ----------------------------------------------------------------------------- starting together

LAUNCH = """
import json, os, sys, time, traceback
import alembic.script, sqlalchemy.orm  # imported once, before the fork, to keep the test cheap
from studies import toy, workers
folder, n, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
if os.environ.get("FORCE_SEED"):         # the broken set-up: every worker samples with one seed
    workers.worker_seed = lambda base, number: int(os.environ["FORCE_SEED"])
pids = []
for i in range(n):
    pid = os.fork()
    if pid == 0:                         # a worker: its own process, connections and output
        fd = os.open(os.path.join(folder, f"worker{i}.log"), os.O_WRONLY | os.O_CREAT)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        while not os.path.exists(os.path.join(folder, "go")):
            time.sleep(0.001)
        try:
            code = toy.main(argv)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code or 0)
    pids.append(pid)
open(os.path.join(folder, "go"), "w").close()   # the barrier: all start at this instant
print(json.dumps([os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids]))
"""


def start_together(url: str, folder: Path, n_workers: int, n_trials: int, force_seed=None) -> list[str]:
    """``n_workers`` toy worker processes (forked from one launcher that imported everything
    once) open a fresh ``url`` at the same instant: each waits for a 'go' file. All exit 0.
    Returns their outputs. ``force_seed``: every worker samples with that seed (the old bug)."""
    folder.mkdir()
    e = env()
    if force_seed is not None:
        e["FORCE_SEED"] = str(force_seed)
    p = subprocess.run([sys.executable, "-c", LAUNCH, str(folder), str(n_workers), "--storage", url,
                        "--study-name", "s", "--role", "worker", "--n-trials", str(n_trials),
                        "--sleep", "0.02", "--poll", "0.1"],
                       cwd=ROOT, env=e, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stdout + p.stderr
    codes = json.loads(p.stdout.strip().splitlines()[-1])
    crashed = [(c, (folder / f"worker{i}.log").read_text()[-2000:]) for i, c in enumerate(codes) if c]
    assert len(codes) == n_workers and not crashed, \
        f"{len(crashed)}/{n_workers} workers crashed on a fresh storage: {crashed[0]}"
    return [(folder / f"worker{i}.log").read_text() for i in range(n_workers)]


@pytest.mark.parametrize("kind", ["sqlite", "journal", "postgresql"])
def test_eight_workers_start_together_on_a_fresh_storage(kind, tmp_path, request):
    """A SLURM array starts every task at once on a fresh database; the schema and
    study creation race (https://github.com/optuna/optuna/issues/1092) must cost no worker,
    3 rounds per storage."""
    for rnd in range(3):
        url = {"sqlite": lambda: f"sqlite:///{tmp_path}/r{rnd}.db",
               "journal": lambda: str(tmp_path / f"r{rnd}.journal"),
               "postgresql": lambda: fresh_pg_db(request.getfixturevalue("postgres_url"), f"together{rnd}"),
               }[kind]()
        start_together(url, tmp_path / f"round{rnd}", n_workers=8, n_trials=12)
        trials = optuna.load_study(study_name="s", storage=st.make_storage(url)).get_trials()
        assert sum(t.state == TrialState.COMPLETE for t in trials) == 12, f"round {rnd}"
        assert all(t.state == TrialState.COMPLETE or t.user_attrs.get("surplus") for t in trials)


def duplicates(trials) -> int:
    """COMPLETE trials whose parameters repeat an earlier COMPLETE trial's."""
    seen = [tuple(sorted(t.params.items())) for t in trials if t.state == TrialState.COMPLETE]
    return len(seen) - len(set(seen))


@pytest.mark.parametrize("kind", ["sqlite", "journal", "postgresql"])
def test_eight_workers_started_together_sample_distinct_points(kind, tmp_path, request):
    """The README's loop of bare ``--role worker`` commands (no flag tells them apart) released
    at one instant: the storage numbers the workers 0..7, each samples with its own seed, and
    the 40 trials hold no parameter set twice (with one shared seed about half of them did)."""
    url = {"sqlite": lambda: f"sqlite:///{tmp_path}/w.db", "journal": lambda: str(tmp_path / "w.journal"),
           "postgresql": lambda: fresh_pg_db(request.getfixturevalue("postgres_url"), "distinct")}[kind]()
    logs = start_together(url, tmp_path / "workers", n_workers=8, n_trials=40)
    storage = st.make_storage(url)
    study = optuna.load_study(study_name="s", storage=storage)
    trials = study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 40 and duplicates(trials) == 0, f"{duplicates(trials)} duplicates"
    seeds = [W.worker_seed(0, k) for k in range(8)]
    tickets = optuna.load_study(study_name="s" + W.REGISTRY_SUFFIX, storage=storage).get_trials()
    assert sorted(t.number for t in tickets) == list(range(8))
    assert sorted(t.value for t in tickets) == seeds                  # the seed, recorded
    assert [w["sampler_seed"] for w in W.workers_of(study)] == seeds
    assert {t.user_attrs["sampler_seed"] for t in complete} <= set(seeds)
    assert len({t.user_attrs["pid"] for t in complete}) > 1
    joined = sorted(int(line.split("sampler seed ")[1].split()[0]) for log in logs
                    for line in log.splitlines() if "joined study 's'" in line)
    assert joined == seeds, joined
    assert not any("Traceback" in log for log in logs), [log for log in logs if "Traceback" in log][0]


def test_duplicate_count_sees_workers_sharing_a_seed(tmp_path):
    """The check above is not vacuous: the same eight workers forced onto one seed (what every
    bare worker got before) repeat parameter sets."""
    url = str(tmp_path / "same.journal")
    start_together(url, tmp_path / "workers", n_workers=8, n_trials=16, force_seed=0)
    trials = optuna.load_study(study_name="s", storage=st.make_storage(url)).get_trials()
    assert duplicates(trials) > 0


SURPLUS = """
import optuna
from studies import workers as W
study = optuna.create_study()
elsewhere = study.ask()                 # trial 0: running in another worker
study.enqueue_trial({"x": 0.1})         # trials 1, 2: waiting, so this worker starts them
study.enqueue_trial({"x": 0.2})

def say(line):
    print(line, flush=True)
    if "not run" in line:               # the other worker finishes its trial meanwhile
        study.tell(elsewhere, 0.0)
W.run_worker(study, lambda t: t.suggest_float("x", 0, 1), n_trials=2, poll=0.01, say=say)
print("states", [t.state.name for t in study.get_trials()])
"""


def test_surplus_trial_ends_with_one_line():
    """A trial started after the budget was filled (trial 2 of a 2-trial study, trial 0 still
    running elsewhere) stops with one line: no Optuna warning, no traceback."""
    p = subprocess.run([sys.executable, "-c", SURPLUS], cwd=ROOT, env=env(), capture_output=True,
                       text=True, timeout=60)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "states ['COMPLETE', 'COMPLETE', 'FAIL']" in out, out
    assert "Traceback" not in out and "Trial 2 failed" not in out, out
    mentions = [line for line in out.splitlines() if "trial 2" in line.lower()]
    assert len(mentions) == 1 and "not run: the study's 2 trials were already taken" in mentions[0], out


@pytest.mark.parametrize("kind", ["sqlite", "journal", "postgresql"])
def test_printed_storage_url_opens_the_study(kind, tmp_path, request):
    """The URL a command prints is one optuna-dashboard and optuna.load_study accept: for
    PostgreSQL with the installed driver named (a bare postgresql:// needs psycopg 3)."""
    url = {"sqlite": lambda: f"sqlite:///{tmp_path}/u.db", "journal": lambda: str(tmp_path / "u.journal"),
           "postgresql": lambda: fresh_pg_db(request.getfixturevalue("postgres_url"), "printed_url")}[kind]()
    p = subprocess.run([sys.executable, "-m", "studies.toy", "--storage", url, "--study-name", "s",
                        "--role", "init"], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    printed = p.stdout.split("' ready on ")[1].strip()
    if kind == "journal":     # optuna-dashboard opens a journal given its path
        assert Path(printed).is_file() and printed == str((tmp_path / "u.journal").resolve())
        from optuna.storages.journal import JournalFileBackend
        storage = optuna.storages.JournalStorage(JournalFileBackend(printed))
    else:
        if kind == "postgresql":
            assert printed.startswith("postgresql+psycopg2://"), printed
        storage = printed
    assert optuna.load_study(study_name="s", storage=storage).study_name == "s"
    assert st.public_url("postgres://u:pw@h:5432/db") == "postgresql+psycopg2://u:***@h:5432/db"
    assert st.public_url("sqlite:///rel/x.db") == f"sqlite:///{Path.cwd() / 'rel/x.db'}"


def test_role_init_creates_schema_and_study_once(tmp_path):
    url = f"sqlite:///{tmp_path}/init.db"
    p = subprocess.run([sys.executable, "-m", "studies.toy", "--storage", url, "--study-name", "s",
                        "--role", "init"], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "ready" in p.stdout, p.stdout + p.stderr
    study = optuna.load_study(study_name="s", storage=url)
    assert study.get_trials() == []                         # created, no trial run


def test_schema_race_is_retried_then_passed_on(monkeypatch):
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError('(psycopg2.errors.DuplicateTable) relation "studies" already exists')
        return "storage"
    monkeypatch.setattr(st.time, "sleep", lambda s: None)
    assert st.retry_race(flaky) == "storage" and len(calls) == 3
    with pytest.raises(RuntimeError, match="connection refused"):  # not a race: no retry
        st.retry_race(lambda: (_ for _ in ()).throw(RuntimeError("connection refused")))


def test_heartbeat_is_on_by_default(tmp_path):
    """Crashed trials are retried only with a heartbeat: the default must keep it on (10 s)."""
    assert st.DEFAULT_HEARTBEAT_INTERVAL == 10 and st.DEFAULT_GRACE_PERIOD == 60
    for url in (f"sqlite:///{tmp_path}/d.db", str(tmp_path / "d.journal")):
        s = st.make_storage(url)
        assert s.get_heartbeat_interval() == 10, url
        assert isinstance(s.get_heartbeat_stale_trial_callback(),
                          optuna.storages.RetryHeartbeatStaleTrialCallback), url
    p = argparse.ArgumentParser()
    roles.add_common_args(p, default_trials=1)
    args = p.parse_args(["--storage", str(tmp_path / "cli.journal")])
    assert roles.open_storage(args).get_heartbeat_interval() == 10


def test_optuna_private_apis_unchanged(monkeypatch):
    """studies/optuna_private.py relies on Optuna internals: an upgrade that changes them must
    fail here, naming the version, not silently stop retrying crashed trials."""
    optuna_private.check()
    monkeypatch.setattr(optuna_private.BaseHeartbeat, "__abstractmethods__",
                        frozenset({"record_heartbeat", "_get_stale_trial_ids_v2"}))
    with pytest.raises(RuntimeError, match=f"Optuna {optuna.__version__} changed private APIs"):
        optuna_private.check()


# ----------------------------------------------------------------------------- DDP

@needs_fashion
def test_ddp_two_cpu_processes_agree(tmp_path):
    from studies import train_hparams as TH
    dm = TH.subset_datamodule("fashion-mnist", "/usr/share/datasets", batch_size=32,
                              train_subset=128, val_subset=64)
    hp = {"theta": 0.05, "L": 8, "lr": 0.05, "weight_decay": 1e-4}
    module, trainer = TH.train_once(hp, dm, arch_kwargs={"width": 4}, epochs=1, ddp_cpu=2,
                                    callbacks=[TH.RankValAcc(tmp_path)])
    recs = {r: [json.loads(line) for line in (tmp_path / f"rank{r}.jsonl").read_text().splitlines()]
            for r in (0, 1)}
    assert all(len(v) == 1 and v[0]["world_size"] == 2 for v in recs.values()), recs
    assert recs[1][0]["val_acc"] == recs[0][0]["val_acc"], recs
    # the launching process got rank 0's metrics and trained weights back
    assert float(trainer.callback_metrics["val_acc"]) == pytest.approx(recs[0][0]["val_acc"])
    assert trainer.strategy.process_group_backend == "gloo"
    from lightning_modules.callbacks import accuracy
    assert accuracy(module.model, dm.val_dataloader()) == pytest.approx(recs[0][0]["val_acc"], abs=1e-6)


# ----------------------------------------------------------------------------- checkpoints

def make_ckpt(path: Path, dataset: str = "fashion-mnist", activation: str = "steprelu",
              width: int = 4, **over) -> Path:
    """A Lightning-format ANNClassifier checkpoint with random weights (no training needed)."""
    import lightning

    from annsnn.datasets import DATASETS
    from lightning_modules.module import ANNClassifier
    info = DATASETS[dataset]
    act = {"name": "steprelu", "theta": 0.1, "L": 8, "phi": 0.0} if activation == "steprelu" \
        else {"name": activation}
    torch.manual_seed(0)
    m = ANNClassifier(arch="cnn-small", activation=act, num_classes=info.num_classes,
                      in_channels=info.in_channels, image_size=info.image_size, mean=info.mean,
                      std=info.std, arch_kwargs={"width": width}, epochs=1)
    hp = dict(m.hparams)
    hp.update(over)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": m.state_dict(), "hyper_parameters": hp, "epoch": 0, "global_step": 0,
                "pytorch-lightning_version": lightning.__version__}, path)
    return path


def test_checkpoint_mismatches(tmp_path):
    from studies.checkpoint import CheckpointError, load_ann
    cifar = make_ckpt(tmp_path / "c.ckpt", dataset="cifar10")
    with pytest.raises(CheckpointError) as e:
        load_ann(cifar, "fashion-mnist", "steprelu")
    msg = str(e.value)
    assert "does not match dataset 'fashion-mnist'" in msg and "in_channels=3" in msg and "image_size=32" in msg
    assert "--dataset cifar10" in msg
    fmnist = make_ckpt(tmp_path / "f.ckpt")                          # same shapes as MNIST
    with pytest.raises(CheckpointError, match=r"normalisation.*looks like a fashion-mnist"):
        load_ann(fmnist, "mnist", "steprelu")
    relu = make_ckpt(tmp_path / "r.ckpt", activation="relu")
    with pytest.raises(CheckpointError, match=r"activation 'relu'.*--method maxnorm or robustnorm"):
        load_ann(relu, "fashion-mnist", "steprelu")
    wrong_arch = make_ckpt(tmp_path / "w.ckpt", arch_kwargs={"width": 8})   # weights are width 4
    with pytest.raises(CheckpointError, match=r"does not match the cnn-small network"):
        load_ann(wrong_arch, "fashion-mnist", "steprelu")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_ann(tmp_path / "missing.ckpt", "fashion-mnist", "steprelu")
    ann, hp = load_ann(fmnist, "fashion-mnist", "steprelu")
    assert hp["arch"] == "cnn-small" and not ann.training


def test_cli_checkpoint_mismatch_is_one_line(tmp_path, capsys):
    from studies import leak_timestep as LT
    ckpt = make_ckpt(tmp_path / "c.ckpt", dataset="cifar10")
    rc = LT.main(["--checkpoint", str(ckpt), "--storage", str(tmp_path / "s.journal")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: checkpoint") and "does not match dataset" in err
    assert "Traceback" not in err


def test_trial_phi_reaches_every_neuron(tmp_path, monkeypatch):
    """The trial's phi must be the initial potential of every neuron actually simulated
    (the method's own phi, 0 for this StepReLU net, would otherwise be searched in vain)."""
    from annsnn.neurons import spiking_layers
    from studies import leak_inputs
    from studies import leak_timestep as LT
    from studies.checkpoint import load_ann
    ann, _ = load_ann(make_ckpt(tmp_path / "f.ckpt"), "fashion-mnist", "steprelu")
    assert LT.method_phi(ann, "steprelu", None) == 0.0
    seen, real = [], leak_inputs.simulate

    def spy(snn, *a, **kw):
        seen.append([m.phi for _, m in spiking_layers(snn)])
        return real(snn, *a, **kw)
    monkeypatch.setattr(leak_inputs, "simulate", spy)
    torch.manual_seed(0)
    val = leak_inputs.loader_of((torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))), 4)
    s = LT.Search(ann, "steprelu", val, None, None, 0, 4, [0.0, 0.5], ["acc", "T"])
    for phi in (0.5, 0.0):
        acc, T = LT.objective(optuna.trial.FixedTrial({"leak": 0.9, "T": 2, "phi": phi}), s)
        assert len(seen[-1]) >= 2 and all(p == phi for p in seen[-1]), (phi, seen[-1])
        assert T == 2 and 0 <= acc <= 1


def test_parse_options():
    from studies.leak_timestep import parse_objectives, parse_perturbation
    assert parse_objectives("acc,T") == ["acc", "T"] and parse_objectives("acc") == ["acc"]
    with pytest.raises(ValueError, match="valid are acc, acc,T, acc,energy"):
        parse_objectives("T")
    p = parse_perturbation("salt_pepper:0.9:dynamic")
    assert p.dynamic and p.s == 0.9
    assert not parse_perturbation("gaussian:0.1").dynamic and parse_perturbation("none") is None
    for bad in ("gaussian", "uniform:0.1", "gaussian:x", "salt_pepper:0.9:sometimes", "salt_pepper:2"):
        with pytest.raises(ValueError):
            parse_perturbation(bad)


# ----------------------------------------------------------------------------- end to end

@needs_fashion
def test_leak_timestep_smoke(tmp_path):
    from bench.run.layout import checkpoint_path
    make_ckpt(checkpoint_path("smoke", 0, "steprelu", tmp_path / "runs"))
    journal, out, mldb = tmp_path / "study.journal", tmp_path / "out", tmp_path / "mlflow.db"
    e = env()
    e["MLFLOW_TRACKING_URI"] = f"sqlite:///{mldb}"
    cmd = [sys.executable, "-m", "studies.leak_timestep", "--preset", "smoke", "--train-seed", "0",
           "--runs-dir", str(tmp_path / "runs"),
           "--data-dir", "/usr/share/datasets", "--storage", str(journal), "--n-trials", "4",
           "--workers", "2", "--val-subset", "64", "--test-subset", "100", "--T-max", "4",
           "--objectives", "acc,T", "--perturbation", "salt_pepper:0.9:dynamic", "--out", str(out),
           "--poll", "0.3"]
    p = subprocess.run(cmd, cwd=ROOT, env=e, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    md = (out / "study.md").read_text()
    assert (out / "pareto.png").stat().st_size > 10_000
    assert "Pareto front" in md and "salt_pepper/s_0.9/dynamic" in md and "| trial |" in md
    data = json.loads((out / "study.json").read_text())
    name = data["study_name"]
    assert name.startswith("leak_timestep-smoke-steprelu-acc_T-")
    study = optuna.load_study(study_name=name, storage=st.make_storage(str(journal)))
    complete = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert len(complete) == 4 and all(len(t.values) == 2 for t in complete)
    assert all(0.5 <= t.params["leak"] <= 1 and 1 <= t.params["T"] <= 4 and t.params["phi"] in (0.0, 0.5)
               for t in complete)
    assert all(0 <= p["test_acc"] <= 1 for p in data["points"]) and data["points"]
    assert data["meta"]["split_seed"] == 0 and data["meta"]["n_val"] == 64
    from mlflow.tracking import MlflowClient
    client = MlflowClient(f"sqlite:///{mldb}")
    exp = client.get_experiment_by_name("smoke-studies")
    runs = client.search_runs([exp.experiment_id])
    parent = [r for r in runs if r.data.tags.get("kind") == "optuna-study"]
    assert len(parent) == 1 and parent[0].data.tags["optuna.study_name"] == name
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id]
    trial_runs = [r for r in kids if r.data.tags.get("kind") == "optuna-trial"]
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in trial_runs) == \
        sorted(t.number for t in study.get_trials())
    assert all({"leak", "T", "phi", "study_name", "trial_number"} <= set(r.data.params) for r in trial_runs)
    assert all("val_acc" in r.data.metrics for r in trial_runs
               if r.data.tags["optuna.trial_state"] == "COMPLETE")
    test_runs = [r for r in kids if r.data.tags.get("kind") == "test-evaluation"]
    assert len(test_runs) == 1 and "pareto.test_acc" in test_runs[0].data.metrics
    assert (mldb.parent / "mlartifacts").is_dir()    # artifacts next to the test's database


# ----------------------------------------------------------------------------- one MLflow parent per study

def test_same_study_name_on_two_storages_gets_two_mlflow_parents(tmp_path):
    """A PostgreSQL study that once reused a journal study's parent run: here the same
    name on SQLite and on a journal, 3 and 5 trials; each parent holds only its own."""
    import tracking
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking.tracking_uri(f"sqlite:///{tmp_path}/mlflow.db"))
    parents = {}
    for url, n in ((f"sqlite:///{tmp_path}/a.db", 3), (str(tmp_path / "b.journal"), 5)):
        storage = st.make_storage(url)
        study = optuna.create_study(study_name="same-name", storage=storage, direction="maximize")
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=n)
        key = tracking.study_key("same-name", st.describe(storage), "sha-of-ckpt", ["acc"])
        parent = tracking.study_parent_run(client, "studies", "same-name", "optuna-study",
                                           tags={"storage": st.describe(storage)}, params={"n": n}, key=key)
        assert tracking.log_trials(client, parent, "same-name", study.get_trials(), ["acc"]) == n
        # a rerun finds its own parent again and logs nothing twice
        assert tracking.study_parent_run(client, "studies", "same-name", "optuna-study", tags={},
                                         params={}, key=key) == parent
        assert tracking.log_trials(client, parent, "same-name", study.get_trials(), ["acc"]) == n
        parents[url] = (parent, n)
    assert len({p for p, _ in parents.values()}) == 2
    exp = client.get_experiment_by_name("studies").experiment_id
    for parent, n in parents.values():
        kids = client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent}'")
        assert sorted(int(r.data.tags["optuna.trial_number"]) for r in kids) == list(range(n))
    # other objectives or another checkpoint are another study too
    base = tracking.study_key("s", "sqlite:///a.db", "h", ["acc"])
    assert len({base, tracking.study_key("s", "sqlite:///a.db", "h", ["acc", "T"]),
                tracking.study_key("s", "sqlite:///a.db", "h2", ["acc"]),
                tracking.study_key("s", "journal:a.journal", "h", ["acc"])}) == 4
