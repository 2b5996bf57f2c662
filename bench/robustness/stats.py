"""Statistics of the robustness stage, computed from its rows alone (docs/method.md#statistics).

Every row carries its per-image correctness (``correct``, packed bits as
annsnn.metrics.correct_bits) on the head of one fixed image pool, so:
- robust accuracy is a per-image minimum: an image counts as robust at (eps, T) only if it
  is correct clean and under every attack tried there (on the images all of them share);
- two settings on the same images and noise draws are compared image by image:
  McNemar's exact test on the discordant images pooled over seeds, and the accuracy
  difference with a 95 % CI: Student t over the per-seed paired differences when there
  are >= 2 seeds (training randomness included), else the normal interval of the
  per-image paired differences of the one seed (images only; says so in ``ci_kind``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from annsnn.metrics import bits_correct

from ..stats import ci95, mcnemar, p_clause


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


@dataclass
class Paired:
    """a - b over seeds on the same images: accuracy difference in points, its 95 % CI,
    McNemar's exact p on the pooled discordant images."""
    diff: float
    lo: float | None
    hi: float | None
    p: float
    only_a: int
    only_b: int
    n_images: int           # per seed (the smallest)
    n_seeds: int
    ci_kind: str            # "t over seeds" | "per image (1 seed)"


def paired(a_by_seed: dict, b_by_seed: dict) -> Paired | None:
    """Compare two settings given {seed: row} each; seeds present in both are used."""
    seeds = sorted(set(a_by_seed) & set(b_by_seed))
    if not seeds:
        return None
    a_all, b_all, diffs, ns = [], [], [], []
    for s in seeds:
        n = min(int(a_by_seed[s]["n"]), int(b_by_seed[s]["n"]))
        a, b = bits(a_by_seed[s], n), bits(b_by_seed[s], n)
        a_all.append(a)
        b_all.append(b)
        diffs.append(100 * (a.mean() - b.mean()))
        ns.append(n)
    only_a, only_b, p = mcnemar(np.concatenate(a_all), np.concatenate(b_all))
    diff = float(np.mean(diffs))
    if len(seeds) >= 2:
        lo, hi = ci95(diffs)
        kind = "t over seeds"
    else:
        d = a_all[0].astype(float) - b_all[0].astype(float)
        se = d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
        half = 100 * sps.norm.ppf(0.975) * se
        lo, hi = (diff - half, diff + half) if math.isfinite(half) else (None, None)
        kind = "per image (1 seed)"
    return Paired(diff, lo, hi, p, only_a, only_b, min(ns), len(seeds), kind)


def fmt_paired(c: Paired | None) -> str:
    if c is None:
        return "n/a"
    ci = "" if c.lo is None else f" [{c.lo:+.2f}, {c.hi:+.2f}]"
    return f"{c.diff:+.2f}{ci}, {p_clause(c.p)}"

