"""results/README.md: one verdict per claim of the StepReLU paper, by stated mechanical rules.

Every verdict is computed here from the committed records (results/<preset>/) or, for the
robustness claims, by bench.robustness.verdicts from the robustness rows; nothing is typed
in. Every difference is judged by the one rule of bench.stats (docs/method.md#statistics):
significant when its hierarchical-bootstrap interval (seeds, then images) at 1 - 0.05 / k
excludes 0, k being the claim's family of comparisons. A rule that cannot be applied to a
preset's data says "not testable here" and why.

Verdicts over several presets: each (dataset, architecture, seed) counts once, so a preset
whose setting repeats another committed preset's (bench.report.seeds.same_setting) is shown
but not counted; over the counted presets, "not supported" when any preset that can test the
claim does not support it, "supported" when at least one can and all that can support it,
"not testable here" when none can.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .. import costs, paper, presets, robustness, stats
from ..paper import NOT_SUPPORTED, NOT_TESTABLE, SUBJECT, SUPPORTED  # noqa: F401 (the verdict words)
from ..stats import ALPHA, family_level, fmt_level
from . import depth, published, seeds
from .records import by_setting, claims_exactness, fmt
from .seeds import Run, same_setting

BUDGETS = (1, 2, 4)          # the fixed budgets of time steps of claim 2
ANN_GAP = 1.0                # claim 2a (a): the exact method within this many points of its ANN at t = 1

TITLES = {
    "exact": "1. Exact conversion at one step",
    "latency_steps": "2a. Accuracy at low latency, at equal time steps",
    "latency_substeps": "2b. Accuracy at low latency, at equal binary sub-steps",
    "noise": "3. Robustness to noise",
    "adversarial": "4. Adversarial robustness",
    "leak_clean": "5a. Leak: costs little clean accuracy",
    "leak_noise": "5b. Leak: improves robustness to noise",
}
ROBUSTNESS_KEYS = ("noise", "adversarial", "leak_clean", "leak_noise")
BASELINES_WORDS = ", ".join(paper.PAPER_BASELINES)

STATISTICS = (
    "**How a difference is judged (every claim).** Seeds are the unit. Two methods or settings "
    "measured on the same test images give, per seed, one paired difference per image (+1 where "
    "only the first is right, -1 where only the second is, 0 otherwise; for retention, the "
    "difference of the two methods' drops from clean on that image). The difference reported is "
    "the mean over seeds of each seed's mean paired difference, in points. Its interval comes from "
    "a hierarchical bootstrap: draw the seeds with replacement, then within each drawn seed draw "
    "its test images with replacement (as counts from a multinomial over the few values the "
    "differences take), and average the drawn seeds' means; the percentile interval of "
    f"B = max({stats.B_MIN}, {2 * stats.TAIL_DRAWS} k / {ALPHA:g}) such draws, with a fixed random "
    f"seed ({stats.BOOT_SEED}) so that this page renders to the same bytes. Each claim names its "
    "family of k comparisons, fixed by its rule before the data are read; each interval is at "
    f"level 1 - {ALPHA:g} / k (Bonferroni), and a difference is significant when that interval "
    "excludes 0. With one seed the bootstrap is over images only, and the tables say so "
    "(\"images only (1 seed)\"): such an interval says nothing about another training run. With "
    "few seeds the bootstrap draws only from the seeds it has and its percentile interval carries "
    "no small-sample correction, so it can understate the spread between training runs: an interval "
    "that barely excludes 0 over 3 to 5 seeds is weaker evidence than its level says. "
    "What each test conditions on: the bootstrap treats the seeds as a sample of training runs "
    "and the test images as a sample of the images the task could show (the test set is itself "
    "a sample), so its interval is about the method, not about these trained networks or this "
    "test set. McNemar's exact test, shown per seed as supporting detail, conditions on that "
    "seed's trained networks and the test images it was given, and asks only whether those "
    "networks' discordant images split unevenly; it is never pooled over seeds, whose images are "
    "the same test images again, not new independent ones.")

RULE_EXACT = (
    "**Rule.** For every counted preset, every run of a method that claims exactness at t = 1 "
    "(steprelu: StepReLU ANN, multi-spike neuron with the same theta, L, phi) must give the same "
    "prediction as its BatchNorm-folded ANN on every test image at t = 1 (identical at t = 1 = "
    "number of test images) on every seed. No statistics: one image is a counterexample. "
    "Supported iff that holds for every such run; not supported if one run misses one image; not "
    "testable here if a preset has no run of such a method.")
RULE_LATENCY_STEPS = (
    f"**Rule (2a, at equal time steps).** Per preset, E is the method that claims exactness "
    f"({SUBJECT}) and the competitors are the paper's baselines present ({BASELINES_WORDS}; the "
    "suite's ablations are not competitors). Family: E at t = 1 against each baseline at each t "
    f"in {{{', '.join(map(str, BUDGETS))}}} (t <= T_max), k = baselines x budgets, each a paired "
    f"difference of accuracy (E - baseline) on the test images. Supported iff (a) E at t = 1 is "
    f"within {ANN_GAP:g} point of its own folded ANN on every seed (test split), and (b) every one "
    "of the k intervals lies above 0. Not supported if (a) fails or an interval does not lie above "
    "0. Not testable here if a preset lacks E or every baseline, or lacks per-image correctness at "
    "a t the family needs (and nothing else fails).")
RULE_LATENCY_SUBSTEPS = (
    "**Rule (2b, at equal binary sub-steps).** On hardware that only sends binary spikes, a step "
    "in which a neuron sends n spikes takes n binary sub-steps, so t steps of a method cost t x "
    "(the largest n any layer used over the run, `max_n_per_layer`) sub-steps, and t steps of a "
    f"binary baseline cost t. Variants: {SUBJECT} and its capped versions steprelu-capC with C >= 2 "
    "present in the preset (cap 1 is the same network as steprelu-single). Family: each variant V "
    f"at each t in {{{', '.join(map(str, BUDGETS))}}} against each paper baseline at t' = t x "
    "(V's largest n) on the same seed, wherever t' <= T_max on every seed (pairings beyond T_max "
    "are listed and left out), k = the number of such pairings; each a paired difference of "
    "accuracy (V at t - baseline at t'). Supported iff every one of the k intervals lies above 0. "
    "Not supported if one does not. Not testable here if no pairing fits in T_max, or the records "
    "lack `max_n_per_layer` or per-image correctness at a t' the family needs (older runs stored it "
    "at powers of two only), and no pairing fails.")
RULE_OPS = (
    "Shown, not judged: each variant at t against each paper baseline at the first t' whose "
    "synaptic operations per image relative to the ANN's MACs (`ops_ratio`) reach the variant's "
    "at t, per seed; the difference with its 95 % interval (one comparison, no family).")
RULE_NOISE = (
    "**Rule.** Setting: the authors' static salt-and-pepper noise AddNoise(s, p) (s and p from the "
    "preset), every method at its own operating point T_op (the first t within the preset's gap "
    "of its own ANN on the validation split), the noisy rows on the same images as the clean rows "
    f"and every method on the same noise draws. Two readings against each paper baseline b ({BASELINES_WORDS}): "
    f"absolute ({SUBJECT}'s accuracy under the noise - b's) and retention (b's drop from clean - "
    f"{SUBJECT}'s drop from clean, per image: positive when {SUBJECT} loses less, so clean accuracy "
    "does not enter it). Family: both readings against every paper baseline present, k = 2 x "
    "baselines. Supported iff all k intervals lie above 0. Not supported if one does not. Not "
    f"testable here without noise rows of {SUBJECT} and a baseline. The suite's ablations "
    "(steprelu-single, the caps, robustnorm-all) are computed the same way and shown, not judged. "
    "The sweeps (gaussian sigma and salt-and-pepper s, static and dynamic) are counted under the "
    "same rule, each sweep a family of its own (2 readings x its levels x the baselines), and do not "
    "enter the verdict.")
RULE_ADVERSARIAL = (
    "**Rule.** Every method at its operating point T_op, on the same images. Three measures: "
    "accuracy under PGD crafted on the preset's common source ANN and transferred "
    "(`common_source`), accuracy under white-box PGD through time on the SNN itself, and robust "
    "accuracy (an image counts only if it is correct clean and under every attack tried at that "
    "eps; compared only where white-box PGD through time was run for both). Family: the three "
    f"measures x each eps x each paper baseline present ({BASELINES_WORDS}), k; each a paired "
    f"difference ({SUBJECT} - baseline). Gate: a method counts only if every one of its "
    "gradient-masking checks passed on every seed; a method whose checks failed or were not run is "
    f"not testable, never robust. Supported iff {SUBJECT}'s checks pass, every baseline's pass and "
    f"all k intervals lie above 0. Not supported if {SUBJECT}'s checks pass and some testable "
    f"comparison's interval does not lie above 0. Not testable here if {SUBJECT}'s checks failed or "
    "were not run, or if nothing fails but a baseline is gated out or a measure is missing.")
RULE_LEAK = (
    "**Rule.** The leak acts on the potential carried from one step to the next, so it cannot act "
    "at t = 1: the first step's potential never saw a leak, and a comparison there would be the "
    "same network twice. Settings: each leak method (`leak_methods`) x leak mode (exp, linear) x "
    "leak < 1 x T in the preset's `leak_T` (all >= 2); each is paired with leak 1 of the same method "
    "at the same T on the same images (and, under noise, the same noise draws). Family: every "
    "setting, k = their number, for each of the two lines. "
    f"(5a) Supported iff, for every setting, the interval of (leak - no leak) clean accuracy lies "
    f"above -{robustness.verdicts.EQUIVALENCE_POINTS:g} points (a one-sided equivalence, i.e. "
    f"non-inferiority, bound: the leak costs at most {robustness.verdicts.EQUIVALENCE_POINTS:g} point, "
    "with the family's confidence; a gain is no cost, so the upper end is free); not supported if "
    "some setting's interval reaches the bound, which says that the data, at their size (images per "
    "seed, seeds), cannot rule out a larger cost there, not that a cost was shown; not testable here "
    "without clean leak rows (older runs). (5b) Supported iff some setting's interval of (leak - no leak) accuracy "
    "under the authors' noise AddNoise(s, p) lies above 0 (the correction is over every setting "
    "tried, so picking the best one after the fact is paid for); not supported if none does; not "
    "testable here without such rows.")


@dataclass
class Verdict:
    verdict: str
    why: str = ""
    lines: list[str] = field(default_factory=list)   # markdown: this preset's table rows or blocks


def combine(verdicts: list[str]) -> str:
    """The verdict over (counted) presets (module docstring)."""
    testable = [v for v in verdicts if v != NOT_TESTABLE]
    if not testable:
        return NOT_TESTABLE
    return NOT_SUPPORTED if NOT_SUPPORTED in testable else SUPPORTED


def repeats(runs: list[Run]) -> dict[str, str | None]:
    """name -> None where the run counts, else the name of the counted run whose setting it
    repeats (of runs with one setting, the one with the most seeds counts, then by name)."""
    out = {}
    for r in runs:
        group = sorted([o for o in runs if o is r or same_setting(o.cfg, r.cfg)],
                       key=lambda o: (-len(o.seeds_found), o.name))
        out[r.name] = None if group[0] is r else group[0].name
    return out


# -- 1. exactness -----------------------------------------------------------------------------

def _exact_records(run: Run) -> list[dict]:
    return [r for r in run.records if claims_exactness(r) and r.get("identical_at_t1") is not None]


def exactness(run: Run) -> Verdict:
    recs = _exact_records(run)
    if not recs:
        return Verdict(NOT_TESTABLE, "no run of a method that claims exactness")
    bad = [r for r in recs if r["identical_at_t1"] != r["n_images"]]
    lines = []
    for (method, leak) in sorted({(r["method"], r["leak"]) for r in recs}):
        rs = [r for r in recs if (r["method"], r["leak"]) == (method, leak)]
        same = sum(r["identical_at_t1"] == r["n_images"] for r in rs)
        worst = min(rs, key=lambda r: r["identical_at_t1"] / r["n_images"])
        lines.append(
            f"| {run.name} | {method} | {leak:g} | {len(rs)} | {same} of {len(rs)} "
            f"(fewest: {worst['identical_at_t1']}/{worst['n_images']}) | {fmt([r['ann_acc'] for r in rs])} | "
            f"{fmt([r['acc'][0] for r in rs])} | {stats.spread([r['conv_error'][0] for r in rs], '.2e')} |")
    why = (f"{len(bad)} run(s) differ from the folded ANN on some image" if bad
           else "every image identical on every seed")
    return Verdict(NOT_SUPPORTED if bad else SUPPORTED, why, lines)


EXACT_HEAD = ("| preset | method | leak | seeds | seeds with every image identical at t = 1 | "
              "ANN acc (folded) | SNN acc t = 1 | conv. err t = 1 |\n|---|---|---|---|---|---|---|---|")


# -- 2. latency -------------------------------------------------------------------------------

def _reference(run: Run) -> tuple[str, list[dict]] | None:
    exact = [r for r in run.records if claims_exactness(r) and r["leak"] == 1.0]
    if not exact:
        return None
    method = next(m for m in run.cfg["methods"] if any(r["method"] == m for r in exact))
    return method, [r for r in exact if r["method"] == method]


def _groups(run: Run) -> dict[str, list[dict]]:
    """method -> its leak-1 records, in the preset's method order."""
    groups = {m: rs for (m, leak), rs in by_setting(run.records).items() if leak == 1.0}
    return {m: groups[m] for m in run.cfg["methods"] if m in groups}


