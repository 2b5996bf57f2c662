"""The reproduction check: a user's run against the committed reference of its preset.

A run drawn like the reference's seeds passes; a run shifted by more than the seeds'
spread is caught; the tolerance is the reference's prediction interval for one new seed,
never a hand-set number; a one-seed preset borrows the spread of the same setting."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.report import reproduction
from bench.report import seeds as seeds_io

T = 8


def _record(method, seed, acc_t1, exact=False, n=1000):
    """A record whose accuracy rises from acc_t1 to the ANN's 0.90 by t = 8 (validation alike)."""
    acc = list(np.linspace(acc_t1, 0.90, T))
    return {"method": method, "activation": method, "seed": seed, "leak": 1.0, "T_max": T, "n_images": n,
            "acc": acc, "ann_acc": 0.90, "ann_acc_unfolded": 0.90, "val_acc": acc, "val_ann_acc": 0.90,
            "identical_at_t1": n if exact else None, "exact_at_t1": exact, "conv_error": [0.0] * T,
            "max_spikes_per_step": 1, "max_n_per_layer": {"a": 1}, "first_layer_macs": 1.0, "ann_macs": 10.0,
            "sops": [1.0] * T, "ops_ratio": [0.1] * T, "energy_ratio": [0.1] * T, "description": method}


def _cfg(name, seeds, **kw):
    return {"name": name, "description": "", "dataset": "fashion-mnist", "arch": "cnn-small",
            "methods": ["qcfs", "steprelu"], "seeds": seeds, "T_max": T, "summary_t": [1, 2, 4, 8],
            "train": {"epochs": 1}, "trainer": {"accelerator": "cpu"}, "robustness": {"enabled": False}, **kw}


def _write(folder: Path, cfg: dict, seed: int, qcfs_t1: float, exact_ok=True):
    d = folder / "seeds" / f"seed{seed}"
    d.mkdir(parents=True)
    recs = [_record("qcfs", seed, qcfs_t1), _record("steprelu", seed, 0.90, exact=True)]
    if not exact_ok:
        recs[1]["identical_at_t1"] = 999
    (d / "records.json").write_text(json.dumps({"seed": seed, "records": recs}))
    (d / "manifest.json").write_text(json.dumps({"preset": dict(cfg, seeds=[seed]), "git_commit": "a" * 40,
                                                 "seeds": [seed], "wall_seconds": 1.0,
                                                 "date_utc": "2026-01-01T00:00:00Z", "machine": {"cpus": 2}}))


REF_T1 = (0.30, 0.32, 0.29, 0.31, 0.33)   # the reference's five seeds: mean 0.31, std 0.0158


@pytest.fixture
def results(tmp_path):
    """results/ with a five-seed reference and a one-seed preset of the same setting."""
    res = tmp_path / "results"
    for k, a in enumerate(REF_T1):
        _write(res / "ref5", _cfg("ref5", [k]), k, a)
    _write(res / "one", _cfg("one", [5], description="the one-seed preset"), 5, 0.31)
    return res


def _check(results, qcfs_t1, tmp_path, exact_ok=True, verdicts=None):
    mine = tmp_path / "mine"
    _write(mine, _cfg("one", [7]), 7, qcfs_t1, exact_ok)
    committed = seeds_io.load(results / "one")
    return reproduction.check(seeds_io.load(mine), committed, results,
                              verdicts=verdicts or (lambda run: {"claim": "supported"}))


def test_prediction_interval_is_the_t_interval_for_one_new_draw():
    m, s, lo, hi = reproduction.prediction_interval(REF_T1)
    from scipy import stats
    half = stats.t.ppf(0.975, 4) * np.std(REF_T1, ddof=1) * np.sqrt(1 + 1 / 5)
    assert m == pytest.approx(0.31) and (lo, hi) == pytest.approx((m - half, m + half))
    assert reproduction.prediction_interval([0.3]) is None


def test_a_run_like_the_reference_passes(results, tmp_path):
    text, ok, printed = _check(results, 0.315, tmp_path)
    assert ok, text
    assert "figures inside the reference's 95 % prediction interval; verdicts: 1 of 1 the same" in printed
    assert "Spread from results/ref5/ (5 seeds, the same setting as one)" in text


