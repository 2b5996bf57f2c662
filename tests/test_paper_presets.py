"""Every paper preset starts: its dry run (bench/run/dry_run.py) completes on tiny fake data.

The paper presets are written for GPUs and run for days; a typo in one would surface
only after a queue wait on a cluster. So each bench/presets/paper-*.yaml (found by glob:
a new one is covered with no edit here) runs through the real CLI, in a subprocess as a
user would start it, with tiny data in the real on-disk formats (tests/fakedata.py):
2 training batches, then every listed method converted and simulated on 2 batches at
T = 2, logged to MLflow. One also runs under DDP with two CPU processes (gloo), where
rank 0 alone must convert, simulate and log.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import fakedata
from bench import presets
from bench.run import dry_run

REPO = Path(__file__).resolve().parents[1]
PAPER_PRESETS = sorted(p.stem for p in presets.PRESET_DIR.glob("paper-*.yaml"))
DDP_PRESET = "paper-cifar10-resnet20"   # the cheapest paper net; DDP is about the split, not the net
DDP = ["--set", "trainer.devices=2", "--set", "trainer.strategy=ddp"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return fakedata.write_all(tmp_path_factory.mktemp("data"))


def _dry_run(preset: str, data_dir: Path, tmp: Path, extra: list[str] = ()) -> tuple[str, Path, str]:
    """Run the dry run in ``tmp`` (its own MLflow database, runs/ and results); returns
    (tracking URI, results folder, output of every rank)."""
    uri, out = f"sqlite:///{tmp / 'mlflow.db'}", tmp / "results"
    env = {**os.environ, "PYTHONPATH": str(REPO), "ANNSNN_RUNS_DIR": str(tmp / "runs"),
           "ANNSNN_CACHE": str(tmp / "cache")}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [sys.executable, str(REPO / "tests" / "fakedata.py"), "run", "--preset", preset,
           "--dry-run", "--data-dir", str(data_dir), "--tracking-uri", uri, "--out", str(out),
           "--no-progress", *extra]
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=900)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"dry run of {preset} failed (rc {proc.returncode}):\n{log[-6000:]}"
    # rank 0's exit status says nothing of a DDP rank that failed after rank 0 finished
    assert "Traceback" not in log, f"dry run of {preset}: a process failed:\n{log[-6000:]}"
    return uri, out, log


def _check_completed(preset: str, uri: str, out: Path, extra: list[str] = ()) -> None:
    """MLflow holds one finished parent run per trained ANN, and under it one finished run per
    (method, leak) with ``snn_acc`` at steps 1 and 2; the results name every method."""
    sets = [a for a in extra if a != "--set"]
    cfg = presets.load(preset, dry_run.overrides(presets.load(preset, sets)) + sets)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(cfg["name"])
    assert exp is not None, f"no MLflow experiment {cfg['name']!r}"
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = {r.info.run_id: r for r in runs if "mlflow.parentRunId" not in r.data.tags
               and r.data.tags.get("kind") != "comparison"}   # compare-seed<k>: all methods, one run
    assert any(r.data.tags.get("kind") == "comparison" for r in runs), "no compare-seed<k> run"
    assert len(parents) == len(presets.activation_groups(cfg)), sorted(r.info.run_name for r in runs)
    for p in parents.values():
        assert p.info.status == "FINISHED", p.info.run_name
        assert "train_loss" in p.data.metrics and "val_acc" in p.data.metrics, p.info.run_name
    for method in cfg["methods"]:
        mine = [r for r in runs if r.data.tags.get("method") == method
                and r.data.tags.get("mlflow.parentRunId") in parents
                and "snn_acc" in r.data.metrics]
        assert len(mine) == len(cfg["leaks"]), f"{method}: {len(mine)} runs with snn_acc"
        for r in mine:
            assert r.info.status == "FINISHED", (method, r.info.run_name)
            steps = sorted(m.step for m in client.get_metric_history(r.info.run_id, "snn_acc"))
            assert steps == [1, 2], (method, steps)
    results = list(out.rglob("results.json"))
    assert results, f"no results.json under {out}"
    records = json.loads(results[0].read_text())
    assert {r["method"] for r in records} == set(cfg["methods"])
    assert all(len(r["acc"]) == 2 for r in records)
    if cfg["robustness"]["enabled"]:
        assert list(out.rglob("robustness.md")), f"robustness enabled but no robustness.md under {out}"


# The two heaviest dry runs (VGG-16 on CIFAR-100, ResNet-34 at 224 px) stay out of the default
# run to keep it within CI's time; ./reproduce.sh dry-runs runs every paper preset's dry run.
HEAVY = {"paper-cifar100-vgg16", "paper-imagenet-resnet34"}


@pytest.mark.parametrize("preset", [pytest.param(p, marks=pytest.mark.slow) if p in HEAVY else p
                                    for p in PAPER_PRESETS])
def test_paper_preset_dry_run(preset, data_dir, tmp_path):
    uri, out, _ = _dry_run(preset, data_dir, tmp_path)
    _check_completed(preset, uri, out)


def test_paper_preset_dry_run_ddp(data_dir, tmp_path):
    """Two gloo processes train; rank 0 alone evaluates, so every setting is logged once."""
    uri, out, log = _dry_run(DDP_PRESET, data_dir, tmp_path, DDP)
    assert "[rank: 1]" in log, "no second process started"
    _check_completed(DDP_PRESET, uri, out, DDP)


def test_paper_presets_found():
    """The glob sees the four paper presets (a renamed folder would otherwise test nothing)."""
    assert len(PAPER_PRESETS) >= 4, PAPER_PRESETS
