"""The rules behind results/README.md's verdicts, each pinned on constructed data where the
verdict flips exactly at its threshold: the hierarchical bootstrap (seeds, then images), the
family's Bonferroni correction, the noise claim's threshold, the leak's two lines, the
pairing at equal binary sub-steps, the gradient-masking gate and the independence of presets.
Everything is built by hand from per-image correctness vectors (seconds, no training)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats as sps

from annsnn.metrics import correct_bits, pack_bits
from bench import paper, robustness, stats
from bench.report import claims
from bench.report import seeds as seeds_io
from bench.robustness import verdicts
from bench.robustness.groups import AUTHORS

N = 1000
M_MINUS = 20     # images only the competitor gets right, in every constructed comparison


def _ok(n_right: int, n: int = N) -> np.ndarray:
    ok = np.zeros(n, dtype=bool)
    ok[:n_right] = True
    return ok


def _pair(m_plus: int, m_minus: int = M_MINUS, n: int = N, common: int = 800) -> tuple[np.ndarray, np.ndarray]:
    """(a, b): both right on ``common`` images, only a on m_plus, only b on m_minus."""
    a, b = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    a[:common] = b[:common] = True
    a[common:common + m_plus] = True
    b[common + m_plus:common + m_plus + m_minus] = True
    return a, b


def _row(**kw):
    base = dict(seed=0, family="clean", method="m", source="-", attack="clean", mode="-", level=0.0, leak=1.0,
                leak_mode="-", point="T_op", T=1, n=0, acc=0.0, correct="", note="", wall_s=1.0)
    ok = kw.pop("ok", None)
    base.update(kw)
    if ok is not None:
        ok = np.asarray(ok, dtype=bool)
        base.update(n=len(ok), acc=float(ok.mean()), correct=pack_bits(ok))
    return base


RC = {"authors_s": 0.95, "authors_p": 0.5, "common_source": "relu"}


# -- the bootstrap ----------------------------------------------------------------------------

def test_bootstrap_is_deterministic_and_its_level_is_one_minus_alpha_over_k():
    d = np.r_[np.ones(60), -np.ones(20), np.zeros(920)]
    a, b = stats.paired_diff({0: d}, 3), stats.paired_diff({0: d.copy()}, 3)
    assert (a.lo, a.hi, a.diff) == (b.lo, b.hi, b.diff) and a.diff == pytest.approx(4.0)
    assert a.level == pytest.approx(1 - 0.05 / 3) and a.k == 3 and a.kind == "images only (1 seed)"
    wide, narrow = stats.paired_diff({0: d}, 10), stats.paired_diff({0: d}, 1)
    assert wide.lo < narrow.lo and wide.hi > narrow.hi
    # images only: close to the normal interval of a mean of 1000 per-image differences
    se = d.std(ddof=0) / np.sqrt(len(d))
    z = sps.norm.ppf(1 - 0.05 / 2)
    assert (narrow.lo, narrow.hi) == pytest.approx((100 * (d.mean() - z * se), 100 * (d.mean() + z * se)), abs=0.25)
    # every tail beyond a corrected interval holds at least TAIL_DRAWS draws
    for k in (1, 4, 50, 112):
        assert stats.n_boot(k) * stats.ALPHA / (2 * k) >= stats.TAIL_DRAWS and stats.n_boot(k) >= stats.B_MIN


def test_multinomial_counts_draw_what_resampling_images_one_by_one_draws():
    rng = np.random.default_rng(1)
    per_seed = [rng.choice([-1.0, 0.0, 1.0], size=300, p=[0.1, 0.7, 0.2]) for _ in range(3)]
    fast = stats.hierarchical_bootstrap(per_seed, 4000, seed=0)
    naive = []
    for _ in range(4000):
        drawn = rng.integers(0, 3, size=3)
        naive.append(np.mean([per_seed[s][rng.integers(0, 300, size=300)].mean() for s in drawn]))
    naive = np.asarray(naive)
    assert fast.mean() == pytest.approx(naive.mean(), abs=0.004)
    assert fast.std() == pytest.approx(naive.std(), rel=0.08)
    assert np.quantile(fast, [0.05, 0.95]) == pytest.approx(np.quantile(naive, [0.05, 0.95]), abs=0.01)


def test_seeds_are_the_unit_not_images_pooled_over_seeds():
    """Two seeds that disagree: each seed's McNemar is tiny, but the difference over seeds is
    nothing the seeds agree on; the interval spans both seeds' values (+-10 points)."""
    up, down = _pair(100, 0), _pair(0, 100)
    d = stats.paired_bits({0: up[0], 1: down[0]}, {0: up[1], 1: down[1]})
    assert d.diff == pytest.approx(0.0) and d.kind == "seeds, then images"
    assert all(p < 1e-4 for *_, p in d.per_seed)
    assert d.lo == pytest.approx(-10, abs=1.5) and d.hi == pytest.approx(10, abs=1.5) and not d.significant
    # McNemar per seed is the sign test of the per-image differences
    assert d.per_seed[0][2:] == (100, 0, pytest.approx(sps.binomtest(0, 100, 0.5).pvalue))


