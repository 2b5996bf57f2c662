"""Spread over seeds, and the one rule that judges a difference (docs/method.md#statistics).

A figure over seeds is their mean with the sample standard deviation and a 95 % Student-t
interval (``spread``, ``ci95``, ``t_band``).

A difference between two methods or settings is judged one way everywhere: seeds are the
unit. Measured on the same test images, the two give per seed one paired difference per
image (+1 where only the first is right, -1 where only the second is, 0 otherwise; or any
other per-image paired quantity, such as the difference of two drops from clean). The
difference is the mean over seeds of each seed's mean paired difference. Its interval is a
hierarchical bootstrap (``paired_diff``): draw the seeds with replacement, then within each
drawn seed its images with replacement, and take the mean over the drawn seeds of their
means; the percentile interval of those draws at level 1 - ALPHA / k, for a claim's family
of k comparisons (Bonferroni), must exclude 0 for the difference to be significant. The
per-image differences take few values, so a seed's image resample is one multinomial draw
of counts over those values, and the random generator is seeded with a fixed number, so a
page renders to the same bytes. With one seed the bootstrap is over images only.

McNemar's exact test (the sign test of the per-image differences) is computed per seed as
supporting detail: it conditions on that seed's trained networks. It is never pooled over
seeds, whose images are the same test images again, not new independent ones.
"""
from __future__ import annotations

import copy
import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass, field

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



ALPHA = 0.05        # every interval is at 1 - ALPHA / k for a family of k comparisons
BOOT_SEED = 0       # the bootstrap's fixed random seed: a page renders to the same bytes
B_MIN = 4000        # bootstrap draws at least ...
TAIL_DRAWS = 20     # ... and enough that each tail beyond a corrected interval holds this many


def family_level(k: int) -> float:
    """The interval level of one comparison in a family of ``k`` (Bonferroni): 1 - ALPHA / k."""
    return 1.0 - ALPHA / max(int(k), 1)


def n_boot(k: int) -> int:
    """Bootstrap draws for a family of ``k``: B_MIN, or more where the corrected tails
    (ALPHA / 2k each) would otherwise hold fewer than TAIL_DRAWS draws."""
    return max(B_MIN, math.ceil(TAIL_DRAWS * 2 * max(int(k), 1) / ALPHA))


def fmt_level(level: float) -> str:
    """0.95 -> "95 %", 0.9875 -> "98.75 %", 0.999 -> "99.9 %"."""
    return f"{100 * level:.4g} %"


def mcnemar(a: np.ndarray, b: np.ndarray) -> tuple[int, int, float]:
    """(images only ``a`` gets right, images only ``b`` gets right, exact two-sided p)."""
    return sign_test(np.asarray(a, dtype=np.int8) - np.asarray(b, dtype=np.int8))


def sign_test(d: np.ndarray) -> tuple[int, int, float]:
    """(positive, negative, exact two-sided p) of paired per-image differences ``d``: the
    binomial test of the non-zero ones. For two correctness vectors (d = a - b) it is
    McNemar's exact test on the discordant images."""
    d = np.asarray(d)
    pos, neg = int(np.sum(d > 0)), int(np.sum(d < 0))
    # Binomial(n, 1/2) is symmetric: the exact two-sided p is twice the smaller tail (at most 1)
    p = min(1.0, 2.0 * float(stats.binom.cdf(min(pos, neg), pos + neg, 0.5))) if pos + neg else 1.0
    return pos, neg, p


def hierarchical_bootstrap(diffs: list[np.ndarray], B: int, seed: int = BOOT_SEED) -> np.ndarray:
    """B draws of the statistic: seeds drawn with replacement, then each drawn seed's images
    with replacement (a multinomial draw of counts over the few values its per-image
    differences take; a seed drawn twice is resampled twice, independently), and the mean
    over the drawn seeds of their resampled means. One seed: images only."""
    rng = np.random.default_rng(seed)
    tables = []
    for d in diffs:
        values, counts = np.unique(np.asarray(d, dtype=float), return_counts=True)
        tables.append((values, counts / counts.sum(), int(counts.sum())))
    S = len(tables)
    pick = rng.integers(0, S, size=(B, S)) if S > 1 else np.zeros((B, 1), dtype=np.int64)
    means = np.empty((B, S))
    for s, (values, probs, n) in enumerate(tables):
        mask = pick == s
        m = int(mask.sum())
        if m:
            means[mask] = rng.multinomial(n, probs, size=m) @ values / n
    return means.mean(axis=1)


@dataclass
class Diff:
    """One judged difference, in points: the mean over seeds of the per-seed mean paired
    difference, its interval at ``level`` (hierarchical bootstrap; 1 - ALPHA / k), and per
    seed (seed, difference, positive, negative, McNemar / sign-test p) as supporting detail."""
    diff: float
    lo: float
    hi: float
    level: float
    k: int
    n_images: int                 # per seed (the smallest)
    per_seed: list[tuple] = field(default_factory=list)
    B: int = 0

    @property
    def n_seeds(self) -> int:
        return len(self.per_seed)

    @property
    def kind(self) -> str:
        return "seeds, then images" if self.n_seeds >= 2 else "images only (1 seed)"

    def above(self, bound: float = 0.0) -> bool:
        """The whole interval lies above ``bound`` (points)."""
        return self.lo > bound

    def below(self, bound: float = 0.0) -> bool:
        return self.hi < bound

    @property
    def significant(self) -> bool:
        """The interval excludes 0."""
        return self.above() or self.below()

    def result(self, bound: float = 0.0) -> str:
        b = f"{bound:g}"
        return f"above {b}" if self.above(bound) else (f"below {b}" if self.below(bound) else f"includes {b}")

    def interval(self, digits: int = 2) -> str:
        """"+1.23 [+0.50, +1.96]"."""
        d, lo, hi = (round(v, digits) + 0.0 for v in (self.diff, self.lo, self.hi))   # never "-0.00"
        return f"{d:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"

    def seed_ps(self) -> str:
        """The per-seed p-values in seed order, "0.031, < 0.0001"."""
        return ", ".join(fmt_p(p) for *_, p in self.per_seed)