def _baselines(run: Run) -> list[tuple[str, list[dict]]]:
    groups = _groups(run)
    return [(m, groups[m]) for m in paper.baselines(groups)]


def _budgets(run: Run) -> list[int]:
    return [b for b in BUDGETS if b <= run.cfg["T_max"]]


def _ts(ts: list) -> str:
    """One step, or the steps per seed where they differ."""
    uniq = sorted(set(ts), key=lambda t: (t is None, t))
    return str(uniq[0]) if len(uniq) == 1 else ", ".join(str(t) for t in ts) + " (per seed)"


def _acc_at(rs: list[dict], step) -> str:
    vals = []
    for r in rs:
        t = step(r) if callable(step) else step
        vals.append(None if t is None or t > len(r["acc"]) else r["acc"][t - 1])
    return fmt(vals)


def _cells(d: stats.Diff | None, missing: list) -> list[str]:
    if d is None:
        why = "not testable (older data: no per-image correctness at that t)" if missing else "n/a"
        return [why, "not testable", "-", "-"]
    return [d.interval(), d.result(), d.seed_ps(), f"{d.n_seeds} ({d.kind})"]


def latency_steps(run: Run) -> Verdict:
    found = _reference(run)
    if found is None:
        return Verdict(NOT_TESTABLE, "no run of a method that claims exactness")
    ref_m, ref = found
    bases = _baselines(run)
    if not bases:
        return Verdict(NOT_TESTABLE, f"no paper baseline ({BASELINES_WORDS})")
    budgets = _budgets(run)
    k = len(bases) * len(budgets)
    lines, failed, untestable = [], [], []
    far = [r.get("seed", 0) for r in ref if r.get("ann_acc") is None or r["acc"][0] < r["ann_acc"] - ANN_GAP / 100]
    if far:
        failed.append(f"{ref_m} not within {ANN_GAP:g} point of its ANN at t = 1 on seed(s) {far}")
    for m, rs in bases:
        for t in budgets:
            a, b, missing = stats.record_pairs(ref, 1, rs, t)
            d = stats.paired_bits(a, b, k) if a and not missing else None
            lines.append(f"| {run.name} | {m} | {t} | {_acc_at(rs, t)} | {_acc_at(ref, 1)} | "
                         + " | ".join(_cells(d, missing)) + " |")
            if d is None:
                untestable.append(f"{m} at t = {t}")
            elif not d.above():
                failed.append(f"{m} at t = {t} ({d.interval()})")
    verdict = paper.decide(len(failed), len(untestable))
    why = {SUPPORTED: f"all {k} intervals at {fmt_level(family_level(k))} lie above 0",
           NOT_SUPPORTED: "fails for " + "; ".join(failed),
           NOT_TESTABLE: "no per-image correctness stored for " + ", ".join(untestable) + " (older data)"}[verdict]
    return Verdict(verdict, f"k = {k}: {why}", lines)


