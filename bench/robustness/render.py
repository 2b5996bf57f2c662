"""robustness.md and the verdicts for results/README.md, from the stage's rows alone.

A pure function of the rows (and the preset): the drift test re-renders robustness.md
from robustness.csv. Figures over seeds are bench.stats.spread (mean ± std [95 % CI]);
paired comparisons are bench.robust_stats.paired (difference, CI, McNemar's p).
"""
from __future__ import annotations

from collections import defaultdict

from .stats import fmt_paired, half_width, paired, robust_correct
from ..stats import ALPHA, spread

POINTS = ("T_1", "T_4", "T_op")


def _sel(rows, **kw):
    return [r for r in rows if all(r[k] == v for k, v in kw.items())]


def by_seed(rows) -> dict:
    return {r["seed"]: r for r in rows}


def methods_of(cfg, rows) -> list[str]:
    present = {r["method"] for r in rows if r["family"] == "clean"}
    return [m for m in cfg["methods"] if m in present]


def points_of(rows) -> list[str]:
    present = {r["point"] for r in rows if r["family"] == "clean"}
    fixed = sorted((p for p in present if p != "T_op"), key=lambda p: int(p[2:]))
    return fixed + (["T_op"] if "T_op" in present else [])


def eps_of(rows) -> list[float]:
    return sorted({r["level"] for r in rows if r["family"] in ("transfer", "snn_pgd", "ann") and r["attack"] != "clean"})


def _acc(rows) -> str:
    return spread([100 * r["acc"] for r in rows if r["n"]], ".1f")


def _n_line(rows, what="") -> str:
    ns = sorted({int(r["n"]) for r in rows if r["n"]})
    if not ns:
        return ""
    n = ns[0]
    seeds = len({r["seed"] for r in rows})
    return (f"*{what}{'n = ' + str(n) if len(ns) == 1 else 'n = ' + '-'.join(map(str, (ns[0], ns[-1])))} "
            f"images per seed, {seeds} seed{'s' * (seeds != 1)}: a single accuracy's 95 % CI half-width is at "
            f"most ±{half_width(n):.1f} points (binomial at 50 %).*")


def robust_rows(rows) -> list[dict]:
    """Per (seed, method, point, eps): accuracy when an image counts only if it is correct
    clean and under every attack tried there (all transfer sources and attacks, white-box
    PGD through time where run), on the images all of them share."""
    out = []
    groups = defaultdict(list)
    for r in rows:
        if r["family"] in ("transfer", "snn_pgd") and r["n"]:
            groups[(r["seed"], r["method"], r["point"], r["level"])].append(r)
    clean = {(r["seed"], r["method"], r["point"]): r for r in rows if r["family"] == "clean"}
    for (seed, m, pt, eps), rs in groups.items():
        c = clean.get((seed, m, pt))
        members = rs + ([c] if c else [])
        ok, n = robust_correct(members)
        out.append(dict(seed=seed, family="robust", method=m, point=pt, level=eps, n=n,
                        acc=float(ok.mean()) if n else float("nan"), T=rs[0]["T"],
                        whitebox=any(r["family"] == "snn_pgd" for r in rs),
                        attacks=sorted({f"{r['family']}:{r['source']}:{r['attack']}" for r in rs})))
    return out


def _eps_table(rows, methods, pts, eps, family, **kw) -> list[str]:
    lines = ["| method | point | T | " + " | ".join(f"eps {e:g}/255" for e in eps) + " |",
             "|---|---|---|" + "---|" * len(eps)]
    for m in methods:
        for pt in pts:
            rs = _sel(rows, family=family, method=m, point=pt, **kw)
            if not rs:
                continue
            ts = sorted({r["T"] for r in rs})
            cells = []
            for e in eps:
                cell = [r for r in rs if r["level"] == e]
                notes = {r.get("note", "") for r in cell if not r["n"]}
                cells.append(_acc(cell) if any(r["n"] for r in cell) else
                             ("not run" if notes else "n/a"))
            lines.append(f"| {m} | {pt} | {', '.join(map(str, ts))} | " + " | ".join(cells) + " |")
    return lines