_CACHE: OrderedDict = OrderedDict()   # the same comparison on two pages is bootstrapped once
_CACHE_SIZE = 4096


def paired_diff(diffs_by_seed: dict, k: int = 1) -> Diff | None:
    """The difference and its corrected interval from {seed: per-image paired differences}
    (values in units of one image: 1.0 = 100 points); None when no seed has an image."""
    seeds = [s for s in sorted(diffs_by_seed) if len(diffs_by_seed[s])]
    if not seeds:
        return None
    diffs = [np.asarray(diffs_by_seed[s], dtype=float) for s in seeds]
    h = hashlib.sha256(repr((int(k), seeds)).encode())
    for d in diffs:
        h.update(d.tobytes())
    key = h.hexdigest()
    if key not in _CACHE:
        _CACHE[key] = _paired_diff(seeds, diffs, k)
        if len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return copy.deepcopy(_CACHE[key])


def _percentile_interval(draws: np.ndarray, level: float) -> tuple[float, float]:
    """The central percentile interval of bootstrap draws at ``level``."""
    q = (1.0 - level) / 2
    lo, hi = np.quantile(draws, [q, 1.0 - q])
    return float(lo), float(hi)


def _paired_diff(seeds: list, diffs: list[np.ndarray], k: int) -> Diff:
    level, B = family_level(k), n_boot(k)
    lo, hi = _percentile_interval(hierarchical_bootstrap(diffs, B), level)
    per_seed = [(s, 100 * float(d.mean()), *sign_test(d)) for s, d in zip(seeds, diffs)]
    return Diff(100 * float(np.mean([d.mean() for d in diffs])), 100 * float(lo), 100 * float(hi),
                level, max(int(k), 1), min(len(d) for d in diffs), per_seed, B)


def bit_diffs(a_by_seed: dict, b_by_seed: dict) -> dict:
    """{seed: a - b per image} from {seed: per-image correctness} each, on the seeds both have
    and the images both have (the head of the shorter)."""
    diffs = {}
    for s in sorted(set(a_by_seed) & set(b_by_seed)):
        a, b = np.asarray(a_by_seed[s]), np.asarray(b_by_seed[s])
        n = min(len(a), len(b))
        diffs[s] = a[:n].astype(np.int8) - b[:n].astype(np.int8)
    return diffs


def growth(before_by_seed: dict, after_by_seed: dict, k: int = 1) -> Diff | None:
    """How a paired difference changes between two independent experiments (other networks,
    other seeds, perhaps other images): after - before, in points. Nothing pairs one
    experiment's seeds or images with the other's, so each is bootstrapped hierarchically on
    its own draws and the interval is that of the difference of the draws, at 1 - ALPHA / k.
    None when either side has no image."""
    sides = []
    for by_seed in (before_by_seed, after_by_seed):
        seeds = [s for s in sorted(by_seed) if len(by_seed[s])]
        if not seeds:
            return None
        sides.append([np.asarray(by_seed[s], dtype=float) for s in seeds])
    level, B = family_level(k), n_boot(k)
    lo, hi = _percentile_interval(hierarchical_bootstrap(sides[1], B, seed=BOOT_SEED + 1)
                                  - hierarchical_bootstrap(sides[0], B, seed=BOOT_SEED), level)
    mean = [float(np.mean([d.mean() for d in side])) for side in sides]
    return Diff(100 * (mean[1] - mean[0]), 100 * float(lo), 100 * float(hi), level, max(int(k), 1),
                min(len(d) for side in sides for d in side), [], B)


def paired_bits(a_by_seed: dict, b_by_seed: dict, k: int = 1) -> Diff | None:
    """a - b from {seed: per-image correctness} each, on the seeds both have and the images
    both have (the head of the shorter)."""
    return paired_diff(bit_diffs(a_by_seed, b_by_seed), k)


def record_bits(record: dict, t: int | None) -> np.ndarray | None:
    """A record's per-image correctness at step t; None where it is not stored (older runs
    kept it at powers of two only) or t is None."""
    stored = record.get("correct_at") or {}
    if t is None or str(t) not in stored:
        return None
    return bits_correct(stored[str(t)], record["n_images"])


def record_pairs(records_a: list[dict], t_a, records_b: list[dict], t_b) -> tuple[dict, dict, list]:
    """({seed: a's correctness}, {seed: b's correctness}, seeds lacking it) over the seeds
    both have: a at step ``t_a``, b at ``t_b``, each a step or a function record -> step
    (a per-seed step such as an operating point)."""
    step_a = t_a if callable(t_a) else (lambda r: t_a)
    step_b = t_b if callable(t_b) else (lambda r: t_b)
    by_seed_b = {r.get("seed", 0): r for r in records_b}
    a_out, b_out, missing = {}, {}, []
    for ra in records_a:
        s = ra.get("seed", 0)
        rb = by_seed_b.get(s)
        if rb is None:
            continue
        a, b = record_bits(ra, step_a(ra)), record_bits(rb, step_b(rb))
        if a is None or b is None:
            missing.append(s)
            continue
        a_out[s], b_out[s] = a, b
    return a_out, b_out, sorted(missing)
