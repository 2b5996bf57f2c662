"""--deterministic: the command restarts itself with the kernel caps set before torch loads,
and two runs on one machine give the same SHA-256 of the weights after every epoch and of
every SNN's per-image predictions (what anyone on another CPU compares against)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.run import deterministic
from conftest import run_if

REPO = Path(__file__).resolve().parents[1]
TINY = ["train.epochs=2", "val_fraction=0.9", "test_subset=200", "val_subset=100", "calib_size=100",
        "T_max=4", "summary_t=[1,2,4]", "arch_kwargs={width: 4}", "trainer.threads=1",
        "robustness.enabled=false", "methods=[maxnorm, steprelu]"]


def _run(tmp_path: Path, name: str) -> tuple[dict, list[dict]]:
    out = tmp_path / name
    env = {k: v for k, v in os.environ.items() if k not in deterministic.wanted_env(1)}
    env.update(ANNSNN_RUNS_DIR=str(tmp_path / f"runs-{name}"), MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/{name}.db")
    cmd = [sys.executable, "-m", "bench", "run", "--preset", "smoke", "--deterministic", "--no-progress",
           "--out", str(out)] + [a for s in TINY for a in ("--set", s)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "deterministic mode: restarting with" in proc.stdout
    man = json.loads((out / "seeds" / "seed5" / "manifest.json").read_text())
    recs = json.loads((out / "seeds" / "seed5" / "records.json").read_text())["records"]
    return man, recs


@pytest.mark.slow   # covered by the smoke preset: it runs --deterministic, and its reproduction
#                    check compares its hashes with the committed run's (reproduction.md)
@run_if(fashion_mnist=True)
def test_two_deterministic_runs_have_equal_hashes(tmp_path):
    (m1, r1), (m2, r2) = _run(tmp_path, "a"), _run(tmp_path, "b")
    assert m1["machine"]["isa_caps"]["ONEDNN_MAX_CPU_ISA"] == "AVX2" and m1["precision"]["used"] == "32-true"
    w1, w2 = m1["weight_sha256"], m2["weight_sha256"]
    assert set(w1) == {"relu", "steprelu"} and all(len(v) == 2 for v in w1.values())   # per epoch
    assert w1 == w2
    assert [r["predictions_sha256"] for r in r1] == [r["predictions_sha256"] for r in r2]
    assert len({h for v in w1.values() for h in v}) == 4      # the hashes see the training move


def test_the_mode_refuses_a_process_that_loaded_torch_without_the_caps(monkeypatch):
    for k in deterministic.wanted_env(2):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(deterministic.NotPinned, match="before torch loads"):
        deterministic.apply(2)


def test_hashes_see_one_changed_bit():
    import torch
    from annsnn.metrics import sha256_state, sha256_tensor
    m = torch.nn.Linear(3, 2)
    h = sha256_state(m)
    with torch.no_grad():
        m.weight.view(-1)[0] = torch.nextafter(m.weight.view(-1)[0], torch.tensor(2.0))
    assert sha256_state(m) != h
    assert sha256_tensor(torch.tensor([1, 2])) != sha256_tensor(torch.tensor([1, 3]))
