"""Resume that resumes: a tiny preset killed in its second of three epochs,
resumed, and compared with the same preset run without interruption.

The runs are real processes (``python -m bench run``); ``ANNSNN_TEST_SIGNAL`` (bench/run/resume.py)
makes one send itself a signal at a chosen point. Each run has its own runs folder, MLflow
store and results folder, so the interrupted and the uninterrupted run go side by side.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import torch
from mlflow.tracking import MlflowClient

from bench.run.resume import TEST_SIGNAL_ENV
from conftest import REPO, run_if

needs_fashion = run_if(fashion_mnist=True)

NAME = "tiny-resume"
# three epochs of 4 batches, 2 validation batches, one method at T = 2 on 100 test images
FAST = ["train.epochs=3", "val_fraction=0.1", "trainer.limit_train_batches=4", "trainer.limit_val_batches=2",
        "test_subset=100", "calib_size=100", "eval_batch_size=100", "T_max=2", "summary_t=[1,2]",
        "arch_kwargs={width: 4}", "trainer.threads=1", "robustness.enabled=false", "methods=[steprelu]",
        f"name={NAME}"]


def bench(folder: Path, *args: str, signal_at: str | None = None, seeds: str = "0") -> subprocess.Popen:
    """``python -m bench run`` of the tiny preset with its own runs folder, store and results."""
    env = {k: v for k, v in os.environ.items() if k != TEST_SIGNAL_ENV}
    env.update(ANNSNN_RUNS_DIR=str(folder / "runs"), MLFLOW_TRACKING_URI=f"sqlite:///{folder}/mlflow.db",
               PYTHONUNBUFFERED="1")
    if signal_at:
        env[TEST_SIGNAL_ENV] = signal_at
    cmd = [sys.executable, "-m", "bench", "run", "--preset", "smoke", "--no-progress", "--seeds", seeds,
           "--out", str(folder / "out")] + [a for s in FAST for a in ("--set", s)] + list(args)
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def finish(proc: subprocess.Popen, rc: int = 0) -> str:
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == rc, f"exit {proc.returncode}, wanted {rc}:\n{out[-4000:]}"
    return out


def state(folder: Path, seed: int = 0) -> dict:
    return json.loads((folder / "runs" / NAME / f"seed{seed}" / "state.json").read_text())


def checkpoint(folder: Path) -> dict:
    return torch.load(folder / "runs" / NAME / "seed0" / "steprelu" / "last.ckpt", map_location="cpu",
                      weights_only=False)


def repeated_steps(folder: Path) -> dict[str, list[int]]:
    """(run name, metric) -> the steps logged more than once, over every run of the store."""
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    exp = client.get_experiment_by_name(NAME)
    bad = {}
    for run in client.search_runs([exp.experiment_id]):
        for key in run.data.metrics:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            if len(steps) != len(set(steps)):
                bad[f"{run.data.tags['mlflow.runName']}: {key}"] = sorted(steps)
    return bad


def history(folder: Path, key: str) -> list[tuple[int, float]]:
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    exp = client.get_experiment_by_name(NAME)
    parent = client.search_runs([exp.experiment_id], "tags.activation = 'steprelu'")
    assert len(parent) == 1, "one parent run per ANN, resumed into, not a second one"
    return sorted((m.step, m.value) for m in client.get_metric_history(parent[0].info.run_id, key))


def records(folder: Path) -> list[dict]:
    recs = json.loads((folder / "out" / "seeds" / "seed0" / "records.json").read_text())["records"]
    return [{k: v for k, v in r.items() if k != "run_id"} for r in recs]


def wall_line(out: str) -> tuple[float, float]:
    m = re.search(r"wall time (\d+) s .*\(this segment (\d+) s\)", out)
    assert m, out[-2000:]
    return float(m.group(1)), float(m.group(2))


@needs_fashion
def test_sigkill_in_epoch_2_then_resume_equals_an_uninterrupted_run(tmp_path):
    ref, cut = tmp_path / "uninterrupted", tmp_path / "interrupted"
    # killed in epoch 2 of 3, after its validation metrics reached MLflow and before its
    # checkpoint: the resumed run retrains epoch 2 and must not log its steps again
    procs = [bench(ref), bench(cut, signal_at="KILL@1:val")]
    finish(procs[0])
    finish(procs[1], -signal.SIGKILL)
    killed = state(cut)
    g = killed["groups"]["seed0/steprelu"]
    assert g["epochs"] == 1 and not g.get("trained"), "the epoch-1 checkpoint is the last one written"
    assert checkpoint(cut)["epoch"] == 0 and checkpoint(cut)["global_step"] == 4
    assert len(history(cut, "val_acc")) == 2, "epoch 2's validation was logged before the kill"

    out = finish(bench(cut, "--resume"))
    assert "resuming training from" in out
    for folder in (ref, cut):
        assert state(folder)["groups"]["seed0/steprelu"]["epochs"] == 3
        assert checkpoint(folder)["global_step"] == 12, "3 epochs x 4 batches"
        assert repeated_steps(folder) == {}
    # the same training: every epoch's validation accuracy, the final weights, the tables
    assert history(cut, "val_acc") == history(ref, "val_acc")
    assert [s for s, _ in history(cut, "val_acc")] == [3, 7, 11]  # Lightning: step of the last batch
    a, b = checkpoint(ref)["state_dict"], checkpoint(cut)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert records(cut) == records(ref)
    assert state(cut)["segments"] == 2
    total, this = wall_line(out)
    assert abs(total - (killed["elapsed"] + this)) <= 1.5, "the wall time adds both segments"


@needs_fashion
def test_sigterm_saves_where_it_stopped_and_resume_finishes(tmp_path):
    """SLURM preemption: SIGTERM mid-epoch writes last.ckpt there; the resumed run trains the
    rest (not bit-identical: Lightning restarts the epoch's loader) and logs each step once."""
    out = finish(bench(tmp_path, signal_at="TERM@1:2"), 1)
    assert "SIGTERM: saved" in out and "--resume" in out.splitlines()[-1]
    # the signal arrives before batch 2 of epoch 2; Lightning finishes that batch, then stops
    assert checkpoint(tmp_path)["global_step"] == 7, "saved after epoch 1 (4 steps) and 3 of epoch 2"
    finish(bench(tmp_path, "--resume"))
    assert checkpoint(tmp_path)["global_step"] == 12
    assert [s for s, _ in history(tmp_path, "val_acc")] == [3, 7, 11]
    assert repeated_steps(tmp_path) == {}