def render(cfg: dict, rows: list[dict]) -> str:
    rc = cfg["robustness"]
    methods, pts, eps = methods_of(cfg, rows), points_of(rows), eps_of(rows)
    seeds = sorted({r["seed"] for r in rows})
    walls = {s: max(r["wall_s"] for r in rows if r["seed"] == s) for s in seeds}
    L = [f"# Robustness: {cfg['name']} ({cfg['dataset']} / {cfg['arch']})", "",
         f"Seeds {seeds}; accuracy in %, mean ± std [95 % CI over seeds] (one seed: the value). "
         "Every part uses the head of one fixed pool of test images, the same for every method, and "
         "noise is drawn per (seed, image, step), so methods, T and leaks see the same draws. "
         f"Evaluation points: T = {', '.join(p[2:] for p in pts if p != 'T_op')} and each method's "
         f"operating point T_op, the first t within {rc['op_gap']:g} point of its own ANN (T_max = "
         f"{rc['T_max']} if never). eps in units of 1/255 on [0, 1] pixels. Stage wall time per seed: "
         + ", ".join(f"seed {s}: {walls[s]:.0f} s" for s in seeds) + ".", ""]

    L += ["## Operating points", "", "| method | T_op per seed | how it was found (first seed) |", "|---|---|---|"]
    for m in methods:
        rs = sorted(_sel(rows, family="clean", method=m, point="T_op"), key=lambda r: r["seed"])
        L.append(f"| {m} | {', '.join(str(r['T']) for r in rs)} | {rs[0]['note'] if rs else ''} |")
    L.append("")

    rob = robust_rows(rows)
    clean = [r for r in rows if r["family"] == "clean"]
    L += ["## Clean and robust accuracy", "",
          "Robust: an image counts only if it is correct clean and under every attack tried at that eps "
          "and T (PGD and FGSM from every source ANN, and white-box PGD through time); per-image minimum, "
          "on the images all of them share. * = white-box PGD through time was not run at that point "
          "(transfer attacks only).", "",
          _n_line(clean, "clean: ") + " " + _n_line(rob, "robust: "), "",
          "| method | point | T | clean | " + " | ".join(f"robust eps {e:g}/255" for e in eps) + " |",
          "|---|---|---|---|" + "---|" * len(eps)]
    for m in methods:
        for pt in pts:
            cr = _sel(clean, method=m, point=pt)
            if not cr:
                continue
            cells = []
            for e in eps:
                rr = [r for r in rob if r["method"] == m and r["point"] == pt and r["level"] == e]
                cells.append(_acc(rr) + ("" if all(r["whitebox"] for r in rr) else " *") if rr else "n/a")
            L.append(f"| {m} | {pt} | {', '.join(str(r['T']) for r in cr)} | {_acc(cr)} | " + " | ".join(cells) + " |")
    L.append("")

    tr = [r for r in rows if r["family"] == "transfer"]
    src = rc["common_source"]
    att = "pgd" if "pgd" in {r["attack"] for r in tr} else (tr[0]["attack"] if tr else "pgd")
    head = [r for r in tr if r["source"] == src and r["attack"] == att]
    L += [f"## Headline: {att.upper()} crafted on the {src} ANN, the one common source for every method", "",
          _n_line(head), ""] + _eps_table(rows, methods, pts, eps, "transfer", source=src, attack=att) + [""]

    wb = [r for r in rows if r["family"] == "snn_pgd"]
    if wb:
        L += ["## White-box PGD through time on each SNN", "",
              f"BPTT with the surrogate spike gradient through the evaluated T steps "
              f"(UnrolledSNN), PGD-{rc['snn_pgd_steps']} with {rc['snn_pgd_restarts']} random start(s); "
              f"points with T > {rc['snn_pgd_T_max']} are not run.", "", _n_line(wb), ""] \
            + _eps_table(rows, methods, pts, eps, "snn_pgd") + [""]

    ann = [r for r in rows if r["family"] == "ann"]
    if ann:
        L += ["## Each source ANN's own white-box accuracy", "", _n_line(ann), "",
              "| source ANN | attack | clean | " + " | ".join(f"eps {e:g}/255" for e in eps) + " |",
              "|---|---|---|" + "---|" * len(eps)]
        srcs = list(dict.fromkeys(r["source"] for r in ann))
        for s in srcs:
            c = _sel(ann, source=s, attack="clean")
            for a in sorted({r["attack"] for r in ann if r["attack"] != "clean"}):
                L.append(f"| {s} | {a} | {_acc(c)} | " + " | ".join(
                    _acc(_sel(ann, source=s, attack=a, level=e)) for e in eps) + " |")
        L.append("")

    if tr:
        L += ["## Transfer matrix at each method's operating point", "",
              "Rows: the ANN the attack was crafted on; columns: the SNN it is evaluated on (at T_op).", "",
              _n_line(tr), "", "| attack | eps | source ANN | " + " | ".join(methods) + " |",
              "|---|---|---|" + "---|" * len(methods)]
        for a in sorted({r["attack"] for r in tr}, key=lambda a: a != "pgd"):
            for e in eps:
                for s in list(dict.fromkeys(r["source"] for r in tr)):
                    L.append(f"| {a} | {e:g}/255 | {s} | " + " | ".join(
                        _acc(_sel(tr, attack=a, level=e, source=s, method=m, point="T_op")) for m in methods) + " |")
        L += ["", "![accuracy vs eps](robustness_eps.png)", "", "![transfer matrix](robustness_transfer.png)", ""]

    L += _noise_section(rc, rows, methods, pts)
    L += _leak_section(rc, rows, methods, pts)
    L += _sanity_section(rows)
    return "\n".join(L) + "\n"