# -- (c) the noise claim's threshold ----------------------------------------------------------

def _noise_rows(m_plus: int) -> list[dict]:
    """steprelu and qcfs, clean: both right on every image; under the authors' noise: both right on
    800, only steprelu on m_plus, only qcfs on 20. Retention equals absolute here (clean is all right)."""
    a, b = _pair(m_plus)
    return [_row(method=m, ok=np.ones(N, bool)) for m in ("steprelu", "qcfs")] + \
        [_row(family="noise", attack=AUTHORS, mode="static", level=0.95, method=m, ok=ok)
         for m, ok in (("steprelu", a), ("qcfs", b))]


def test_noise_verdict_flips_where_the_corrected_interval_leaves_zero():
    """One baseline, two readings: k = 2, intervals at 97.5 %. 38 images against 20 is the first
    count whose interval excludes 0 (37: its lower bound is 0.0). Under p < 0.5 (or no correction)
    37 would already count: this test fails for either mistake."""
    cfg = {"methods": ["qcfs", "steprelu"], "robustness": RC}
    just_in, just_out = verdicts.noise(cfg, _noise_rows(37)), verdicts.noise(cfg, _noise_rows(38))
    assert just_in.k == just_out.k == 2
    assert just_in.verdict == paper.NOT_SUPPORTED and just_out.verdict == paper.SUPPORTED
    d_in, _, _ = verdicts.noise_readings(_noise_rows(37), "steprelu", "qcfs", 2, attack=AUTHORS)
    d_out, _, _ = verdicts.noise_readings(_noise_rows(38), "steprelu", "qcfs", 2, attack=AUTHORS)
    assert d_in.lo <= 0 < d_in.hi and d_out.lo > 0
    # the threshold is the normal theory's at z(1 - 0.05 / (2 k)), within one image
    z = sps.norm.ppf(1 - 0.05 / 4)
    first = next(m for m in range(20, 80) if (m - 20) / N - z * np.sqrt(((m + 20) / N - ((m - 20) / N) ** 2) / N) > 0)
    assert abs(first - 38) <= 1


