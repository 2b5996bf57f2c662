"""Spread over seeds (95 % CI), McNemar per seed, and the paired comparisons of the summary."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from annsnn.metrics import bits_correct, correct_bits
from bench import stats
from bench.report import plots, summary
from bench.__main__ import main


def test_ci95_is_the_student_t_interval():
    lo, hi = stats.ci95([1.0, 2.0, 3.0])           # mean 2, sd 1, t(0.975, df 2) = 4.30265 (tables)
    half = 4.30265 / math.sqrt(3)
    assert (lo, hi) == pytest.approx((2 - half, 2 + half), rel=1e-5)
    assert stats.ci95([0.5]) is None


def test_mcnemar_counts_discordant_images_and_exact_p():
    a = np.array([True] * 10 + [True, False] * 5)
    b = np.array([False] * 10 + [True, False] * 5)
    assert stats.mcnemar(a, b) == (10, 0, pytest.approx(2 * 0.5 ** 10))
    assert stats.mcnemar(b, a)[:2] == (0, 10)
    assert stats.mcnemar(a, a) == (0, 0, 1.0)


def test_every_table_writes_p_one_way():
    """An exact p that underflows to 0 is not 0: every table writes "< 0.0001" below 1e-4."""
    assert [stats.fmt_p(p) for p in (1.0, 0.0346, 1e-4, 9.9e-5, 1e-310, 0.0)] == \
        ["1", "0.035", "0.0001", "< 0.0001", "< 0.0001", "< 0.0001"]
    assert (stats.p_clause(0.0346), stats.p_clause(0.0)) == ("p = 0.035", "p < 0.0001")


def test_correctness_bits_round_trip():
    g = torch.Generator().manual_seed(0)
    pred, lab = torch.randint(0, 3, (1001,), generator=g), torch.randint(0, 3, (1001,), generator=g)
    assert np.array_equal(bits_correct(correct_bits(pred, lab), 1001), (pred == lab).numpy())


def _rec(method, seed, ok, exact=False):
    n = len(ok)
    ok = torch.tensor(ok)
    return {"method": method, "leak": 1.0, "seed": seed, "n_images": n, "exact_at_t1": exact,
            "correct_at": {"1": correct_bits(ok.long(), torch.ones(n, dtype=torch.long))}}


def test_record_pairs_pair_seeds_and_steps():
    def rec(method, seed, by_t):
        r = _rec(method, seed, by_t[1])
        r["correct_at"] = {str(t): _rec(method, seed, ok)["correct_at"]["1"] for t, ok in by_t.items()}
        return r
    ref = [rec("steprelu", 0, {1: [1, 1, 1, 0]}), rec("steprelu", 1, {1: [1, 1, 0, 0]})]
    other = [rec("qcfs", 0, {1: [0, 0, 0, 0], 4: [1, 1, 1, 1]}), rec("qcfs", 1, {1: [0, 0, 0, 0], 4: [0, 0, 0, 0]}),
             rec("qcfs", 7, {1: [1, 1, 1, 1]})]
    a, b, missing = stats.record_pairs(ref, 1, other, 4)          # seed 7 has no steprelu: unpaired
    assert sorted(a) == sorted(b) == [0, 1] and not missing
    d = stats.paired_bits(a, b)
    assert d.diff == pytest.approx(100 * ((3 - 4) / 4 + (2 - 0) / 4) / 2)   # mean over seeds of per-seed means
    assert [(s, pos, neg) for s, _, pos, neg, _ in d.per_seed] == [(0, 0, 1), (1, 2, 0)]   # McNemar per seed
    # a step per seed (an operating point): seed 0 at 4, seed 1 at 2 where nothing is stored
    a, b, missing = stats.record_pairs(ref, 1, other, lambda r: 4 if r["seed"] == 0 else 2)
    assert sorted(a) == [0] and missing == [1]


def test_summary_compares_every_method_with_the_exact_one():
    cfg = {"T_max": 1, "methods": ["qcfs", "steprelu"]}
    table = summary.paired_table(cfg, [_rec("steprelu", 0, [1, 1, 1, 0], exact=True),
                                      _rec("qcfs", 0, [1, 0, 0, 0])])
    row = table.splitlines()[2]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:3] == ["qcfs", "1", "1"] and cells[3].startswith("+50.00 [")
    assert cells[4:] == ["0.5", "1 (images only (1 seed))"]          # McNemar: 2 vs 0 discordant


def test_seeds_flag(monkeypatch):
    seen = {}
    monkeypatch.setattr("bench.run.runner.run", lambda cfg, **kw: seen.setdefault("seeds", cfg["seeds"]))
    assert main(["run", "--preset", "smoke", "--seeds", "0,1,2", "--no-progress"]) == 0
    assert seen["seeds"] == [0, 1, 2]


def test_plot_bands_are_the_tables_student_t_intervals_and_render_the_same_twice(tmp_path, monkeypatch):
    """Bands over seeds are stats.ci95 (the tables' interval), not seaborn's bootstrap, whose
    fresh random state redrew every committed figure on every report."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    acc = rng.uniform(0.3, 0.9, size=(8, 3))          # 8 seeds, t = 1..3
    records = [{"method": "qcfs", "leak": 1.0, "seed": s, "acc": list(a), "energy_ratio": [1.0, 2.0, 3.0],
                "ann_acc": 0.9} for s, a in enumerate(acc)]
    cfg = {"name": "x", "dataset": "d", "arch": "a", "seeds": list(range(8))}
    plots.accuracy_plot(cfg, records, tmp_path / "a.png")
    plots.accuracy_plot(cfg, records, tmp_path / "b.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert stats.t_band([0.3]) == (0.3, 0.3)

    with monkeypatch.context() as m:
        m.setattr(plt, "close", lambda *a, **k: None)       # keep the figure to read its band
        plots.accuracy_plot(cfg, records, tmp_path / "c.png")
    fig = plt.gcf()
    band = fig.axes[0].collections[0].get_paths()[0].vertices[:, 1]
    plt.close(fig)                                          # later tests count open figures
    want = [stats.ci95(100 * acc[:, t]) for t in range(3)]
    assert set(np.round(band, 6)) == set(np.round([v for w in want for v in w], 6))   # polygon edges
    assert not plt.get_fignums()