def _ref_method(methods) -> str | None:
    return "steprelu" if "steprelu" in methods else None


def _noise_section(rc, rows, methods, pts) -> list[str]:
    noise = [r for r in rows if r["family"] == "noise"]
    if not noise:
        return []
    ref = _ref_method(methods)
    auth = [r for r in noise if r["attack"] == "salt_pepper_authors"]
    L = ["## Noise", "", f"### The authors' setting: static salt-and-pepper AddNoise({rc['authors_s']:g}, "
         f"{rc['authors_p']:g}) (s = {rc['authors_s']:g} on a fraction {rc['authors_p']:g} of the images)", "",
         _n_line(auth), "",
         "| method | point | T | clean | AddNoise | " + (f"{ref} at T_op minus this (points) [95 % CI], McNemar p"
                                                         if ref else "") + " |",
         "|---|---|---|---|---|" + ("---|" if ref else "")]
    for m in methods:
        for pt in pts:
            a = _sel(auth, method=m, point=pt)
            if not a:
                continue
            cmp = ""
            if ref:
                cmp = " | " + ("" if m == ref else fmt_paired(paired(
                    by_seed(_sel(auth, method=ref, point="T_op")), by_seed(a))))
            L.append(f"| {m} | {pt} | {', '.join(str(r['T']) for r in a)} | "
                     f"{_acc(_sel(rows, family='clean', method=m, point=pt))} | {_acc(a)}{cmp} |")
    L.append("")
    for kind, key in (("salt_pepper", "s"), ("gaussian", "sigma")):
        for mode in ("static", "dynamic"):
            rs = _sel(noise, attack=kind, mode=mode)
            if not rs:
                continue
            levels = sorted({r["level"] for r in rs}, reverse=kind == "salt_pepper")
            L += [f"### {kind}, {mode}", "", _n_line(rs), "",
                  "| method | point | " + " | ".join(f"{key} = {lv:g}" for lv in levels) + " |",
                  "|---|---|" + "---|" * len(levels)]
            for m in methods:
                for pt in pts:
                    if _sel(rs, method=m, point=pt):
                        L.append(f"| {m} | {pt} | " + " | ".join(
                            _acc(_sel(rs, method=m, point=pt, level=lv)) for lv in levels) + " |")
            L.append("")
    L += ["![noise sweeps](robustness_noise.png)", ""]
    return L


def leak_comparisons(rows, method=None) -> list[dict]:
    """Every leak < 1 against leak 1 on the same images and draws, per (method, mode, noise
    mode, point): {method, leak_mode, mode, point, leak, base (rows), cmp (Paired)}."""
    leak = [r for r in rows if r["family"] == "leak" and (method is None or r["method"] == method)]
    out = []
    keys = sorted({(r["method"], r["leak_mode"], r["mode"], r["point"], r["leak"]) for r in leak if r["leak"] != 1.0},
                  key=lambda k: (k[0], k[1], k[2], k[3], -k[4]))
    for m, lm, mode, pt, lv in keys:
        base = _sel(leak, method=m, mode=mode, point=pt, leak=1.0)
        other = _sel(leak, method=m, mode=mode, point=pt, leak=lv, leak_mode=lm)
        out.append(dict(method=m, leak_mode=lm, mode=mode, point=pt, leak=lv, base=base, rows=other,
                        cmp=paired(by_seed(other), by_seed(base))))
    return out