LATENCY_STEPS_HEAD = (
    "| preset | baseline | baseline at t | baseline acc | E acc at t = 1 | E - baseline (points) [interval] "
    "| result | McNemar p per seed | seeds (bootstrap) |\n|---|---|---|---|---|---|---|---|---|")


def substep_pairings(run: Run) -> tuple[list[dict], list[dict], list[str]]:
    """The family of claim 2b: (pairings, left out beyond T_max, variants without sub-step
    counts). A pairing: {variant, t, baseline, records of both, t_base: {seed: t'}} where t' =
    t x the variant's largest n used in any layer on that seed (bench.costs.substeps)."""
    groups = _groups(run)
    T = run.cfg["T_max"]
    pairs, beyond, uncounted = [], [], []
    bases = _baselines(run)
    for v in paper.multi_spike_variants(groups):
        vrs = groups[v]
        for t in _budgets(run):
            subs = {r.get("seed", 0): costs.substeps(r, t) for r in vrs}
            if any(s is None for s in subs.values()):
                uncounted.append(v)
                break
            t_base = {s: sub[0] for s, sub in subs.items()}
            item = dict(variant=v, t=t, variant_records=vrs, t_base=t_base)
            if max(t_base.values()) > T:
                beyond.append(item)
                continue
            pairs += [dict(item, baseline=m, baseline_records=rs) for m, rs in bases]
    return pairs, beyond, uncounted


