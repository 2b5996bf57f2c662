"""Did I reproduce it? A user's run checked against the committed reference of its preset.

Each figure of the user's run (per method, per seed: the folded ANN's accuracy, the SNN's
accuracy at t = 1, 2, 4, ... 32, the operating points, exactness) is checked against the
reference's 95 % prediction interval for ONE new seed, mean ± t(0.975, n - 1) s sqrt(1 + 1/n)
over the reference's n seeds: the range a seed trained on another machine should fall in
if only the seed and the last bits differ. No tolerance is set by hand. A preset with one
committed seed borrows the spread of a committed preset with the same setting (same preset
apart from its seeds, words and robustness stage: smoke and fashion-mnist-reference).
A user's seed that the one-seed preset has committed is no new seed: its figures are checked
around the committed run's own, as the difference of two draws of one seed (on two machines
training amplifies last-bit differences), committed ± t(0.975, n - 1) s sqrt(2), s from the
borrowed spread; a seed it has not committed is a new seed, checked as above.
An operating point not reached by T_max counts as T_max + 1; where no reference seed reached
it, its spread is unknown (not 0) and the figure is not checked. Exactness is not an interval:
every image identical at t = 1, or a miss.

Each claim's verdict is recomputed from the user's run alone and set beside the verdict the
committed run of the same preset gives. Where both runs are deterministic
(``--deterministic``), their SHA-256 hashes of weights and predictions are compared too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats as sps

from .. import costs
from . import seeds as seeds_io
from .seeds import Run, same_setting

CHECK_T = (1, 2, 4, 8, 16, 32)


@dataclass
class Figure:
    method: str
    what: str
    seed: int
    yours: float
    ref_mean: float | None
    ref_std: float | None
    lo: float | None
    hi: float | None
    n_ref: int
    inside: bool | None       # None: the reference has no spread to test against
    same_seed: bool = False   # centred on the committed run of this very seed (ref_mean is its value)

    def cells(self, digits: int) -> list[str]:
        f = (lambda v: "n/a" if v is None else f"{v:.{digits}f}")
        band = "n/a" if self.lo is None else f"[{f(self.lo)}, {f(self.hi)}]"
        verdict = {True: "yes", False: "**no**", None: "not checked"}[self.inside]
        ref = ("n/a" if self.ref_mean is None else
               f"{f(self.ref_mean)} (committed, seed {self.seed}); s {f(self.ref_std)}" if self.same_seed else
               f"{f(self.ref_mean)} ± {f(self.ref_std)}")
        return [self.method, self.what, str(self.seed), f(self.yours), ref, band, verdict]


def _interval(centre: float | None, values, level: float, spread) -> tuple[float, float, float, float] | None:
    """(centre, std, lo, hi): centre ± t(level, n - 1) · s · spread(n) over ``values``
    (centre None: their mean); None under 2 values."""
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if v.size < 2:
        return None
    m = float(v.mean()) if centre is None else centre
    s = float(v.std(ddof=1))
    half = float(sps.t.ppf(0.5 + level / 2, v.size - 1)) * s * spread(v.size)
    return m, s, m - half, m + half


def prediction_interval(values, level: float = 0.95) -> tuple[float, float, float, float] | None:
    """(mean, std, lo, hi) of the interval that holds one new draw with ``level``; None under 2."""
    return _interval(None, values, level, lambda n: math.sqrt(1 + 1 / n))


def same_seed_interval(committed_value: float, values, level: float = 0.95) -> tuple[float, float, float, float] | None:
    """(centre, std, lo, hi) for a second draw of a seed whose committed value is known: the
    difference of two draws has variance 2 s^2, so committed ± t(level, n - 1) s sqrt(2)."""
    return _interval(committed_value, values, level, lambda n: math.sqrt(2))


def spread_source(committed: Run | None, results_dir: Path) -> Run | None:
    """The committed run whose seeds give the spread: the preset's own with >= 2 seeds, else
    the committed run with the same setting and the most seeds."""
    if committed is not None and len(committed.seeds_found) >= 2:
        return committed
    if committed is None:
        return None
    best = None
    for folder in sorted(p for p in Path(results_dir).iterdir() if p.is_dir() and seeds_io.is_run(p)):
        if folder.name == committed.name:
            continue
        run = seeds_io.load(folder)
        if same_setting(run.cfg, committed.cfg) and len(run.seeds_found) >= 2:
            if best is None or len(run.seeds_found) > len(best.seeds_found):
                best = run
    return best


def _op(record: dict, gap: float) -> float:
    t = costs.operating_t(record, gap)
    return float(record["T_max"] + 1 if t is None else t)


def _figures_of(record: dict) -> dict[str, tuple[float, int]]:
    """what -> (value, digits) for one record (leak 1)."""
    out = {"ANN acc (folded) %": (100 * record["ann_acc"], 2)} if record.get("ann_acc") is not None else {}
    for t in CHECK_T:
        if t <= record["T_max"]:
            out[f"SNN acc t={t} %"] = (100 * record["acc"][t - 1], 2)
    for gap in costs.GAPS:
        out[f"operating t ({gap:g} pt)"] = (_op(record, gap), 0)
    return out


def check_figures(yours: Run, ref: Run | None, committed: Run | None = None) -> list[tuple[Figure, int]]:
    """Each figure of ``yours`` against ``ref``'s spread; where ``ref`` lends its spread to a
    one-seed ``committed`` run that holds the user's seed, around that seed's committed figure."""
    refs: dict[str, list[dict]] = {}
    for r in (ref.records if ref else []):
        if float(r["leak"]) == 1.0:
            refs.setdefault(r["method"], []).append(r)
    same: dict[tuple, dict] = {}
    if committed is not None and ref is not None and committed is not ref:
        same = {(r["method"], r.get("seed", 0)): r for r in committed.records if float(r["leak"]) == 1.0}
    out, ann_seen = [], set()
    for r in yours.records:
        if float(r["leak"]) != 1.0:
            continue
        mine = _figures_of(r)
        # one ANN serves several methods: its accuracy is one figure, checked once
        key = (r.get("activation") or r["method"], r.get("seed", 0))
        if key in ann_seen:
            mine.pop("ANN acc (folded) %", None)
        ann_seen.add(key)
        theirs = [_figures_of(x) for x in refs.get(r["method"], [])]
        twin = same.get((r["method"], r.get("seed", 0)))
        twin_figs = _figures_of(twin) if twin else {}
        for what, (value, digits) in mine.items():
            spread = [f[what][0] for f in theirs if what in f]
            if what.startswith("operating t") and spread and all(v == r["T_max"] + 1 for v in spread):
                spread = []   # no reference seed reached it by T_max: its spread is unknown, not 0
            on_twin = what in twin_figs
            pi = same_seed_interval(twin_figs[what][0], spread) if on_twin else prediction_interval(spread)
            if pi is None:
                out.append((Figure(r["method"], what, r.get("seed", 0), value, None, None, None, None,
                                   len(theirs), None), digits))
                continue
            m, s, lo, hi = pi
            out.append((Figure(r["method"], what, r.get("seed", 0), value, m, s, lo, hi, len(theirs),
                               lo - 1e-9 <= value <= hi + 1e-9, on_twin), digits))
        if r.get("exact_at_t1") and r.get("identical_at_t1") is not None:
            ok = r["identical_at_t1"] == r["n_images"]
            out.append((Figure(r["method"], "identical at t=1 (images)", r.get("seed", 0), r["identical_at_t1"],
                               float(r["n_images"]), 0.0, float(r["n_images"]), float(r["n_images"]), 0, ok), 0))
    return out


def hashes(run: Run) -> dict[str, str]:
    """(seed, method, leak) -> predictions hash, and (seed, activation, epoch) -> weights hash."""
    out = {}
    for r in run.records:
        if r.get("predictions_sha256"):
            out[f"seed {r.get('seed', 0)} {r['method']} leak {r['leak']:g} predictions"] = r["predictions_sha256"]
    for k, m in (run.manifest.get("seed_manifests") or {"": run.manifest}).items():
        for act, per_epoch in (m.get("weight_sha256") or {}).items():
            for epoch, h in enumerate(per_epoch, start=1):
                out[f"seed {k} {act} weights epoch {epoch}"] = h
    return out


def _deterministic(run: Run) -> bool:
    return bool(run.cfg.get("deterministic"))


def check(yours: Run, committed: Run | None, results_dir: Path, verdicts=None) -> tuple[str, bool, str]:
    """(reproduction.md text, reproduced?, the short printout) for ``yours`` against the
    committed run of its preset.
    ``verdicts(run) -> {claim: verdict}`` recomputes the claims (default: bench.report.claims)."""
    if verdicts is None:
        from .claims import verdicts
    ref = spread_source(committed, results_dir)
    figs = check_figures(yours, ref, committed)
    checked = [f for f, _ in figs if f.inside is not None]
    inside = sum(f.inside for f in checked)
    mine_v = verdicts(yours)
    theirs_v = verdicts(committed) if committed is not None else {}
    same = [k for k in mine_v if theirs_v.get(k) == mine_v[k]]
    ok = (ref is not None and committed is not None and bool(checked) and inside == len(checked)
          and len(same) == len(mine_v))
    lines = [f"# Reproduction check: {yours.cfg.get('name', yours.name)}", ""]
    if committed is None:
        lines += [f"No committed reference results/{yours.name}/ to check against.", ""]
    else:
        src = (f"results/{ref.name}/ ({len(ref.seeds_found)} seeds"
               + (f", the same setting as {committed.name}" if ref.name != committed.name else "") + ")") if ref else "none"
        lines += [f"Your run: seeds {yours.seeds_found}. Committed reference: results/{committed.name}/ "
                  f"(seeds {committed.seeds_found}). Spread from {src}: each figure is checked against "
                  "the 95 % prediction interval for one new seed, mean ± t(0.975, n-1) · s · √(1 + 1/n)"
                  + ("; a seed committed in the one-seed reference against its own committed figure, "
                     "committed ± t(0.975, n-1) · s · √2 (two draws of one seed)" if ref is not None and ref is not committed else "")
                  + ".", ""]
    head = ["method", "figure", "seed", "yours", "reference mean ± std", "95 % interval", "inside"]
    misses = [(f, d) for f, d in figs if f.inside is False]
    table = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    table += ["| " + " | ".join(f.cells(d)) + " |" for f, d in figs]
    lines += ["## Figures", "", *table, ""]
    vt = ["| claim | yours | committed | same |", "|---|---|---|---|"]
    vt += [f"| {k} | {mine_v[k]} | {theirs_v.get(k, 'n/a')} | {'yes' if k in same else '**no**'} |" for k in mine_v]
    lines += ["## Verdicts, recomputed from your run", "", *vt, ""]
    if _deterministic(yours) and committed is not None and _deterministic(committed):
        mine_h, theirs_h = hashes(yours), hashes(committed)
        common = sorted(set(mine_h) & set(theirs_h))
        equal = [k for k in common if mine_h[k] == theirs_h[k]]
        first = next((k for k in common if mine_h[k] != theirs_h[k]), None)
        lines += ["## Bit-identical? (both runs --deterministic)", "",
                  f"{len(equal)} of {len(common)} SHA-256 hashes equal"
                  + (f"; the first that differs: {first}." if first else "."), ""]
    summary = (f"reproduced: {inside} of {len(checked)} figures inside the reference's 95 % prediction "
               f"interval; verdicts: {len(same)} of {len(mine_v)} the same")
    lines += [summary, ""]
    short = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + \
        ["| " + " | ".join(f.cells(d)) + " |" for f, d in misses]
    printed = ("\n".join(short) + "\n" if misses else "") + "\n".join(vt) + "\n" + summary
    return "\n".join(lines), ok, printed