def _leak_section(rc, rows, methods, pts) -> list[str]:
    leak = [r for r in rows if r["family"] == "leak"]
    if not leak:
        return []
    lk = {"kind": "clean and the authors'", "level": rc["authors_s"]}   # interim, until the leak verdict lands
    comps = leak_comparisons(rows)
    seeds = len({r["seed"] for r in leak})
    leaks = sorted({r["leak"] for r in leak if r["leak"] != 1.0}, reverse=True)
    L = [f"## Leak under {lk['kind']} noise (level {lk['level']:g})", "",
         "exp: V <- leak * V + x; linear: V <- V - (1 - leak) * theta + x, floored at the reset value. "
         "Each cell: accuracy with this leak minus accuracy with leak 1 (points) on the same images and "
         "noise draws, its 95 % CI ("
         + ("Student t over the per-seed differences" if seeds >= 2 else
            "one seed: normal interval of the per-image paired differences, images only")
         + ") and McNemar's exact p on the discordant images pooled over seeds.", "", _n_line(leak), "",
         "| method | leak mode | noise | point | T | leak 1 | " + " | ".join(f"leak {lv:g}" for lv in leaks) + " |",
         "|---|---|---|---|---|---|" + "---|" * len(leaks)]
    index = {(c["method"], c["leak_mode"], c["mode"], c["point"], c["leak"]): c for c in comps}
    for m in methods:
        for lm in rc["leak_modes"]:
            for mode in ("static", "dynamic"):
                for pt in pts:
                    base = _sel(leak, method=m, mode=mode, point=pt, leak=1.0)
                    if not base:
                        continue
                    cells = [fmt_paired(index[(m, lm, mode, pt, lv)]["cmp"]) if (m, lm, mode, pt, lv) in index
                             else "n/a" for lv in leaks]
                    L.append(f"| {m} | {lm} | {mode} | {pt} | {', '.join(str(r['T']) for r in base)} | "
                             f"{_acc(base)} | " + " | ".join(cells) + " |")
    L += ["", "![leak](robustness_leak.png)", ""]
    return L


def _sanity_section(rows) -> list[str]:
    san = [r for r in rows if r["family"] == "sanity"]
    if not san:
        return []
    L = ["## Gradient-masking sanity checks (white-box PGD through time)", "", _n_line(san), "",
         "| method | check | eps | seed | value | result |", "|---|---|---|---|---|---|"]
    for r in sorted(san, key=lambda r: (r["method"], r["attack"], r["level"], r["seed"])):
        val = "n/a" if r["acc"] != r["acc"] else f"{100 * r['acc']:.1f}"
        L.append(f"| {r['method']} | {r['attack']} | {r['level']:g} | {r['seed']} | {val} | {r['note']} |")
    return L + [""]


# -- verdicts for results/README.md ---------------------------------------------------------

def claims(cfg: dict, rows: list[dict]) -> dict:
    return {"noise": _noise_claim(cfg, rows), "leak": _leak_claim(cfg, rows)}