def _baseline_t(p: dict):
    """record -> the baseline's step t' of a 2b pairing on that record's seed."""
    return lambda r, tb=p["t_base"]: tb.get(r.get("seed", 0))


def _pairing_bits(p: dict) -> tuple[dict, dict, list]:
    """A 2b pairing's per-seed correctness: the variant at t, the baseline at t' (stats.record_pairs)."""
    return stats.record_pairs(p["variant_records"], p["t"], p["baseline_records"], _baseline_t(p))


def latency_substeps(run: Run) -> Verdict:
    if _reference(run) is None:
        return Verdict(NOT_TESTABLE, "no run of a method that claims exactness")
    if not _baselines(run):
        return Verdict(NOT_TESTABLE, f"no paper baseline ({BASELINES_WORDS})")
    pairs, beyond, uncounted = substep_pairings(run)
    k = len(pairs)
    lines, failed, untestable = [], [], []
    for p in pairs:
        t_of = _baseline_t(p)
        a, b, missing = _pairing_bits(p)
        d = stats.paired_bits(a, b, k) if a and not missing else None
        lines.append(f"| {run.name} | {p['variant']} at t = {p['t']} | {p['baseline']} | "
                     f"{_ts(list(p['t_base'].values()))} | {_acc_at(p['variant_records'], p['t'])} | "
                     f"{_acc_at(p['baseline_records'], t_of)} | " + " | ".join(_cells(d, missing)) + " |")
        if d is None:
            untestable.append(f"{p['variant']} t = {p['t']} vs {p['baseline']}")
        elif not d.above():
            failed.append(f"{p['variant']} at t = {p['t']} vs {p['baseline']} at t = "
                          f"{_ts(list(p['t_base'].values()))} ({d.interval()})")
    for p in beyond:
        lines.append(f"| {run.name} | {p['variant']} at t = {p['t']} | every baseline | "
                     f"{_ts(list(p['t_base'].values()))} | {_acc_at(p['variant_records'], p['t'])} | "
                     f"beyond T_max = {run.cfg['T_max']}: left out | - | - | - | - |")
    if uncounted:
        untestable.append("sub-steps of " + ", ".join(sorted(set(uncounted))) + " (no max_n_per_layer)")
    if not pairs and not uncounted:
        return Verdict(NOT_TESTABLE, f"no pairing within T_max = {run.cfg['T_max']}", lines)
    verdict = paper.decide(len(failed), len(untestable))
    why = {SUPPORTED: f"all {k} intervals at {fmt_level(family_level(k))} lie above 0",
           NOT_SUPPORTED: f"{len(failed)} of {k} do not lie above 0: " + "; ".join(failed),
           NOT_TESTABLE: "cannot be made: " + "; ".join(untestable) + " (older data)"}[verdict]
    return Verdict(verdict, f"k = {k}: {why}", lines)


