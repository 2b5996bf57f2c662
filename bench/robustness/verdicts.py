"""The robustness claims' verdicts, from the stage's rows alone (docs/method.md#verdicts).

  noise(cfg, rows)        3. robustness to noise: retention and absolute accuracy under the
                             authors' AddNoise(s, p), against the paper's baselines
  adversarial(cfg, rows)  4. adversarial robustness: transfer from the common source, white-box
                             PGD through time, robust accuracy; gated by the masking checks
  leak(cfg, rows)         5a. the leak costs little clean accuracy; 5b. it improves robustness

Each gives a ``Claim``: the verdict, why, the family size k, compact table lines for the
verdict page and detailed lines (every comparison with its per-seed McNemar p) for
robustness.md. Every difference follows bench.stats: significant when its hierarchical
bootstrap interval at 1 - 0.05 / k excludes 0 (or, for an equivalence bound, lies above it).
Competitors in a verdict are the paper's baselines (bench.paper); the suite's ablations are
computed the same way and shown, never judged.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .. import paper
from ..paper import NOT_SUPPORTED, NOT_TESTABLE, SUBJECT, SUPPORTED
from ..stats import Diff, family_level, fmt_level, spread
from .groups import AUTHORS, by_seed, eps_of, index, methods_of, point_order, robust_rows, sanity_status, sel
from .stats import bits, drop, paired, paired_bits, paired_drop

EQUIVALENCE_POINTS = 0.5    # 5a: the leak may cost at most this much clean accuracy (points)
LEAK_MIN_T = 2              # the leak acts on the potential carried between steps: never at t = 1
MEASURES = ("transfer", "white-box", "robust")


@dataclass
class Claim:
    verdict: str
    why: str
    k: int = 0
    lines: list[str] = field(default_factory=list)     # the verdict page's tables
    detail: list[str] = field(default_factory=list)    # robustness.md: every comparison


def _acc(rows) -> str:
    return spread([100 * r["acc"] for r in rows if r["n"]], ".1f")


def _level(k: int) -> str:
    return fmt_level(family_level(k))


def authors_setting(rc: dict) -> str:
    return f"AddNoise({rc['authors_s']:g}, {rc['authors_p']:g})"


# -- 3. noise ---------------------------------------------------------------------------------

def noise_readings(rows, a: str, b: str, k: int, point: str = "T_op", **noise_kw):
    """(absolute, retention, per-seed rows) of a against b at ``point`` under the noise rows
    matching ``noise_kw`` (attack, mode, level): a's accuracy minus b's under the noise, and
    b's drop from clean minus a's, on the same images and noise draws."""
    noisy = sel([r for r in rows if r["family"] == "noise" and r["point"] == point], **noise_kw)
    clean = [r for r in rows if r["family"] == "clean" and r["point"] == point]
    na, nb = by_seed(sel(noisy, method=a, point=point)), by_seed(sel(noisy, method=b, point=point))
    ca, cb = by_seed(sel(clean, method=a, point=point)), by_seed(sel(clean, method=b, point=point))
    return paired(na, nb, k), paired_drop(ca, na, cb, nb, k), (na, nb, ca, cb)


NOISE_HEAD = ["competitor", "judged", "reading", SUBJECT, "competitor's", "{E}'s advantage (points) [{lv} interval]",
              "result", "McNemar p per seed"]


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]


def noise(cfg: dict, rows: list[dict]) -> Claim:
    rc = cfg["robustness"]
    setting = authors_setting(rc)
    methods = methods_of(cfg, rows)
    bases = paper.baselines(methods)
    auth = dict(attack=AUTHORS, mode="static")
    if SUBJECT not in methods or not bases or not sel(rows, family="noise", method=SUBJECT, point="T_op", **auth):
        return Claim(NOT_TESTABLE, f"{SUBJECT} and a paper baseline must both be measured under {setting} "
                                   "at their operating points")
    k = 2 * len(bases)
    table, failed, untestable = [], [], []
    for m in bases + paper.ablations(methods):
        judged = m in bases
        ab, rt, (na, nb, ca, cb) = noise_readings(rows, SUBJECT, m, k, **auth)
        for reading, d, mine, theirs in (("absolute: accuracy under noise", ab, _acc(na.values()), _acc(nb.values())),
                                         ("retention: drop from clean", rt, spread(drop(ca, na), ".1f"),
                                          spread(drop(cb, nb), ".1f"))):
            table.append([m, "yes" if judged else "no (ablation: shown)", reading, mine, theirs,
                          d.interval() if d else "n/a", d.result() if d else "not measured",
                          d.seed_ps() if d else "-"])
            if judged and d is None:
                untestable.append(f"{m} ({reading.split(':')[0]})")
            elif judged and not d.above():
                failed.append(f"{m}, {reading.split(':')[0]} {d.interval()}")
    verdict = paper.decide(len(failed), len(untestable))
    n = sorted({int(r["n"]) for r in sel(rows, family="noise", method=SUBJECT, point="T_op", **auth)})
    seeds = sorted({r["seed"] for r in rows if r["family"] == "noise"})
    kind = "seeds, then images" if len(seeds) > 1 else "images only (1 seed)"
    why = {SUPPORTED: f"{SUBJECT} is ahead of every paper baseline on both readings",
           NOT_SUPPORTED: "not ahead in: " + "; ".join(failed),
           NOT_TESTABLE: "not measured: " + "; ".join(untestable)}[verdict]
    head = [h.format(E=SUBJECT, lv=_level(k)) for h in NOISE_HEAD]
    lines = [f"{setting}, each method at its operating point T_op; {len(seeds)} seed(s), {n[0]} images per seed "
             f"(bootstrap over {kind}); family k = {k} (2 readings x {len(bases)} baselines), intervals at "
             f"{_level(k)}.", ""] + _table(head, table)
    lines += [""] + sweep_lines(rows, bases)
    return Claim(verdict, why, k, lines, lines)


def sweep_lines(rows: list[dict], bases: list[str]) -> list[str]:
    """The noise sweeps counted under the same rule (shown, not judged): each sweep (kind x
    noise mode) is a family of its own, 2 readings x its levels x the baselines."""
    noise_rows = [r for r in rows if r["family"] in ("noise", "clean") and r["attack"] != AUTHORS]
    sweeps = sorted({(r["attack"], r["mode"]) for r in noise_rows if r["family"] == "noise"})
    if not sweeps or not bases:
        return []
    out = [f"Sweeps at T_op, shown, not judged: each sweep is a family of its own (2 readings x its levels x "
           f"{len(bases)} baselines), under the same rule; {SUBJECT} against each baseline:", ""]
    for kind, mode in sweeps:
        levels = sorted({r["level"] for r in noise_rows if (r["attack"], r["mode"]) == (kind, mode)})
        k = 2 * len(levels) * len(bases)
        part = [r for r in noise_rows if r["family"] == "clean" or (r["attack"], r["mode"]) == (kind, mode)]
        counts = {"absolute": [0, 0, 0, 0], "retention": [0, 0, 0, 0]}
        for level in levels:
            for m in bases:
                ab, rt, _ = noise_readings(part, SUBJECT, m, k, attack=kind, mode=mode, level=level)
                for reading, d in (("absolute", ab), ("retention", rt)):
                    c = counts[reading]
                    c[3 if d is None else (0 if d.above() else (1 if d.below() else 2))] += 1
        for reading, (better, worse, tie, missing) in counts.items():
            out.append(f"- {kind} {mode}, {reading} (k = {k}, intervals at {_level(k)}): ahead in {better}, "
                       f"behind in {worse}, no significant difference in {tie}"
                       + (f", not measured in {missing}" if missing else ""))
    return out


# -- 4. adversarial ---------------------------------------------------------------------------

def _adv_bits(rows, rob, measure: str, method: str, eps: float, source: str, attack: str | None) -> dict:
    """{seed: per-image correctness} of ``method`` at T_op under one measure at ``eps``."""
    if measure == "transfer":
        rs = sel(rows, family="transfer", source=source, attack=attack, level=eps, method=method, point="T_op")
        return {r["seed"]: bits(r) for r in rs if r["n"]}
    if measure == "white-box":
        rs = sel(rows, family="snn_pgd", method=method, point="T_op", level=eps)
        return {r["seed"]: bits(r) for r in rs if r["n"]}
    # robust accuracy counts only where white-box PGD through time was run too
    return {r["seed"]: r["ok"] for r in rob if r["method"] == method and r["point"] == "T_op"
            and r["level"] == eps and r["whitebox"] and r["n"]}


def adversarial(cfg: dict, rows: list[dict]) -> Claim:
    rc = cfg["robustness"]
    src = rc["common_source"]
    methods = methods_of(cfg, rows)
    bases = paper.baselines(methods)
    eps = eps_of(rows)
    tr = sel(rows, family="transfer", source=src)
    attack = "pgd" if any(r["attack"] == "pgd" for r in tr) else (tr[0]["attack"] if tr else None)
    if SUBJECT not in methods or not bases or not eps:
        return Claim(NOT_TESTABLE, f"{SUBJECT} and a paper baseline must both be attacked")
    k = len(MEASURES) * len(eps) * len(bases)
    gate = {m: sanity_status(rows, m) for m in methods}
    rob = robust_rows(rows)
    grid, detail, failed, untestable = [], [], [], []
    for m in bases + paper.ablations(methods):
        judged = m in bases
        for measure in MEASURES:
            cells = []
            for e in eps:
                a = _adv_bits(rows, rob, measure, SUBJECT, e, src, attack)
                b = _adv_bits(rows, rob, measure, m, e, src, attack)
                d = paired_bits(a, b, k) if a and b else None
                gated = gate.get(m) != "pass" or gate.get(SUBJECT) != "pass"
                mark = "" if d is None else (f"**{d.interval()}**" if d.above() else d.interval())
                cells.append("not measured" if d is None else mark + (" (gated)" if gated else ""))
                detail.append([m, "yes" if judged else "no (ablation: shown)", measure, f"{e:g}",
                               _mean(a), _mean(b), d.interval() if d else "n/a", d.result() if d else "not measured",
                               d.seed_ps() if d else "-"])
                if not judged:
                    continue
                if d is None or gate.get(m) != "pass":
                    untestable.append(f"{m} {measure} eps {e:g}")
                elif not d.above():
                    failed.append(f"{m} {measure} eps {e:g}")
            grid.append([m, "yes" if judged else "no", measure] + cells)
    status = ", ".join(f"{m}: {gate[m] or 'not run'}" for m in methods)
    if gate.get(SUBJECT) != "pass":
        verdict = NOT_TESTABLE
        why = (f"{SUBJECT}'s gradient-masking checks " + ("were not run" if gate.get(SUBJECT) is None else "failed")
               + ": its white-box figures cannot be told from gradient masking")
    else:
        verdict = paper.decide(len(failed), len(untestable))
        why = {SUPPORTED: f"{SUBJECT} ahead of every paper baseline in all {k} comparisons",
               NOT_SUPPORTED: f"not ahead in {len(failed)} of {k} comparisons (e.g. {', '.join(failed[:3])})",
               NOT_TESTABLE: f"no comparison fails, but {len(untestable)} of {k} cannot be made "
                             f"(e.g. {', '.join(untestable[:3])})"}[verdict]
    seeds = sorted({r["seed"] for r in rows if r["family"] in ("transfer", "snn_pgd")})
    lines = [f"Each method at its operating point T_op; transfer: {(attack or 'n/a').upper()} crafted on the {src} "
             f"ANN; {len(seeds)} seed(s); family k = {k} (3 measures x {len(eps)} eps x {len(bases)} baselines), "
             f"cells: {SUBJECT}'s advantage in points [{_level(k)} interval], bold where it lies above 0. "
             f"Gradient-masking checks: {status} (gated: a method whose checks failed or were not run is not "
             "testable, not robust).", "",
             *_table(["competitor", "judged", "measure"] + [f"eps {e:g}/255" for e in eps], grid)]
    head = ["competitor", "judged", "measure", "eps (1/255)", f"{SUBJECT} acc", "competitor acc",
            f"{SUBJECT}'s advantage (points) [{_level(k)} interval]", "result", "McNemar p per seed"]
    return Claim(verdict, why, k, lines, lines[:2] + _table(head, detail))


def _mean(by_seed_bits: dict) -> str:
    return spread([100 * float(v.mean()) for v in by_seed_bits.values()], ".1f") if by_seed_bits else "n/a"


# -- 5. leak ----------------------------------------------------------------------------------

def leak_comparisons(rows: list[dict], k: int | None = None) -> list[dict]:
    """Every leak < 1 against leak 1 of the same method under the same condition (attack,
    noise mode and level) at the same point, on the same images and noise draws:
    {method, attack, mode, level, point, T (per seed), leak_mode, leak, rows, base, cmp};
    ``cmp`` is the difference at the level of a family of ``k`` (None: not computed)."""
    groups = index([r for r in rows if r["family"] == "leak"],
                   "method", "attack", "mode", "level", "point", "leak", "leak_mode")
    keys = sorted({key for key in groups if key[5] != 1.0},
                  key=lambda x: (x[0], x[1], x[2], x[3], x[6], -x[5], _pt_key(x[4])))
    out = []
    for m, attack, mode, level, pt, lv, lm in keys:
        cond = dict(method=m, attack=attack, mode=mode, level=level, point=pt)
        base = [r for key, rs in groups.items() if key[:5] == (m, attack, mode, level, pt) and key[5] == 1.0
                for r in rs]
        other = groups[(m, attack, mode, level, pt, lv, lm)]
        out.append(dict(cond, T=sorted({r["T"] for r in other}), leak_mode=lm, leak=lv, rows=other, base=base,
                        cmp=None if k is None else paired(by_seed(other), by_seed(base), k)))
    return out


def _pt_key(point: str) -> int:
    return int(point[2:]) if point[2:].isdigit() else 10 ** 6


def leak_settings(comps: list[dict]) -> list[tuple]:
    """The (method, leak mode, leak, point) settings where the leak can act (T >= 2)."""
    return sorted({(c["method"], c["leak_mode"], c["leak"], c["point"]) for c in comps
                   if min(c["T"]) >= LEAK_MIN_T}, key=lambda s: (s[0], s[1], -s[2], _pt_key(s[3])))


def leak(cfg: dict, rows: list[dict]) -> tuple[Claim, Claim]:
    """(5a, 5b): the leak's cost in clean accuracy, and its gain under the authors' noise."""
    rc = cfg["robustness"]
    leak_rows = [r for r in rows if r["family"] == "leak"]
    if not leak_rows:
        why = "no leak rows (robustness.leaks has no leak < 1, or leak_methods ran none)"
        return Claim(NOT_TESTABLE, why), Claim(NOT_TESTABLE, why)
    first = leak_comparisons(rows)
    acting = [c for c in first if min(c["T"]) >= LEAK_MIN_T and c["attack"] in ("clean", AUTHORS)]
    if not acting:
        held = sorted({f"{r['attack']} {r['mode']}" for r in leak_rows})
        why = ("older data: its leak rows (" + ", ".join(held) + ") predate the leak study on clean images and "
               f"under the authors' noise at T >= {LEAK_MIN_T}; a new run of the preset renews them")
        return Claim(NOT_TESTABLE, why), Claim(NOT_TESTABLE, why)
    settings = leak_settings(acting)
    k = len(settings)
    comps = [c for c in leak_comparisons(rows, k) if min(c["T"]) >= LEAK_MIN_T]
    clean = [c for c in comps if c["attack"] == "clean"]
    noisy = [c for c in comps if c["attack"] == AUTHORS]
    seeds = sorted({r["seed"] for r in leak_rows})
    intro = (f"{len(settings)} settings (leak method x leak mode x leak < 1 x T in "
             f"{sorted({t for c in comps for t in c['T']})}), each against leak 1 at the same T on the same "
             f"images{' and noise draws' if noisy else ''}; {len(seeds)} seed(s), "
             f"{min(c['cmp'].n_images for c in comps if c['cmp'])} images per seed; family k = {k}, "
             f"intervals at {_level(k)}.")
    # 5a: every setting must stay above -EQUIVALENCE_POINTS in clean accuracy
    if not clean:
        a = Claim(NOT_TESTABLE, "no clean leak rows", k)
    else:
        bad = [c for c in clean if c["cmp"] is not None and not c["cmp"].above(-EQUIVALENCE_POINTS)]
        missing = [c for c in clean if c["cmp"] is None]
        verdict = paper.decide(len(bad), len(missing))
        if verdict == NOT_TESTABLE:
            why = f"{len(missing)} settings not measured clean"
        else:
            worst = min((c for c in clean if c["cmp"]), key=lambda c: c["cmp"].lo)
            why = (f"every setting's interval lies above -{EQUIVALENCE_POINTS:g} points (lowest bound: "
                   if verdict == SUPPORTED else
                   f"{len(bad)} of {len(clean)} settings may cost more than {EQUIVALENCE_POINTS:g} points (e.g. ")
            why += f"{_name(worst)}, {worst['cmp'].interval()})"
        a = Claim(verdict, why, k, [intro, ""] + _leak_grid(clean, lambda d: not d.above(-EQUIVALENCE_POINTS)),
                  _leak_detail(clean, -EQUIVALENCE_POINTS))
    # 5b: some setting above 0 under the authors' noise
    if not noisy:
        b = Claim(NOT_TESTABLE, f"no leak rows under {authors_setting(rc)}", k)
    else:
        good = sorted((c for c in noisy if c["cmp"] is not None and c["cmp"].above()), key=lambda c: -c["cmp"].lo)
        missing = [c for c in noisy if c["cmp"] is None]
        verdict = SUPPORTED if good else (NOT_TESTABLE if missing else NOT_SUPPORTED)
        if good:
            why = (f"{len(good)} of {len(noisy)} settings lie above 0 (highest lower bound: {_name(good[0])}, "
                   f"{good[0]['cmp'].interval()})")
        elif missing:
            why = f"none above 0 among those measured; {len(missing)} settings not measured"
        else:
            best = max(noisy, key=lambda c: c["cmp"].lo)
            why = f"no setting's interval lies above 0 (highest lower bound: {_name(best)}, {best['cmp'].interval()})"
        b = Claim(verdict, why, k, [intro, ""] + _leak_grid(noisy, lambda d: d.above()), _leak_detail(noisy, 0.0))
    return a, b


def _name(c: dict) -> str:
    return f"{c['method']} leak {c['leak']:g} ({c['leak_mode']}) at {c['point']}"


def _leak_grid(comps: list[dict], bold) -> list[str]:
    """Rows (method, leak mode, leak) x columns (point): difference [interval], bold where ``bold``."""
    pts = point_order({c["point"] for c in comps})
    keys = list(dict.fromkeys((c["method"], c["leak_mode"], c["leak"]) for c in comps))
    index = {(c["method"], c["leak_mode"], c["leak"], c["point"]): c["cmp"] for c in comps}
    out = []
    for key in keys:
        cells = []
        for pt in pts:
            d = index.get(key + (pt,))
            cells.append("n/a" if d is None else (f"**{d.interval()}**" if bold(d) else d.interval()))
        out.append([key[0], key[1], f"{key[2]:g}"] + cells)
    return _table(["method", "leak mode", "leak"] + [f"T = {p[2:]}" if p != "T_op" else "T_op" for p in pts], out)


def _leak_detail(comps: list[dict], bound: float) -> list[str]:
    rows = [[c["method"], c["leak_mode"], f"{c['leak']:g}", c["point"], _acc(c["base"]), _acc(c["rows"]),
             c["cmp"].interval() if c["cmp"] else "n/a", c["cmp"].result(bound) if c["cmp"] else "not measured",
             c["cmp"].seed_ps() if c["cmp"] else "-"] for c in comps]
    lv = _level(comps[0]["cmp"].k) if comps and comps[0]["cmp"] else ""
    return _table(["method", "leak mode", "leak", "point", "leak 1 acc", "this leak acc",
                   f"leak - no leak (points) [{lv} interval]", "result", "McNemar p per seed"], rows)


def claims(cfg: dict, rows: list[dict]) -> dict[str, Claim]:
    """{"noise", "adversarial", "leak_clean", "leak_noise"}: each claim's verdict from the rows."""
    a, b = leak(cfg, rows)
    return {"noise": noise(cfg, rows), "adversarial": adversarial(cfg, rows), "leak_clean": a, "leak_noise": b}