def test_a_shifted_run_is_caught(results, tmp_path):
    # one point above the reference's mean is ~2 of its 95 % half-widths (0.049) away... 0.40 is far out
    text, ok, printed = _check(results, 0.40, tmp_path)
    assert not ok
    assert "| qcfs | SNN acc t=1 % | 7 | 40.00 |" in printed and "**no**" in printed


def test_a_broken_exactness_is_caught(results, tmp_path):
    _, ok, printed = _check(results, 0.31, tmp_path, exact_ok=False)
    assert not ok and "identical at t=1" in printed


def test_a_changed_verdict_is_caught(results, tmp_path):
    seen = []

    def verdicts(run):
        seen.append(run.name)
        return {"claim": "supported" if len(seen) == 2 else "not supported"}   # mine first, committed second
    _, ok, printed = _check(results, 0.31, tmp_path, verdicts=verdicts)
    assert not ok and "verdicts: 0 of 1 the same" in printed


def test_no_same_setting_reference_means_nothing_checked(tmp_path):
    res = tmp_path / "results"
    _write(res / "one", _cfg("one", [5]), 5, 0.31)
    _write(res / "other", _cfg("other", [0], T_max=4), 0, 0.31)   # a different setting
    mine = tmp_path / "mine"
    _write(mine, _cfg("one", [7]), 7, 0.31)
    text, ok, _ = reproduction.check(seeds_io.load(mine), seeds_io.load(res / "one"), res,
                                     verdicts=lambda run: {})
    assert not ok and "not checked" in text


def test_the_committed_seed_is_checked_around_its_own_figure(results, tmp_path):
    """A user running the one-seed preset's own seed (smoke's 5) is not a new seed: the committed
    figure is the centre, the borrowed spread the width (x sqrt 2). The committed one-seed run
    sits at 0.40 here, far outside the reference's interval for a new seed."""
    import shutil
    shutil.rmtree(results / "one")
    _write(results / "one", _cfg("one", [5]), 5, 0.40)
    mine = tmp_path / "mine"
    _write(mine, _cfg("one", [5]), 5, 0.40)          # the same seed, the same figures
    committed = seeds_io.load(results / "one")
    text, ok, printed = reproduction.check(seeds_io.load(mine), committed, results,
                                           verdicts=lambda run: {"claim": "supported"})
    assert ok, text
    assert "| qcfs | SNN acc t=1 % | 5 | 40.00 | 40.00 (committed, seed 5); s 1.58 |" in text
    # shifted from its committed figure by more than t(0.975, 4) * s * sqrt(2) = 6.2 points: caught
    shutil.rmtree(mine)
    _write(mine, _cfg("one", [5]), 5, 0.47)
    _, ok, printed = reproduction.check(seeds_io.load(mine), committed, results,
                                        verdicts=lambda run: {"claim": "supported"})
    assert not ok and "| qcfs | SNN acc t=1 % | 5 | 47.00 |" in printed
    # and a new seed (7) with the same figure 0.40 is judged against the reference's mean: a miss
    shutil.rmtree(mine)
    _write(mine, _cfg("one", [7]), 7, 0.40)
    _, ok, _ = reproduction.check(seeds_io.load(mine), committed, results, verdicts=lambda run: {"claim": "supported"})
    assert not ok


def test_an_operating_point_no_reference_seed_reached_is_not_checked(results, tmp_path):
    """Every reference seed 'not by T_max' (counted T_max + 1) has no spread to speak of: a run
    that reaches it is not a miss against a zero-width interval, it is not checked."""
    ref = seeds_io.load(results / "ref5")
    for r in ref.records:
        if r["method"] == "qcfs":
            r["val_acc"] = [0.5] * T                  # never within a point of 0.90
    mine = tmp_path / "mine"
    _write(mine, _cfg("ref5", [7]), 7, 0.31)
    figs = reproduction.check_figures(seeds_io.load(mine), ref)
    ops = [f for f, _ in figs if f.method == "qcfs" and f.what.startswith("operating t")]
    assert ops and all(f.inside is None for f in ops)
    assert all(f.inside for f, _ in figs if f.method == "qcfs" and f.what.startswith("SNN acc"))
