"""Statistics of the robustness stage, computed from its rows alone (docs/method.md#statistics).

Every row carries its per-image correctness (``correct``, packed bits as
annsnn.metrics.correct_bits) on the head of one fixed image pool, so:
- robust accuracy is a per-image minimum: an image counts as robust at (eps, T) only if it
  is correct clean and under every attack tried there (on the images all of them share);
- two settings on the same images and noise draws are compared image by image with the
  suite's one rule (bench.stats.paired_diff: hierarchical bootstrap over seeds, then
  images, at the family's corrected level; McNemar per seed beside it);
- retention compares drops from clean: per image, (clean - noisy) of one method minus the
  same of the other, the clean and noisy rows sharing images (and the noisy rows sharing
  noise draws).
"""
from __future__ import annotations

import math

import numpy as np

from annsnn.metrics import bits_correct

from ..stats import Diff, paired_bits, paired_diff


def bits(row: dict, n: int | None = None) -> np.ndarray:
    """The row's per-image correctness, its first ``n`` images (default all)."""
    arr = bits_correct(row["correct"], int(row["n"]))
    return arr if n is None else arr[:n]


def half_width(n: int, p: float = 0.5) -> float:
    """95 % binomial half-width in points for n images at accuracy p (p = 0.5: the widest)."""
    return 100 * 1.96 * math.sqrt(p * (1 - p) / n) if n else float("nan")


def robust_correct(rows: list[dict]) -> tuple[np.ndarray, int]:
    """Per-image AND of the rows' correctness over the images they all share (the head of
    the pool): (correct, n). ``rows`` are one seed's clean row and every attack row at one
    (method, point, eps)."""
    n = min(int(r["n"]) for r in rows)
    ok = np.ones(n, dtype=bool)
    for r in rows:
        ok &= bits(r, n)
    return ok, n


def _measured(by_seed: dict) -> dict:
    return {s: r for s, r in by_seed.items() if int(r["n"])}


def paired(a_by_seed: dict, b_by_seed: dict, k: int = 1) -> Diff | None:
    """a - b (accuracy, points) given {seed: row} each, on the seeds both measured, at the
    level of a family of ``k``."""
    a, b = _measured(a_by_seed), _measured(b_by_seed)
    return paired_bits({s: bits(r) for s, r in a.items()}, {s: bits(r) for s, r in b.items()}, k)


def paired_drop(clean_a: dict, noisy_a: dict, clean_b: dict, noisy_b: dict, k: int = 1) -> Diff | None:
    """Retention: b's drop from clean minus a's, per image ((clean_b - noisy_b) - (clean_a -
    noisy_a)), positive when a loses less; each {seed: row}, on the seeds all four have."""
    rows = [_measured(x) for x in (clean_a, noisy_a, clean_b, noisy_b)]
    diffs = {}
    for s in sorted(set.intersection(*[set(x) for x in rows])):
        n = min(int(x[s]["n"]) for x in rows)
        ca, na, cb, nb = (bits(x[s], n).astype(np.int8) for x in rows)
        diffs[s] = (cb - nb) - (ca - na)
    return paired_diff(diffs, k)


def drop(clean: dict, noisy: dict) -> list[float]:
    """Per seed, accuracy clean minus under noise on the images both have (points)."""
    out = []
    for s in sorted(set(_measured(clean)) & set(_measured(noisy))):
        n = min(int(clean[s]["n"]), int(noisy[s]["n"]))
        out.append(100 * float(bits(clean[s], n).mean() - bits(noisy[s], n).mean()))
    return out


def fmt_paired(c: Diff | None) -> str:
    """"+1.20 [-0.30, +2.10]" (the interval at the comparison's level), or "n/a"."""
    return "n/a" if c is None else c.interval()
