"""Spread over seeds and paired tests between methods (docs/method.md#statistics).

Seeds are independent trainings, so a figure is their mean with the sample standard
deviation and a 95 % Student-t confidence interval. Two methods evaluated on the same
test images are compared image by image: McNemar's exact test on the discordant pairs
(images one method gets right and the other wrong), pooled over seeds.
"""
from __future__ import annotations

import numpy as np
from scipy import stats

from annsnn.metrics import bits_correct

ALPHA = 0.05   # significance level of every paired test and verdict rule


def ci95(values) -> tuple[float, float] | None:
    """95 % confidence interval of the mean (Student t); None for fewer than 2 values."""
    arr = np.asarray(values, dtype=float)
    if arr.size < 2:
        return None
    half = stats.t.ppf(0.975, arr.size - 1) * arr.std(ddof=1) / np.sqrt(arr.size)
    return float(arr.mean() - half), float(arr.mean() + half)


def t_band(values) -> tuple[float, float]:
    """The 95 % Student-t interval as a seaborn ``errorbar`` callable: the bands of the plots
    are then the intervals of the tables, and deterministic (seaborn's ("ci", 95) bootstraps
    with a fresh random state, so every render drew different bands). One value: no band."""
    band = ci95(values)
    if band is None:
        m = float(np.mean(values))
        return m, m
    return band


def spread(values, fmt: str) -> str:
    """One figure over seeds: the value alone for one seed, else mean ± std [95 % CI]
    (``fmt`` a format spec such as ".2f"); "n/a" when nothing was measured."""
    vals = [v for v in values if v is not None]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return format(vals[0], fmt)
    arr = np.asarray(vals, dtype=float)
    lo, hi = ci95(arr)
    return (f"{format(arr.mean(), fmt)} ± {format(arr.std(ddof=1), fmt)} "
            f"[{format(lo, fmt)}, {format(hi, fmt)}]")


P_FLOOR = 1e-4


def fmt_p(p: float) -> str:
    """One p-value format for every table: two significant digits, and "< 1e-4" below that,
    where the exact value (or its underflow to 0) says nothing more."""
    return f"{p:.2g}" if p >= P_FLOOR else f"< {P_FLOOR:g}"


def p_clause(p: float) -> str:
    """The p-value in a sentence: "p = 0.035", or "p < 0.0001" (never "p = < 0.0001")."""
    text = fmt_p(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def mcnemar(a: np.ndarray, b: np.ndarray) -> tuple[int, int, float]:
    """(images only ``a`` gets right, images only ``b`` gets right, exact two-sided p)."""
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n = only_a + only_b
    p = 1.0 if n == 0 else float(stats.binomtest(min(only_a, only_b), n, 0.5).pvalue)
    return only_a, only_b, p


def paired(records_a: list[dict], records_b: list[dict], t: int) -> tuple[int, int, float, int] | None:
    """McNemar between two settings at step t over the seeds both have (same test images),
    discordant counts summed over seeds; also returns the number of seeds used."""
    return paired_at(records_a, t, records_b, t)


def paired_at(records_a: list[dict], t_a, records_b: list[dict], t_b) -> tuple[int, int, float, int] | None:
    """McNemar between setting a at step ``t_a`` and setting b at step ``t_b`` on the same test
    images (e.g. steprelu at t = 1 against a baseline at t = 4), pooled over the seeds both
    have. ``t_a``/``t_b`` is a step or a function record -> step (None skips that seed: a
    per-seed operating point). Only steps whose per-image correctness the records store
    (1, 2, 4, ... T_max) can be tested; None when no seed can."""
    step_a = t_a if callable(t_a) else (lambda r: t_a)
    step_b = t_b if callable(t_b) else (lambda r: t_b)
    by_seed_b = {r.get("seed", 0): r for r in records_b}
    a_all, b_all = [], []
    for ra in records_a:
        rb = by_seed_b.get(ra.get("seed", 0))
        if rb is None:
            continue
        ka, kb = step_a(ra), step_b(rb)
        if ka is None or kb is None:
            continue
        ka, kb = str(ka), str(kb)
        if ka not in ra.get("correct_at", {}) or kb not in rb.get("correct_at", {}):
            continue
        n = ra["n_images"]
        a_all.append(bits_correct(ra["correct_at"][ka], n))
        b_all.append(bits_correct(rb["correct_at"][kb], n))
    if not a_all:
        return None
    only_a, only_b, p = mcnemar(np.concatenate(a_all), np.concatenate(b_all))
    return only_a, only_b, p, len(a_all)