LATENCY_SUBSTEPS_HEAD = (
    "| preset | variant | baseline | baseline at t' (same sub-steps) | variant acc | baseline acc | "
    "variant - baseline (points) [interval] | result | McNemar p per seed | seeds (bootstrap) |\n"
    "|---|---|---|---|---|---|---|---|---|---|")


def _one_step_pairings(run: Run) -> list[dict]:
    """Claim 2b's pairings at t = 1 (each multi-spike variant at one step against each paper
    baseline at the same binary sub-steps), each with its per-seed paired differences."""
    out = []
    for p in substep_pairings(run)[0]:
        if p["t"] != 1:
            continue
        a, b, missing = _pairing_bits(p)
        if a and not missing:
            out.append(dict(p, diffs=stats.bit_diffs(a, b)))
    return out


def depth_substeps(runs: list[Run], rep: dict[str, str | None]) -> list[str]:
    """Does steprelu's advantage at equal binary sub-steps grow with depth? Per preset, ordered
    by depth, each multi-spike variant at t = 1 against each paper baseline at the same sub-steps
    (95 % interval, one comparison each); then, for counted presets of one dataset at two depths,
    the change from the shallower to the deeper (independent bootstraps). Shown, not judged."""
    rows = []
    for run in runs:
        d = depth.spiking_depth(run.records)
        pairs = _one_step_pairings(run)
        if d is not None and pairs:
            rows.append((d, run, pairs))
    if not rows:
        return []
    rows.sort(key=lambda x: (x[1].cfg["dataset"], x[0], x[1].name))
    bases = [b for b in paper.PAPER_BASELINES if any(p["baseline"] == b for _, _, ps in rows for p in ps)]
    head = ["preset", "dataset", "spiking layers", "variant at t = 1", *[f"variant - {b} at t' (points) [95 %]" for b in bases]]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def cell(p):
        diff = stats.paired_diff(p["diffs"], 1)
        return f"{diff.interval()} (t' = {_ts(list(p['t_base'].values()))})" if diff else "n/a"

    for d, run, pairs in rows:
        for v in dict.fromkeys(p["variant"] for p in pairs):
            by_b = {p["baseline"]: p for p in pairs if p["variant"] == v}
            out.append(f"| {run.name} | {run.cfg['dataset']} | {d} | {v} | "
                       + " | ".join(cell(by_b[b]) if b in by_b else "-" for b in bases) + " |")
    growth = []
    counted = [(d, run, pairs) for d, run, pairs in rows if rep.get(run.name) is None]
    for dataset in dict.fromkeys(run.cfg["dataset"] for _, run, _ in counted):
        same = [x for x in counted if x[1].cfg["dataset"] == dataset]
        d0, run0, pairs0 = same[0]
        for d, run, pairs in same[1:]:
            if d == d0:
                continue
            for v in dict.fromkeys(p["variant"] for p in pairs):
                before = {p["baseline"]: p for p in pairs0 if p["variant"] == v}
                after = {p["baseline"]: p for p in pairs if p["variant"] == v}
                cells = []
                for b in bases:
                    g = stats.growth(before[b]["diffs"], after[b]["diffs"]) if b in before and b in after else None
                    cells.append(g.interval() if g else "-")
                growth.append(f"| {run0.name} ({d0}) to {run.name} ({d}) | {dataset} | {v} at t = 1 | "
                              + " | ".join(cells) + " |")
    if growth:
        out += ["", "The change of that advantage from the shallower preset to the deeper one on the same "
                "dataset (deeper minus shallower, in points; each preset bootstrapped on its own seeds and "
                "images, 95 % interval of the difference; positive: the advantage grows with depth):", "",
                "| presets (spiking layers) | dataset | variant | " + " | ".join(f"change against {b}" for b in bases)
                + " |", "|" + "---|" * (3 + len(bases))] + growth
    return out


