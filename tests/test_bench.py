"""End-to-end pipeline tests: a tiny preset against a real MLflow server, resume, presets."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from bench import presets, runner

FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(not FASHION.exists(),
                                   reason="Fashion-MNIST offline copy missing (apt-get install dataset-fashion-mnist)")

TINY = ["train.epochs=1", "val_fraction=0.9", "test_subset=300", "calib_size=200", "T_max=4",
        "summary_t=[1,2,4]", "arch_kwargs={width: 8}", "trainer.threads=2", "robustness.enabled=false"]
TINY_ROBUSTNESS = ["robustness.enabled=true", "robustness.test_subset=100", "robustness.leaks=[1.0, 0.9]",
                   "robustness.T=[1, 4]", "robustness.snn_attack_subset=50", "robustness.snn_attack_T=[2]",
                   "robustness.pgd_steps=2", "robustness.gaussian_sigma=[0.1]", "robustness.salt_pepper_s=[0.9]",
                   "robustness.fgsm_eps=[0.05]", "robustness.pgd_eps=[0.05]"]


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
def test_tiny_preset_against_mlflow_server(tmp_path, mlflow_server):
    cfg = tiny_cfg("test-server", extra=TINY_ROBUSTNESS)
    out = runner.run(cfg, tracking_uri=mlflow_server, out_dir=tmp_path / "results", progress=False)
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("test-server")
    parents = client.search_runs([exp.experiment_id], "tags.activation != ''")
    assert sorted(r.data.tags["activation"] for r in parents) == ["qcfs", "steprelu"]
    names = set()
    for p in parents:
        for child in _children(client, exp.experiment_id, p.info.run_id):
            name = child.data.tags["mlflow.runName"]
            if name.endswith("-robustness"):
                keys = child.data.metrics
                assert "acc/salt_pepper/s_0.9/dynamic/leak_0.9/T_4" in keys
                assert "acc/ann/fgsm/eps_0.05/static/leak_1/T_1" in keys
                assert "acc/snn-T2/fgsm/eps_0.05/static/leak_1/T_2" in keys
                continue
            names.add(name)
            hist = client.get_metric_history(child.info.run_id, "snn_acc")
            assert [m.step for m in sorted(hist, key=lambda m: m.step)] == [1, 2, 3, 4]
            rec = next(r for r in out["records"] if r["run_id"] == child.info.run_id)
            assert [m.value for m in sorted(hist, key=lambda m: m.step)] == pytest.approx(rec["acc"])
            assert "accuracy_vs_t.png" in [a.path for a in client.list_artifacts(child.info.run_id)]
    assert names == {"qcfs-leak1", "steprelu-leak1", "steprelu-single-leak1"}
    # the exactness line: steprelu at t = 1 reproduces the folded ANN on every test image
    step = next(r for r in out["records"] if r["method"] == "steprelu")
    assert step["identical_at_t1"] == step["n_images"] == 300
    summary = (tmp_path / "results" / "summary.md").read_text()
    assert "identical predictions: 300/300" in summary and (tmp_path / "results" / "accuracy_vs_t.png").exists()
    rob = (tmp_path / "results" / "robustness.md").read_text()
    assert "## T = 4, leak 1" in rob and "steprelu-single" in rob
    for png in ("robustness_noise.png", "robustness_attacks.png", "robustness_leak.png"):
        assert (tmp_path / "results" / png).stat().st_size > 0


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
        if calls["n"] == 2:  # the second conversion dies mid-way
            raise _Boom("simulated crash")
        return real_simulate(*a, **k)
    monkeypatch.setattr(cb, "simulate", crashing_simulate)
    with pytest.raises(_Boom):
        runner.run(cfg, tracking_uri=uri, out_dir=tmp_path / "r", progress=False)
    monkeypatch.setattr(cb, "simulate", real_simulate)
    state = runner.State(runner.PROJECT_ROOT / "runs" / "test-resume" / "state.json", cfg, resume=True)
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


def test_presets_reject_unknown_names():
    with pytest.raises(presets.PresetError, match="valid keys"):
        presets.load("smoke", ["trian.epochs=3"])
    with pytest.raises(presets.PresetError, match="valid: .*steprelu"):
        presets.load("smoke", ["methods=[stepReLU]"])
    with pytest.raises(presets.PresetError, match="valid: .*fashion-mnist"):
        presets.load("smoke", ["dataset=fmnist"])
    with pytest.raises(presets.PresetError, match="valid: .*resnet20"):
        presets.load("smoke", ["arch=resnet50"])
    with pytest.raises(presets.PresetError, match="available: .*smoke"):
        presets.load("no-such-preset")


def test_every_shipped_preset_loads():
    names = presets.available()
    assert "smoke" in names
    for name in names:
        cfg = presets.load(name)
        assert cfg["methods"] and cfg["T_max"] >= 1


def test_cli_reports_bad_preset_key():
    proc = subprocess.run([sys.executable, "-m", "bench", "run", "--preset", "smoke", "--set", "bogus=1"],
                          capture_output=True, text=True, cwd=runner.PROJECT_ROOT)
    assert proc.returncode == 2 and "unknown preset key 'bogus'" in proc.stderr