def test_noise_retention_leaves_clean_accuracy_out_and_ablations_are_not_judged():
    """steprelu more accurate under noise only because it is more accurate clean: absolute says
    ahead, retention (the drop from clean, per image) says equal, so not supported. An ablation
    that is far worse does not enter the verdict."""
    lead = _ok(900)
    rows = [_row(method="steprelu", ok=lead), _row(method="qcfs", ok=_ok(800)),
            _row(method="steprelu-single", ok=_ok(900)),
            _row(family="noise", attack=AUTHORS, mode="static", method="steprelu", ok=_ok(850)),
            _row(family="noise", attack=AUTHORS, mode="static", method="qcfs", ok=_ok(750)),
            _row(family="noise", attack=AUTHORS, mode="static", method="steprelu-single", ok=_ok(100))]
    cfg = {"methods": ["qcfs", "steprelu", "steprelu-single"], "robustness": RC}
    c = verdicts.noise(cfg, rows)
    ab, rt, _ = verdicts.noise_readings(rows, "steprelu", "qcfs", c.k, attack=AUTHORS)
    assert ab.above() and rt.diff == pytest.approx(0.0) and not rt.significant
    assert c.k == 2 and c.verdict == paper.NOT_SUPPORTED and "retention" in c.why
    assert any("steprelu-single | no (ablation: shown)" in line for line in c.lines)


# -- (a) the family's correction --------------------------------------------------------------

def _leak_rows(m_plus_at_T2: int) -> list[dict]:
    """steprelu, leak 0.9 (exp) against leak 1 at T = 2, 4, 8, 16: four settings, k = 4; only T = 2
    differs (m_plus images only the leak gets right, 20 only leak 1), clean alike everywhere."""
    rows = []
    for t in (2, 4, 8, 16):
        a, b = _pair(m_plus_at_T2 if t == 2 else 0, 20 if t == 2 else 0)
        for attack, level in (("clean", 0.0), (AUTHORS, 0.95)):
            base, leak = (b, a) if attack == AUTHORS else (np.ones(N, bool), np.ones(N, bool))
            common = dict(family="leak", method="steprelu", attack=attack, mode="static", level=level,
                          point=f"T_{t}", T=t)
            rows += [_row(ok=base, **common), _row(ok=leak, leak=0.9, leak_mode="exp", **common)]
    return rows + [_row(method="steprelu", point="T_1", ok=np.ones(N, bool))]


def test_leak_improvement_needs_the_interval_corrected_for_every_setting_tried():
    """37 images against 20 at T = 2 clear 0 at 95 % (k = 1: the first count that does is 36) but not at
    98.75 % (k = 4: 39). A verdict that divided alpha by 1 would call 37 supported."""
    cfg = {"methods": ["steprelu"], "robustness": RC}
    assert stats.paired_diff({0: np.r_[np.ones(37), -np.ones(20), np.zeros(N - 57)]}, 1).lo > 0
    clean, noisy = verdicts.leak(cfg, _leak_rows(37))
    assert noisy.k == 4 and noisy.verdict == paper.NOT_SUPPORTED
    assert clean.k == 4 and clean.verdict == paper.SUPPORTED   # identical clean: 0 cost, above -0.5
    assert verdicts.leak(cfg, _leak_rows(39))[1].verdict == paper.SUPPORTED


def test_leak_clean_cost_is_an_equivalence_bound_at_half_a_point():
    """5a: every setting's corrected interval of the clean difference must lie above -0.5 points."""
    cfg = {"methods": ["steprelu"], "robustness": RC}
    rows = _leak_rows(0)

    def with_clean_loss(lost: int) -> list[dict]:
        out = []
        for r in rows:
            if r["attack"] == "clean" and r["leak"] == 0.9 and r["point"] == "T_8":
                r = _row(**{k: v for k, v in r.items() if k not in ("n", "acc", "correct")}, ok=_ok(N - lost))
            out.append(r)
        return out
    # one image lost of 1000 at T = 8: interval [-0.4, 0] at 98.75 %, inside the bound; two: [-0.6, 0]
    assert verdicts.leak(cfg, with_clean_loss(1))[0].verdict == paper.SUPPORTED
    c = verdicts.leak(cfg, with_clean_loss(2))[0]
    assert c.verdict == paper.NOT_SUPPORTED and "may cost more than 0.5" in c.why and "T_8" in c.why