def _first_ops_t(record: dict, ops: float) -> int | None:
    for t, o in enumerate(record.get("ops_ratio") or [], start=1):
        if o >= ops:
            return t
    return None


def equal_ops(run: Run) -> list[str]:
    """Table rows at equal synaptic operations (shown, not judged)."""
    if _reference(run) is None:
        return []
    groups = _groups(run)
    out = []
    for v in paper.multi_spike_variants(groups):
        vrs = groups[v]
        for t in _budgets(run):
            ops = {r.get("seed", 0): r["ops_ratio"][t - 1] for r in vrs if r.get("ops_ratio")}
            for m, rs in _baselines(run):
                t_of = (lambda r, ops=ops: _first_ops_t(r, ops.get(r.get("seed", 0), float("inf"))))
                ts = [t_of(r) for r in rs if r.get("seed", 0) in ops]
                if not ts or any(x is None for x in ts):
                    cells = [f"not reached by T_max = {run.cfg['T_max']}", "-", "-"]
                else:
                    a, b, missing = stats.record_pairs(vrs, t, rs, t_of)
                    d = stats.paired_bits(a, b, 1) if a and not missing else None
                    cells = [_ts(ts), _acc_at(rs, t_of), d.interval() if d else "not testable (older data)"]
                out.append(f"| {run.name} | {v} at t = {t} | {stats.spread(list(ops.values()), '.3f')} | {m} | "
                           f"{cells[0]} | {_acc_at(vrs, t)} | {cells[1]} | {cells[2]} |")
    return out


OPS_HEAD = ("| preset | variant | its ops / ANN MACs | baseline | baseline at t' (first with as many ops) | "
            "variant acc | baseline acc | variant - baseline (points) [95 % interval] |\n"
            "|---|---|---|---|---|---|---|---|")


# -- 3-5. robustness --------------------------------------------------------------------------

def robustness_claims(run: Run) -> dict[str, Verdict]:
    """The noise, adversarial and leak verdicts from bench.robustness.verdicts."""
    if run.rows is None:
        return {k: Verdict(NOT_TESTABLE, f"no robustness data in {run.name}") for k in ROBUSTNESS_KEYS}
    if not seeds.robustness_is_current(run.rows):
        why = (f"older data: the robustness.csv of {run.name} predates the current robustness protocol; a new "
               "run renews it")
        return {k: Verdict(NOT_TESTABLE, why) for k in ROBUSTNESS_KEYS}
    out = robustness.claims(run.cfg, run.rows)
    return {k: Verdict(c.verdict, (f"k = {c.k}: " if c.k else "") + c.why, c.lines) for k, c in out.items()}


# -- the page ---------------------------------------------------------------------------------

def _stated_caveats(run: Run) -> list[str]:
    """The run's own ``caveats`` and those its preset file states now: a caveat is words about
    how the preset was designed, so one written after a run was committed still applies to it."""
    stated = list(run.cfg.get("caveats") or [])
    path = presets.PRESET_DIR / f"{run.name}.yaml"
    if path.exists():
        stated += [c for c in presets.read_yaml(path).get("caveats") or [] if c not in stated]
    return [" ".join(str(c).split()) for c in stated]


