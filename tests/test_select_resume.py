"""An interrupted ``python -m bench select`` loses at most the candidate in progress: the next
invocation of the same preset at the same commit reuses every finished candidate, and one of
another preset version retrains them all. Training is replaced by a stub that counts calls."""
from __future__ import annotations

import json

import pytest

from bench import presets
from bench.run import select


class Stop(Exception):
    pass


@pytest.fixture
def stubbed(monkeypatch, tmp_path):
    """select.run with a counting stub for training and a fixed validation figure per candidate;
    ``stop_after`` raises (an interruption) once that many candidates have trained."""
    calls = []

    class DM:
        val_set = range(7)

    def train_one(cfg, act, knobs, seed, prec, progress):
        if calls and len(calls) == stub.stop_after:
            raise Stop
        calls.append((act, json.dumps(knobs, sort_keys=True)))
        return None, DM()

    def evaluate_one(cfg, act, module, dm):
        return {"ann_val_acc": 0.5 + 0.01 * len(calls), "learned_thresholds": []}

    monkeypatch.setattr(select, "train_one", train_one)
    monkeypatch.setattr(select, "evaluate_one", evaluate_one)
    monkeypatch.setattr(select.precision, "resolve", lambda *a: ("32-true", "stub"))

    def stub(cfg, stop_after=None):
        stub.stop_after = stop_after
        return select.run(cfg, out=tmp_path / "out", progress=False, runs_dir=tmp_path / "runs")
    stub.calls = calls
    return stub


def _cfg(*overrides):
    return presets.load("cpu-cifar10", list(overrides))


def test_an_interrupted_selection_resumes_where_it_stopped(stubbed):
    cfg = _cfg()
    n = len(select._candidates(cfg))
    with pytest.raises(Stop):
        stubbed(cfg, stop_after=2)
    assert len(stubbed.calls) == 2
    record = stubbed(cfg)
    assert len(stubbed.calls) == n, "the two finished candidates were trained again"
    assert record["reused_candidates"] == 2
    assert [r["label"] for r in record["candidates"]] == [label for _, label, _ in select._candidates(cfg)]


def test_another_preset_version_is_not_reused(stubbed):
    with pytest.raises(Stop):
        stubbed(_cfg(), stop_after=2)
    record = stubbed(_cfg("train.epochs=3"))
    n = len(select._candidates(_cfg()))
    assert len(stubbed.calls) == 2 + n and record["reused_candidates"] == 0
