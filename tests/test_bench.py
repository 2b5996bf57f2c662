"""End-to-end pipeline tests: a tiny preset against a real MLflow server, resume, readable logs,
and the report's statistics over seeds. (Preset parsing: test_presets.py.)"""
from __future__ import annotations

import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from bench import presets
from bench.report import summary
from bench.run import runner
from conftest import run_if

needs_fashion = run_if(fashion_mnist=True)

TINY = ["train.epochs=1", "val_fraction=0.9", "test_subset=300", "calib_size=200", "T_max=4",
        "summary_t=[1,2,4]", "arch_kwargs={width: 8}", "trainer.threads=2", "robustness.enabled=false", "deterministic=false",
        "seeds=[0]"]
TINY_ROBUSTNESS = ["robustness.enabled=true", "robustness.test_subset=40",
                   "robustness.noise_images=40", "robustness.transfer_images=20",
                   "robustness.snn_attack_images=8", "robustness.leak_images=40",
                   "robustness.sanity_images=0", "robustness.T_max=8",
                   "robustness.eps=[8]", "robustness.sources=[relu, qcfs, steprelu]",
                   "robustness.pgd_steps=2", "robustness.pgd_restarts=1",
                   "robustness.snn_pgd_steps=2", "robustness.snn_pgd_restarts=1",
                   "robustness.gaussian_sigma=[0.1]", "robustness.salt_pepper_s=[0.9]",
                   "robustness.leaks=[1.0, 0.9]", "robustness.leak_modes=[exp]"]


def tiny_cfg(name, methods=("qcfs", "steprelu", "steprelu-single"), extra=()):
    cfg = presets.load("smoke", TINY + [f"methods=[{', '.join(methods)}]"] + list(extra))
    cfg["name"] = name
    return cfg


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path}/srv.db",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if proc.poll() is not None:
                pytest.fail("mlflow server exited at start-up")
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("mlflow server did not start within 120 s")
    yield uri
    os.killpg(proc.pid, 15)
    proc.wait(timeout=30)


def _children(client, exp_id, parent):
    return client.search_runs([exp_id], f"tags.mlflow.parentRunId = '{parent}'")


@needs_fashion
def test_tiny_preset_against_mlflow_server(tmp_path, mlflow_server, capfd):
    cfg = tiny_cfg("test-server", extra=TINY_ROBUSTNESS)
    out = runner.run(cfg, tracking_uri=mlflow_server, out_dir=tmp_path / "results", progress=True)
    # the log, as written to a file (SLURM, CI, nohup): plain lines that `less` reads
    log = "".join(capfd.readouterr())
    assert "\r" not in log and "\x1b[" not in log, "progress bars redraw with carriage returns / escapes"
    assert "SNN steprelu-leak1: 100% 4/4" in log and re.search(r"robustness: 100% (\d+)/\1", log)
    assert len(log.encode()) < 50_000, f"{len(log.encode())} bytes of log for a run of seconds"
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("test-server")
    parents = client.search_runs([exp.experiment_id], "tags.activation != ''")
    assert sorted(r.data.tags["activation"] for r in parents) == ["qcfs", "steprelu"]
    names, robust = set(), set()
    for p in parents:
        for child in _children(client, exp.experiment_id, p.info.run_id):
            name = child.data.tags["mlflow.runName"]
            if name.endswith("-robustness"):
                keys = child.data.metrics
                assert {"rob/clean/T_1", "rob/noise_sp_static/T_1", "rob/noise_sp_dynamic/T_4",
                        "rob/pgd_snn/T_1"} <= set(keys), sorted(keys)
                robust.add(name)
                continue
            names.add(name)
            hist = client.get_metric_history(child.info.run_id, "snn_acc")
            assert [m.step for m in sorted(hist, key=lambda m: m.step)] == [1, 2, 3, 4]
            rec = next(r for r in out["records"] if r["run_id"] == child.info.run_id)
            assert [m.value for m in sorted(hist, key=lambda m: m.step)] == pytest.approx(rec["acc"])
            assert "accuracy_vs_t.png" in [a.path for a in client.list_artifacts(child.info.run_id)]
    assert names == {"qcfs-leak1", "steprelu-leak1", "steprelu-single-leak1"}
    assert {"qcfs-robustness", "steprelu-robustness"} <= robust
    # the exactness line: steprelu at t = 1 reproduces the folded ANN on every test image
    step = next(r for r in out["records"] if r["method"] == "steprelu")
    assert step["identical_at_t1"] == step["n_images"] == 300
    summary = (tmp_path / "results" / "summary.md").read_text()
    assert "identical predictions: 300/300" in summary and (tmp_path / "results" / "accuracy_vs_t.png").exists()
    rob = (tmp_path / "results" / "robustness.md").read_text()
    assert "| qcfs |" in rob and "| steprelu |" in rob
    figures = re.findall(r"!\[[^]]*\]\(([^)]+\.png)\)", rob)
    assert figures and all((tmp_path / "results" / png).stat().st_size > 0 for png in figures)
    # the seed's own folder, which the report merges with other seed jobs
    seed0 = tmp_path / "results" / "seeds" / "seed0"
    assert json.loads((seed0 / "records.json").read_text())["records"] == out["records"]
    assert json.loads((seed0 / "manifest.json").read_text())["preset"]["seeds"] == [0]
    from bench import robustness
    assert len(robustness.read_rows(seed0 / "robustness.csv")) == len(robustness.read_rows(
        tmp_path / "results" / "robustness.csv")) > 0