def caveats(run: Run, repeated: str | None = None) -> list[str]:
    """What limits this preset's evidence: from its preset (``caveats``) and its data."""
    cfg = run.cfg
    out = []
    acc = cfg.get("trainer", {}).get("accelerator", "?")
    out.append(f"`{run.name}`: {cfg['dataset']} / {cfg['arch']}, {cfg['train']['epochs']} training epochs on "
               f"{acc}, {len(cfg['seeds'])} seed(s): CPU scale, not the paper's networks or schedules.")
    if cfg["dataset"] == "cifar10-jpeg":
        out.append(f"`{run.name}`: cifar10-jpeg is the offline JPEG (quality 75) copy of CIFAR-10, not "
                   "CIFAR-10: its accuracies are not comparable with published CIFAR-10 figures.")
    out += [f"`{run.name}`: {c}" for c in _stated_caveats(run)]
    if repeated:
        out.append(f"`{run.name}`: repeats the setting of `{repeated}` (same configuration apart from seeds, "
                   "words, robustness stage and deterministic mode): shown, not counted in any verdict.")
    if any(not r.get("description") for r in run.records):
        out.append(f"`{run.name}`: this run predates the recorded method definitions; its baselines' "
                   "conventions are those of its commit (see its summary.md).")
    if any("correct_at" not in r for r in run.records):
        out.append(f"`{run.name}`: no per-image correctness stored, so no paired comparison.")
    elif any(len(r["correct_at"]) < r["T_max"] for r in run.records):
        out.append(f"`{run.name}`: older data: per-image correctness stored only at t = "
                   f"{', '.join(sorted(run.records[0]['correct_at'], key=int))}, so comparisons at other t "
                   "are not testable here.")
    if any(r.get("val_acc") is None for r in run.records):
        out.append(f"`{run.name}`: older data: no validation curves, so no operating point can be chosen on "
                   "validation from these records (the robustness stage of this run chose its own).")
    return out


def verdicts(run: Run) -> dict[str, str]:
    """Each claim's verdict from one run alone (what a user's reproduction recomputes)."""
    rob = robustness_claims(run)
    v = {"exact": exactness(run), "latency_steps": latency_steps(run),
         "latency_substeps": latency_substeps(run), **rob}
    return {TITLES[k]: v[k].verdict for k in TITLES}


def _per(d: dict[str, Verdict], names: list[str]) -> str:
    return ", ".join(f"{n}: {d[n].verdict}" for n in names) or "-"


def _why(d: dict[str, Verdict], rep: dict[str, str | None]) -> list[str]:
    return [f"- `{n}`{' (shown, not counted)' if rep[n] else ''}: {v.verdict} ({v.why})." for n, v in d.items()]


def _blocks(d: dict[str, Verdict], rep: dict[str, str | None]) -> list[str]:
    """Each preset's tables under a heading (presets with nothing to show: their line above says why)."""
    out = []
    for n, v in d.items():
        if v.lines:
            out += [f"#### `{n}`{' (shown, not counted)' if rep[n] else ''}: {v.verdict}", "", *v.lines, ""]
    return out