def _noise_claim(cfg, rows) -> dict:
    methods = methods_of(cfg, rows)
    ref = _ref_method(methods)
    noise = [r for r in rows if r["family"] == "noise"]
    others = [m for m in methods if m != ref]
    if not ref or not others or not noise:
        return {"verdict": "not testable here",
                "lines": ["StepReLU and at least one other method must be measured under noise."]}
    rc = cfg["robustness"]
    auth = [r for r in noise if r["attack"] == "salt_pepper_authors"]
    lines = [f"Setting: static salt-and-pepper AddNoise({rc['authors_s']:g}, {rc['authors_p']:g}) as in the "
             f"authors' code, each method at its own operating point T_op; {ref} minus the other method, "
             "points [95 % CI], McNemar's exact p pooled over seeds "
             f"({len({r['seed'] for r in auth})} seed(s), {_n_line(auth).strip('*')})", ""]
    wins = 0
    for m in others:
        c = paired(by_seed(_sel(auth, method=ref, point="T_op")), by_seed(_sel(auth, method=m, point="T_op")))
        ok = c is not None and c.diff > 0 and c.p < ALPHA
        wins += ok
        lines.append(f"- {ref} vs {m}: {fmt_paired(c)}")
    sweep = defaultdict(lambda: [0, 0, 0])
    for r in {(r["attack"], r["mode"], r["level"]) for r in noise if r["attack"] != "salt_pepper_authors"}:
        for m in others:
            c = paired(by_seed(_sel(noise, attack=r[0], mode=r[1], level=r[2], method=ref, point="T_op")),
                       by_seed(_sel(noise, attack=r[0], mode=r[1], level=r[2], method=m, point="T_op")))
            if c is None:
                continue
            k = 0 if (c.p < ALPHA and c.diff > 0) else (1 if (c.p < ALPHA and c.diff < 0) else 2)
            sweep[(r[0], r[1])][k] += 1
    if sweep:
        lines.append("")
        lines.append(f"Sweeps at T_op (comparisons of {ref} with each other method, p < {ALPHA:g}):")
        for (kind, mode), (better, worse, tie) in sorted(sweep.items()):
            lines.append(f"- {kind} {mode}: {ref} significantly better in {better}, worse in {worse}, "
                         f"no significant difference in {tie}")
    verdict = "supported" if wins == len(others) else "not supported"
    lines.append("")
    lines.append(f"Verdict rule: supported if {ref} is significantly more accurate (p < {ALPHA:g}) than every "
                 f"other method under the authors' noise at the operating points ({wins} of {len(others)}).")
    return {"verdict": verdict, "lines": lines}


def _leak_claim(cfg, rows) -> dict:
    methods = methods_of(cfg, rows)
    ref = _ref_method(methods) or (methods[0] if methods else None)
    comps = [c for c in leak_comparisons(rows, ref) if c["cmp"] is not None] if ref else []
    if not comps:
        return {"verdict": "not testable here",
                "lines": ["No leak < 1 was compared with leak 1 on the same images (robustness.leaks)."]}
    # The leak never acts at the first step (annsnn.neurons), so a comparison at T = 1 is the
    # same network twice: it cannot differ and would only tighten the Bonferroni threshold.
    # Left out only when the data agree (no discordant image); one that differs stays in.
    at_t1 = [c for c in comps if {r["T"] for r in c["rows"] + c["base"]} == {1}
             and c["cmp"].only_a == c["cmp"].only_b == 0]
    comps = [c for c in comps if c not in at_t1]
    if not comps:
        return {"verdict": "not testable here",
                "lines": [f"Leak was compared with leak 1 only at T = 1, where the leak never acts "
                          f"({len(at_t1)} comparisons, all identical)."]}
    lk = {"kind": "clean and the authors'", "level": cfg["robustness"]["authors_s"]}   # interim
    k = len(comps)
    alpha = ALPHA / k
    seeds = comps[0]["cmp"].n_seeds
    lines = [f"Setting: {ref}, {lk['kind']} noise level {lk['level']:g}, every leak < 1 against leak 1 on the "
             f"same images and noise draws; {seeds} seed(s), {comps[0]['cmp'].n_images} images per seed; "
             f"difference in points [95 % CI, {comps[0]['cmp'].ci_kind}], McNemar's exact p pooled over seeds. "
             f"{k} comparisons: Bonferroni threshold p < {alpha:.2g}."
             + (f" {len(at_t1)} comparisons at T = 1 left out: the leak never acts at the first step, and "
                f"each had 0 discordant images." if at_t1 else ""), ""]
    better = [c for c in comps if c["cmp"].diff > 0 and c["cmp"].p < alpha and (c["cmp"].lo is None or c["cmp"].lo > 0)]
    worse = [c for c in comps if c["cmp"].diff < 0 and c["cmp"].p < alpha]
    best = max(comps, key=lambda c: c["cmp"].diff)
    worst = min(comps, key=lambda c: c["cmp"].diff)
    for tag, c in (("largest gain", best), ("largest loss", worst)):
        lines.append(f"- {tag}: leak {c['leak']:g} ({c['leak_mode']}), {c['mode']} noise, {c['point']}: "
                     f"{fmt_paired(c['cmp'])}")
    lines.append(f"- significant gains: {len(better)} of {k}; significant losses: {len(worse)} of {k}")
    verdict = "supported" if better else "not supported"
    lines.append("")
    lines.append("Verdict rule: supported if some leak < 1 raises accuracy under noise with p below the "
                 "Bonferroni threshold and a CI above 0.")
    return {"verdict": verdict, "lines": lines}