class _Boom(RuntimeError):
    pass


@needs_fashion
def test_resume_after_interruption_neither_loses_nor_duplicates(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path}/resume.db"
    cfg = tiny_cfg("test-resume", methods=("steprelu", "steprelu-single"), extra=["train.epochs=2"])
    import lightning_modules.callbacks as cb
    real_simulate = cb.simulate
    calls = {"n": 0}

    def crashing_simulate(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:  # each method simulates validation, then test: the second method dies
            raise _Boom("simulated crash")
        return real_simulate(*a, **k)
    monkeypatch.setattr(cb, "simulate", crashing_simulate)
    with pytest.raises(_Boom):
        runner.run(cfg, tracking_uri=uri, out_dir=tmp_path / "r", progress=False)
    monkeypatch.setattr(cb, "simulate", real_simulate)
    state = runner.State(runner.seed_dir("test-resume", 0), cfg, 0, resume=True)
    g = state.data["groups"]["seed0/steprelu"]
    assert g["trained"] and [r["method"] for r in g["records"]] == ["steprelu"]

    out = runner.run(cfg, resume=True, tracking_uri=uri, out_dir=tmp_path / "r", progress=False)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("test-resume")
    parents = client.search_runs([exp.experiment_id], "tags.activation != ''")
    assert len(parents) == 1, "resume must log into the same parent run"
    kids = _children(client, exp.experiment_id, parents[0].info.run_id)
    assert sorted(k.data.tags["mlflow.runName"] for k in kids) == ["steprelu-leak1", "steprelu-single-leak1"]
    for k in kids:
        assert len(client.get_metric_history(k.info.run_id, "snn_acc")) == 4
    epochs = client.get_metric_history(parents[0].info.run_id, "val_acc")
    assert sorted(m.step for m in epochs) == sorted(set(m.step for m in epochs)), "val_acc logged twice"
    assert len(out["records"]) == 2



@needs_fashion
def test_resume_skips_a_group_that_finished(tmp_path, monkeypatch, capsys):
    """A seed interrupted in its second ANN group: on --resume the finished first group is
    skipped as a whole (no data module, ANN, training, checkpoint load or simulation for it);
    only the interrupted group runs."""
    uri = f"sqlite:///{tmp_path}/skip.db"
    cfg = tiny_cfg("test-skip", methods=("maxnorm", "steprelu"),
                   extra=["trainer.limit_train_batches=4", "trainer.limit_val_batches=2",
                          "test_subset=100", "calib_size=100", "eval_batch_size=100", "T_max=2",
                          "summary_t=[1,2]", "arch_kwargs={width: 4}", "trainer.threads=1", "seeds=[0]",
                          "val_subset=100"])
    assert list(presets.activation_groups(cfg)) == ["relu", "steprelu"]
    import lightning_modules.callbacks as cb
    real_simulate, real_module, real_load = cb.simulate, runner.ann_module, runner.ANNClassifier.load_from_checkpoint
    built, loaded, simulated, crash = [], [], [], {"on": True}

    def module(cfg, act, info):
        built.append(act)
        return real_module(cfg, act, info)

    def load(path, **kw):
        loaded.append(Path(path).parent.name)      # runs/<preset>/seed0/<activation>/last.ckpt
        return real_load(path, **kw)

    def simulate(snn, *a, **k):
        simulated.append(built[-1] if built else None)
        if crash["on"] and built[-1:] == ["steprelu"]:
            raise _Boom("interrupted in the second group")
        return real_simulate(snn, *a, **k)
    monkeypatch.setattr(runner, "ann_module", module)
    monkeypatch.setattr(runner.ANNClassifier, "load_from_checkpoint", load)
    monkeypatch.setattr(cb, "simulate", simulate)
    with pytest.raises(_Boom):
        runner.run(cfg, tracking_uri=uri, out_dir=tmp_path / "r", progress=False)
    state = runner.State(runner.seed_dir("test-skip", 0), cfg, 0, resume=True)
    assert state.data["groups"]["seed0/relu"]["complete"]
    assert not state.data["groups"]["seed0/steprelu"].get("complete")
    # each method is simulated on the test split, then on validation (where its operating point is chosen)
    assert (built, simulated) == (["relu", "steprelu"], ["relu", "relu", "steprelu"])

    built.clear(), loaded.clear(), simulated.clear()
    crash["on"] = False
    capsys.readouterr()
    out = runner.run(cfg, resume=True, tracking_uri=uri, out_dir=tmp_path / "r", progress=False)
    assert (built, loaded, simulated) == (["steprelu"], ["steprelu"], ["steprelu", "steprelu"])
    assert "seed0/relu: already complete, skipped" in capsys.readouterr().out
    assert sorted(r["method"] for r in out["records"]) == ["maxnorm", "steprelu"]

# ----------------------------------------------------------------------------- the report over seeds

def _record(seed: int, acc: list[float], ann_acc: float) -> dict:
    """A finished conversion as the runner records it (steprelu, leak 1, T_max 2)."""
    return {"method": "steprelu", "leak": 1.0, "seed": seed, "activation": "steprelu", "T_max": 2,
            "ann_acc": ann_acc, "ann_acc_unfolded": ann_acc, "acc": acc, "conv_error": [0.0, 0.01],
            "ops_ratio": [1.0, 2.0], "energy_ratio": [0.5, 1.0], "max_spikes_per_step": 3,
            "identical_at_t1": 100, "n_images": 100, "run_id": f"run{seed}"}


def test_summary_table_shows_mean_and_std_over_seeds():
    cfg = presets.load("smoke", ["T_max=2", "summary_t=[1, 2]", "methods=[steprelu]"])
    accs = {0: [0.8110, 0.8320], 1: [0.8530, 0.8410]}
    anns = {0: 0.8220, 1: 0.8680}
    table = summary.summary_table(cfg, [_record(s, accs[s], anns[s]) for s in (0, 1)])
    row = next(line for line in table.splitlines() if line.startswith("| steprelu |"))
    pairs = [(float(m), float(s)) for m, s in re.findall(r"(\d+\.\d+) ± (\d+\.\d+)", row)]
    for t in (0, 1):  # accuracy at t = 1 and t = 2, in percent, sample std (n - 1)
        vals = [100 * accs[s][t] for s in (0, 1)]
        want = (statistics.mean(vals), statistics.stdev(vals))
        assert any(m == pytest.approx(want[0], abs=0.006) and sd == pytest.approx(want[1], abs=0.006)
                   for m, sd in pairs), f"no {want[0]:.2f} ± {want[1]:.2f} for t = {t + 1} in {row}"


def test_ddp_waits_for_rank_zero_evaluation():
    """Under DDP the other ranks wait while rank 0 simulates every method: the process
    group gets hours, not Lightning's default 30 minutes; other strategies pass through."""
    from datetime import timedelta

    from lightning.pytorch.strategies import DDPStrategy
    s = runner._strategy("ddp")
    assert isinstance(s, DDPStrategy) and s._timeout >= timedelta(hours=4)
    assert runner._strategy("auto") == "auto"