def render(runs: list[Run]) -> str:
    """The whole results/README.md."""
    rep = repeats(runs)
    counted = [r.name for r in runs if rep[r.name] is None]
    shown = [r.name for r in runs if rep[r.name] is not None]
    per = {"exact": {r.name: exactness(r) for r in runs},
           "latency_steps": {r.name: latency_steps(r) for r in runs},
           "latency_substeps": {r.name: latency_substeps(r) for r in runs}}
    rob = {r.name: robustness_claims(r) for r in runs}
    for key in ROBUSTNESS_KEYS:
        per[key] = {n: rob[n][key] for n in rob}
    overall = {key: combine([per[key][n].verdict for n in counted]) for key in TITLES}

    settings = ["| preset | dataset | architecture | seeds | T_max | test images | methods | commit(s) | counted |",
                "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        commits = sorted({(c or "unknown")[:7] for c in (r.manifest.get("git_commits") or
                                                           {"": r.manifest.get("git_commit")}).values()})
        settings.append(f"| [{r.name}]({r.name}/summary.md) | {r.cfg['dataset']} | {r.cfg['arch']} | "
                        f"{r.cfg['seeds']} | {r.cfg['T_max']} | {r.records[0]['n_images'] if r.records else 0} | "
                        f"{', '.join(r.cfg['methods'])} | {', '.join(commits)} | "
                        f"{'yes' if rep[r.name] is None else 'no: repeats ' + rep[r.name]} |")
    table = ["| claim | verdict | counted presets | shown, not counted |", "|---|---|---|---|"]
    for key, title in TITLES.items():
        table.append(f"| {title} | **{overall[key]}** | {_per(per[key], counted)} | {_per(per[key], shown)} |")

    def section(key):
        return [f"**Verdict: {overall[key]}.**", "", *_why(per[key], rep), ""]

    out = [
        "# What this benchmark says about the StepReLU paper's claims", "",
        "Generated by `python -m bench report --all` from the committed data in `results/<preset>/` "
        "(results.json, robustness.csv, manifest.json, or their per-seed copies in seeds/); "
        "`tests/test_results_drift.py` fails if this page differs from what the data give. "
        "The paper: Wang, Cao, Chen, Feng, Wang, \"A New ANN-SNN Conversion Method with High "
        "Accuracy, Low Latency and Good Robustness\", IJCAI 2023.", "",
        "Accuracies in %; a figure over several seeds is mean ± std [95 % Student-t CI]. Each (dataset, "
        "architecture, seed) counts once: a preset that repeats another committed preset's setting is "
        "shown but not counted. Over the counted presets a claim is not supported when any preset that "
        "can test it does not support it, supported when at least one can and all that can support it, "
        "and not testable here when none can.", "",
        *table, "",
        STATISTICS, "",
        "## Settings", "", *settings, "",
        f"## {TITLES['exact']}", "",
        "The paper: a StepReLU ANN converted to multi-spike neurons reproduces the ANN at T = 1.", "",
        RULE_EXACT, "", *section("exact"), EXACT_HEAD,
        *[ln for v in per["exact"].values() for ln in v.lines], "",
        "## 2. Accuracy at low latency", "",
        "The paper: high accuracy at one time step, where rate-coded conversions need many. Read twice: "
        "a step of a multi-spike neuron may carry up to L spikes, i.e. up to L binary sub-steps.", "",
        f"### {TITLES['latency_steps']}", "", RULE_LATENCY_STEPS, "", *section("latency_steps"),
        LATENCY_STEPS_HEAD, *[ln for v in per["latency_steps"].values() for ln in v.lines], "",
        f"### {TITLES['latency_substeps']}", "", RULE_LATENCY_SUBSTEPS, "", *section("latency_substeps"),
        LATENCY_SUBSTEPS_HEAD, *[ln for v in per["latency_substeps"].values() for ln in v.lines], "",
        "#### At equal synaptic operations (shown, not judged)", "", RULE_OPS, "", OPS_HEAD,
        *[ln for r in runs for ln in equal_ops(r)], "",
        f"## {TITLES['noise']}", "",
        "The paper: good robustness to noise (its evaluation: static salt-and-pepper AddNoise(0.95, 0.5)).", "",
        RULE_NOISE, "", *section("noise"), *_blocks(per["noise"], rep),
        f"## {TITLES['adversarial']}", "", RULE_ADVERSARIAL, "", *section("adversarial"),
        *_blocks(per["adversarial"], rep),
        "## 5. The leak", "",
        "The paper: a leak in the spiking neuron improves robustness to noise. In each grid below a cell is "
        "the leak's difference from leak 1 in points [interval at the family's level]; in 5a a bold cell's "
        f"interval reaches -{robustness.verdicts.EQUIVALENCE_POINTS:g} (a larger cost is not ruled out "
        "there: it fails the bound), in 5b a bold cell lies above 0 (a gain).", "",
        RULE_LEAK, "",
        f"### {TITLES['leak_clean']}", "", *section("leak_clean"), *_blocks(per["leak_clean"], rep),
        f"### {TITLES['leak_noise']}", "", *section("leak_noise"), *_blocks(per["leak_noise"], rep),
        "## Depth", "",
        "The paper's networks have 13 to 33 spiking layers; rate-coded conversion accumulates error "
        "layer after layer, so it should need more steps as depth grows, while a conversion exact at "
        "t = 1 should not. Each preset's operating points (first t within 1 point of the method's own "
        "ANN on validation, mean over the seeds that reached one, and how many did) against its depth; "
        "per-layer firing rates and conversion errors are in each preset's summary.md (Depth). Shown, "
        "not judged: with the depths committed here it is a trend to read, not a test.", "",
        depth.depth_axis_table(runs) or "No committed run records per-layer figures yet.", "",
        "### Does the advantage at equal binary sub-steps grow with depth?", "",
        "Claim 2b's one-step pairings by depth: each multi-spike variant at t = 1 against each paper "
        "baseline at the t' that sends as many binary sub-steps (t' = the variant's largest n per step), "
        "the paired difference (variant - baseline) with its 95 % interval (one comparison each). The "
        "paper implies the advantage grows with depth, because rate-coded conversion accumulates error "
        "layer after layer. Shown, not judged: presets of one dataset at two depths differ in their "
        "network, training and test images as well as in depth.", "",
        *(depth_substeps(runs, rep) or ["No committed preset stores the pairings yet."]), "",
        "## Caveats", "", *[f"- {c}" for r in runs for c in caveats(r, rep[r.name])], "",
        "## Published figures at paper scale (theirs, not ours)", "",
        "Other people's numbers for the same methods, on full datasets with GPU-scale training; "
        "not comparable with the CPU-scale results above, shown for orientation. Each row names "
        "where the figure was read; what was looked for and not found says so.", "",
        published.table(), "",
        "## The paper presets on a GPU", "",
        "What this suite's paper-scale presets would run, read from their preset files, with the exact "
        "command; `./reproduce.sh gpu-check` is the short check of the GPU code path.", "",
        published.paper_presets_table({r.name: f"[{r.name}]({r.name}/summary.md)" for r in runs
                                       if r.name in published.PAPER_PRESETS}), "",
    ]
    text = "\n".join(out)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text
