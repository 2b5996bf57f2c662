"""No silent deletion and seeds as independent jobs:
one job per seed folder at a time, named when it blocks another; a dead holder's lock is
taken over with a message; a fresh run says which earlier run's checkpoints it replaces;
two jobs with different seeds of one preset run side by side and the report merges them."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bench.run.state import LockBusy, RunLock, State
from conftest import REPO, run_if
from test_resume import NAME, bench, finish, state

HOLD = textwrap.dedent("""
    import sys, time
    from bench.run.state import RunLock
    RunLock(sys.argv[1], what="holder").acquire()
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
""")


def hold(folder: Path, seconds: float) -> subprocess.Popen:
    """Another process that takes the folder's lock and keeps it ``seconds``."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), str(seconds)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_held_seed_is_refused_naming_its_holder_and_a_dead_one_taken_over(tmp_path, capsys):
    holder = hold(tmp_path, 60)
    try:
        with pytest.raises(LockBusy) as exc:
            RunLock(tmp_path).acquire()
        msg = exc.value.message
        assert f"pid {holder.pid} on " in msg and ", holder)" in msg and "\n" not in msg
    finally:
        holder.kill()   # SIGKILL: no release; the record of the holder stays in the file
        holder.wait()
    with RunLock(tmp_path):
        out = capsys.readouterr().out
        assert f"taking over the stale lock of {tmp_path} from pid {holder.pid}" in out
        assert "no longer running" in out
    with RunLock(tmp_path):   # released cleanly: nothing to take over
        assert "stale" not in capsys.readouterr().out


def test_waiting_for_a_held_seed_starts_when_it_is_released(tmp_path, capsys):
    holder = hold(tmp_path, 2)
    t = time.time()
    with RunLock(tmp_path, wait=True):
        assert time.time() - t > 0.5
    holder.wait()
    assert f"waiting for {tmp_path}: held by pid {holder.pid}" in capsys.readouterr().out


def test_a_fresh_run_says_what_it_replaces_and_keeps_the_lock(tmp_path, capsys):
    cfg = {"name": "p", "seeds": [0]}
    with RunLock(tmp_path):
        old = State(tmp_path, cfg, 0, resume=False)
        old.group("seed0/relu").update(run_id="abc123", complete=True)
        old.save()
        ckpt = tmp_path / "relu" / "last.ckpt"
        ckpt.parent.mkdir()
        ckpt.write_bytes(b"weights")
        capsys.readouterr()
        State(tmp_path, cfg, 0, resume=False)
        out = capsys.readouterr().out
        assert "replaces the finished run started" in out and "seed0/relu abc123" in out
        assert str(ckpt) in out and not ckpt.exists()
        assert (tmp_path / "lock").exists()
        resumed = State(tmp_path, dict(cfg, seeds=[0, 1]), 0, resume=True)   # seeds aside: same preset
        assert resumed.data["segments"] == 2 and "replaces" not in capsys.readouterr().out


def _stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "T"


@run_if(fashion_mnist=True)
def test_two_jobs_of_one_seed_and_two_seeds_side_by_side(tmp_path):
    """Job A (seed 0) stops at its first batch, holding seed 0. A second job of seed 0 fails
    in one line naming A and leaves A's files alone; a job of seed 1 runs meanwhile. After
    A dies, ``--resume`` takes its lock over, finishes seed 0, and the report merges both."""
    a = bench(tmp_path, signal_at="STOP@0:0")
    deadline = time.time() + 300
    while not _stopped(a.pid):
        assert a.poll() is None and time.time() < deadline, "job A did not reach its first batch"
        time.sleep(0.2)
    try:
        seed0 = tmp_path / "runs" / NAME / "seed0"
        before = {p: p.stat().st_mtime_ns for p in seed0.rglob("*")}
        b, other_seed = bench(tmp_path), bench(tmp_path, seeds="1")
        out = finish(b, 1)
        last = out.strip().splitlines()[-1]
        assert "in use by another run" in last and f"pid {a.pid} " in last and "seed 0" in last
        assert "Traceback" not in out
        finish(other_seed)
        assert {p: p.stat().st_mtime_ns for p in seed0.rglob("*")} == before, "job B touched A's files"
        assert (tmp_path / "out" / "seeds" / "seed1" / "records.json").exists()
    finally:
        os.kill(a.pid, signal.SIGKILL)
        a.wait()
    out = finish(bench(tmp_path, "--resume"))
    assert f"taking over the stale lock of {seed0} from pid {a.pid}" in out
    assert state(tmp_path)["groups"]["seed0/steprelu"]["epochs"] == 3
    merged = json.loads((tmp_path / "out" / "results.json").read_text())
    assert sorted({r["seed"] for r in merged}) == [0, 1]
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert man["seeds"] == [0, 1]


def test_resume_takes_a_resized_robustness_block_only_before_the_stage_measured(tmp_path, capsys):
    """A seed stopped before its robustness stage resumes under a resized robustness block
    (training and conversion do not read it); once one unit is kept, a changed block refuses."""
    cfg = {"name": "p", "seeds": [0], "epochs": 3, "robustness": {"noise_images": 500}, "description": "a"}
    resized = dict(cfg, robustness={"noise_images": 200}, description="b")   # words may change too
    with RunLock(tmp_path):
        State(tmp_path, cfg, 0, resume=False)
        resumed = State(tmp_path, resized, 0, resume=True)
        assert "the robustness block changed" in capsys.readouterr().out
        assert resumed.data["preset"] == resized
        with pytest.raises(SystemExit, match="preset differs"):   # the rest of the preset still binds
            State(tmp_path, dict(resized, epochs=4), 0, resume=True)
        resumed.data["robustness"] = {"units": {"clean/qcfs": {"rows": [], "wall_s": 1.0, "points": None}}}
        resumed.save()
        with pytest.raises(SystemExit, match="preset differs"):
            State(tmp_path, cfg, 0, resume=True)
        assert State(tmp_path, resized, 0, resume=True).data["robustness"]["units"]