def test_leak_at_t1_and_older_leak_rows_are_not_testable():
    cfg = {"methods": ["steprelu"], "robustness": RC}
    old = [_row(family="leak", method="steprelu", attack="salt_pepper", mode="dynamic", level=0.9, point="T_4",
                T=4, ok=_ok(500), **kw) for kw in ({}, {"leak": 0.9, "leak_mode": "exp"})]
    a, b = verdicts.leak(cfg, old)
    assert a.verdict == b.verdict == paper.NOT_TESTABLE and "older data" in a.why
    at1 = [dict(r, point="T_1", T=1, attack=AUTHORS) for r in old]
    assert verdicts.leak(cfg, at1)[1].verdict == paper.NOT_TESTABLE


# -- the runs' claims: latency ----------------------------------------------------------------

def _bits_of(ok: np.ndarray) -> str:
    return correct_bits(torch.as_tensor(ok, dtype=torch.long), torch.ones(len(ok), dtype=torch.long))


def _record(method, seed, by_t, T=32, max_n=1, exact=False):
    """A record with per-image correctness at every t (``by_t(t) -> bool vector``)."""
    oks = [by_t(t) for t in range(1, T + 1)]
    acc = [float(o.mean()) for o in oks]
    return {"method": method, "seed": seed, "leak": 1.0, "T_max": T, "n_images": N, "acc": acc,
            "ann_acc": acc[0] if exact else 0.9, "exact_at_t1": exact, "identical_at_t1": N if exact else None,
            "max_n_per_layer": {"conv1": max_n, "fc1": max(1, max_n // 2)}, "description": method,
            "ops_ratio": [0.1 * t * max_n for t in range(1, T + 1)], "conv_error": [0.0] * T,
            "val_acc": acc, "val_ann_acc": 0.9, "correct_at": {str(t): _bits_of(o) for t, o in enumerate(oks, 1)}}


def _cfg(methods, seeds, T=32, **kw):
    return {"name": "x", "description": "", "dataset": "fashion-mnist", "arch": "cnn-small", "methods": methods,
            "seeds": seeds, "T_max": T, "summary_t": [1], "train": {"epochs": 1},
            "trainer": {"accelerator": "cpu"}, **kw}


def _run(records, name="x", **kw):
    seeds = sorted({r["seed"] for r in records})
    methods = list(dict.fromkeys(r["method"] for r in records))
    cfg = _cfg(methods, seeds, T=records[0]["T_max"], **kw)
    return seeds_io.Run(name, Path(name), "seeds", cfg, records, {"preset": cfg, "git_commit": "a" * 40}, None, seeds)


def test_latency_at_equal_steps_corrects_for_baselines_times_budgets():
    """steprelu at t = 1 against qcfs and maxnorm at t = 1, 2, 4: k = 6 (intervals at 99.17 %). Every
    comparison is far ahead but qcfs at t = 4: 37 against 20 images clears 95 % (no correction)
    but not 99.17 % (the first that does is 42)."""
    def recs(m_plus):
        a, b = _pair(m_plus)
        return [_record("steprelu", 0, lambda t: a, T=4, max_n=20, exact=True),
                _record("qcfs", 0, lambda t: b if t == 4 else _ok(100), T=4),
                _record("maxnorm", 0, lambda t: _ok(100), T=4)]
    v = claims.latency_steps(_run(recs(37)))
    assert v.verdict == paper.NOT_SUPPORTED and "k = 6" in v.why and "qcfs at t = 4" in v.why
    assert claims.latency_steps(_run(recs(42))).verdict == paper.SUPPORTED
    older = [dict(r, correct_at={k: c for k, c in r["correct_at"].items() if k != "2"}) for r in recs(42)]
    assert claims.latency_steps(_run(older)).verdict == paper.NOT_TESTABLE


def test_equal_substeps_pairs_each_variant_with_the_baseline_at_t_times_its_largest_n():
    """steprelu used n = 20 (19 on seed 1), cap2 n = 2, cap4 n = 4, T_max = 32: steprelu at t = 1 meets a
    baseline at t = 20 (19 on seed 1), at t = 2 and 4 it would need 40 and 80 (left out); cap2 meets
    2, 4, 8; cap4 meets 4, 8, 16. cap1 and steprelu-single are not variants; qcfs at t' sits exactly
    where the pairing puts it (only there is it worse than the variant)."""
    a = _ok(900)
    recs = []
    for seed, n_step in ((0, 20), (1, 19)):
        recs += [_record("steprelu", seed, lambda t: a, max_n=n_step, exact=True),
                 _record("steprelu-cap2", seed, lambda t: a, max_n=2),
                 _record("steprelu-cap4", seed, lambda t: a, max_n=4),
                 _record("steprelu-cap1", seed, lambda t: a, max_n=1),
                 _record("steprelu-single", seed, lambda t: a, max_n=1),
                 _record("qcfs", seed, lambda t: _ok(950)), _record("opi", seed, lambda t: _ok(950))]
    run = _run(recs)
    pairs, beyond, uncounted = claims.substep_pairings(run)
    got = {(p["variant"], p["t"], p["baseline"], tuple(sorted(p["t_base"].items()))) for p in pairs}
    want = set()
    for v, t, tb in (("steprelu", 1, {0: 20, 1: 19}), ("steprelu-cap2", 1, {0: 2, 1: 2}),
                     ("steprelu-cap2", 2, {0: 4, 1: 4}), ("steprelu-cap2", 4, {0: 8, 1: 8}),
                     ("steprelu-cap4", 1, {0: 4, 1: 4}), ("steprelu-cap4", 2, {0: 8, 1: 8}),
                     ("steprelu-cap4", 4, {0: 16, 1: 16})):
        want |= {(v, t, b, tuple(sorted(tb.items()))) for b in ("qcfs", "opi")}
    assert got == want and not uncounted
    assert {(p["variant"], p["t"], max(p["t_base"].values())) for p in beyond} == {("steprelu", 2, 40),
                                                                                   ("steprelu", 4, 80)}
    # baselines better than every variant (95 % against 90 %): not supported, k = 14
    v = claims.latency_substeps(run)
    assert v.verdict == paper.NOT_SUPPORTED and "k = 14" in v.why
    # a baseline that is behind exactly at the paired t' (and ahead everywhere else): supported
    worse_at = {0: {2, 4, 8, 16, 20}, 1: {2, 4, 8, 16, 19}}
    recs2 = [r if r["method"] not in ("qcfs", "opi") else
             _record(r["method"], r["seed"], lambda t, s=r["seed"]: _ok(800) if t in worse_at[s] else _ok(950))
             for r in recs]
    assert claims.latency_substeps(_run(recs2)).verdict == paper.SUPPORTED
    # one step later on seed 1 (t' = 20 instead of 19) the baseline is ahead again: the pairing matters
    recs3 = [dict(r, max_n_per_layer={"conv1": 20}) if (r["method"], r["seed"]) == ("steprelu", 1) else r
             for r in recs2]
    assert claims.latency_substeps(_run(recs3)).verdict == paper.NOT_SUPPORTED


# -- adversarial: the gate --------------------------------------------------------------------

def _adv_rows(note_steprelu="pass: ok", note_qcfs="pass: ok") -> list[dict]:
    rows = []
    for m, right in (("steprelu", 700), ("qcfs", 300)):
        rows += [_row(method=m, ok=np.ones(N, bool)),
                 _row(family="transfer", source="relu", attack="pgd", level=8.0, method=m, ok=_ok(right)),
                 _row(family="snn_pgd", attack="pgd", level=8.0, method=m, ok=_ok(right))]
        rows.append(_row(family="sanity", method=m, attack="eps_255", level=255.0, acc=0.0,
                         note=note_steprelu if m == "steprelu" else note_qcfs))
    return rows


def test_adversarial_claim_is_gated_by_the_gradient_masking_checks():
    cfg = {"methods": ["qcfs", "steprelu"], "robustness": RC}
    c = verdicts.adversarial(cfg, _adv_rows())
    assert c.k == 3 and c.verdict == paper.SUPPORTED          # transfer, white-box, robust at eps 8
    assert verdicts.adversarial(cfg, _adv_rows(note_steprelu="FAIL: 40 %")).verdict == paper.NOT_TESTABLE
    assert verdicts.adversarial(cfg, _adv_rows(note_qcfs="FAIL: 40 %")).verdict == paper.NOT_TESTABLE
    no_checks = [r for r in _adv_rows() if r["family"] != "sanity"]
    c = verdicts.adversarial(cfg, no_checks)
    assert c.verdict == paper.NOT_TESTABLE and "not run" in c.why


# -- independence and the page ----------------------------------------------------------------

def test_a_preset_repeating_anothers_setting_is_shown_not_counted():
    a = _ok(900)
    ref = _run([_record("steprelu", s, lambda t: a, T=4, max_n=20, exact=True) for s in (0, 1, 2)], name="ref")
    bad = _record("steprelu", 5, lambda t: a, T=4, max_n=20, exact=True)
    bad["identical_at_t1"] = N - 1
    smoke = _run([bad], name="smoke", deterministic=True, robustness={"enabled": False})
    other = _run([_record("steprelu", 0, lambda t: a, T=4, max_n=20, exact=True)], name="other", calib_size=7)
    assert claims.repeats([ref, smoke, other]) == {"ref": None, "smoke": "ref", "other": None}
    page = claims.render([ref, smoke, other])
    # smoke's broken exactness is shown but does not decide the verdict
    assert "| 1. Exact conversion at one step | **supported** | ref: supported, other: supported | " \
           "smoke: not supported |" in page
    assert "repeats the setting of `ref`" in page and "no: repeats ref" in page


def test_verdicts_name_the_five_claims_and_the_preset_caveats_reach_the_page():
    a = _ok(900)
    run = _run([_record("steprelu", 0, lambda t: a, T=4, max_n=20, exact=True),
                _record("qcfs", 0, lambda t: _ok(100), T=4)],
               caveats=["its network was chosen after reading a test figure"])
    v = claims.verdicts(run)
    assert list(v) == list(claims.TITLES.values()) and len({k[0] for k in v}) == 5   # 1 .. 5
    assert v[claims.TITLES["noise"]] == paper.NOT_TESTABLE           # no robustness rows
    page = claims.render([run])
    assert "- `x`: its network was chosen after reading a test figure" in page
    for word in ("DES" + "IGN", "iss" + "ue 1", "pooled over seeds as"):   # split: the docs test greps for them
        assert word not in page
    assert claims.STATISTICS in page and "McNemar's exact test, shown per seed" in page


def test_caveats_is_a_preset_key_that_changes_no_number():
    from bench import presets
    cfg = presets.load("smoke", ["caveats=[one, two]"])
    assert cfg["caveats"] == ["one", "two"] and "caveats" in seeds_io.IGNORED_KEYS
    assert seeds_io.same_setting(cfg, presets.load("smoke"))
    assert robustness.claims  # the robustness verdicts are reachable from the package


def test_a_caveat_written_in_the_preset_after_the_run_reaches_its_page(tmp_path, monkeypatch):
    """cpu-cifar10's committed run predates its preset's caveats key: the page still says it."""
    from bench import presets
    monkeypatch.setattr(presets, "PRESET_DIR", tmp_path)
    (tmp_path / "x.yaml").write_text('caveats:\n  - "chosen after a\n    test figure"\n  - "stored too"\n')
    run = _run([_record("qcfs", 0, lambda t: _ok(100), T=4)], caveats=["stored too"])
    got = claims.caveats(run)
    assert "`x`: chosen after a test figure" in got
    assert got.count("`x`: stored too") == 1
    (tmp_path / "x.yaml").unlink()
    assert not any("chosen after" in c for c in claims.caveats(run))


def test_the_depth_table_orders_presets_by_depth_and_reads_validation_operating_points():
    from types import SimpleNamespace
    from bench.report import depth

    def rec(method, layers, val, n=1):
        return {"method": method, "leak": 1.0, "T_max": 4, "val_ann_acc": 0.9, "val_acc": val,
                "firing_rate": {f"l{i}": 0.1 for i in range(layers)},
                "max_n_per_layer": {f"l{i}": n for i in range(layers)}}
    deep = SimpleNamespace(name="deep", records=[rec("steprelu", 12, [0.9] * 4, n=7),
                                                 rec("qcfs", 12, [0.5, 0.7, 0.895, 0.9]),
                                                 rec("qcfs", 12, [0.5, 0.7, 0.8, 0.85])])
    shallow = SimpleNamespace(name="shallow", records=[rec("steprelu", 3, [0.9] * 4, n=5),
                                                       rec("qcfs", 3, [0.5, 0.895, 0.9, 0.9])])
    lines = depth.depth_axis_table([deep, shallow]).splitlines()
    assert [ln.split(" | ")[0] for ln in lines[2:]] == ["| shallow", "| deep"]
    assert lines[2].split(" | ")[1:3] == ["3", "1 (1/1)"] and "| 2 (1/1) |" in lines[2] and lines[2].endswith("| 5 |")
    # qcfs on the deep net: one seed within 1 point at t = 3 (0.895 >= 0.89), the other never
    assert "| 3 (1/2) |" in lines[3] and "| not run |" in lines[3] and lines[3].endswith("| 7 |")


def test_the_advantage_at_equal_substeps_is_shown_by_depth_and_its_growth_between_depths():
    """Two presets of one dataset, 3 and 12 spiking layers, two seeds each: steprelu at t = 1
    (n = 20) against qcfs at t' = 20 is ahead by 20 images in 1000 on the shallow net and by 100
    on the deep one, so its advantage grows by 8 points and the interval of that change (two
    independent bootstraps) lies above 0; equal advantages give a change whose interval holds 0.
    A preset that repeats another is shown by depth but enters no change."""
    def run(name, layers, m_plus):
        a, b = _pair(m_plus)
        recs = []
        for seed in (0, 1):
            recs += [_record("steprelu", seed, lambda t: a, max_n=20, exact=True),
                     _record("qcfs", seed, lambda t: b if t == 20 else _ok(100))]
        for r in recs:
            r["firing_rate"] = {f"l{i}": 0.1 for i in range(layers)}
        return _run(recs, name=name)

    def change(shallow_plus, deep_plus, rep=None):
        runs = [run("deep", 12, deep_plus), run("shallow", 3, shallow_plus)]
        lines = claims.depth_substeps(runs, rep or {"deep": None, "shallow": None})
        return [ln for ln in lines if ln.startswith("| shallow (3) to deep (12)")], lines

    grows, lines = change(20, 100)
    by_depth = [ln.split(" | ")[:4] for ln in lines if ln.startswith("| shallow |") or ln.startswith("| deep |")]
    assert by_depth == [["| shallow", "fashion-mnist", "3", "steprelu"], ["| deep", "fashion-mnist", "12", "steprelu"]]
    assert "+0.00 [" in lines[2] and "(t' = 20)" in lines[2] and "+8.00 [" in lines[3]
    (row,) = grows
    cell = row.split(" | ")[-1].rstrip(" |")
    lo = float(cell.split("[")[1].split(",")[0])
    assert cell.startswith("+8.00") and lo > 0
    (same,) = change(60, 60)[0]
    lo, hi = (float(v) for v in same.split(" | ")[-1].rstrip(" |").split("[")[1].rstrip("]").split(","))
    assert lo < 0 < hi
    assert change(20, 100, {"deep": "shallow", "shallow": None})[0] == []
