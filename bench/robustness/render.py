"""robustness.md from the stage's rows alone.

A pure function of the rows (and the preset): the drift test re-renders robustness.md
from robustness.csv. Figures over seeds are bench.stats.spread (mean ± std [95 % CI]);
comparisons follow the suite's one rule (bench.stats: hierarchical bootstrap over seeds,
then images, at the family's corrected level, McNemar per seed beside it) and are the ones
the verdicts use (bench.robustness.verdicts).
"""
from __future__ import annotations

from . import verdicts
from .groups import AUTHORS, by_seed as _by_seed, eps_of, methods_of, point_order, points_of, robust_rows, sel as _sel
from .stats import drop, half_width
from ..stats import spread


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

    L += _adversarial_section(cfg, rows)
    L += _noise_section(cfg, rows, methods, pts)
    L += _leak_section(cfg, rows, methods)
    L += _sanity_section(rows)
    return "\n".join(L) + "\n"


def _noise_section(cfg, rows, methods, pts) -> list[str]:
    noise = [r for r in rows if r["family"] == "noise"]
    if not noise:
        return []
    rc = cfg["robustness"]
    clean = [r for r in rows if r["family"] == "clean"]
    auth = [r for r in noise if r["attack"] == AUTHORS]
    setting = verdicts.authors_setting(rc)
    L = ["## Noise", "", f"### The authors' setting: static salt-and-pepper {setting} (s = {rc['authors_s']:g} "
         f"on a fraction {rc['authors_p']:g} of the images)", "",
         "Drop from clean: clean accuracy minus accuracy under the noise, on the same images (points).", "",
         _n_line(auth), "", "| method | point | T | clean | under noise | drop from clean |", "|---|---|---|---|---|---|"]
    for m in methods:
        for pt in pts:
            a = _sel(auth, method=m, point=pt)
            if not a:
                continue
            c = _sel(clean, method=m, point=pt)
            L.append(f"| {m} | {pt} | {', '.join(str(r['T']) for r in a)} | {_acc(c)} | {_acc(a)} | "
                     f"{spread(drop(_by_seed(c), _by_seed(a)), '.1f')} |")
    claim = verdicts.noise(cfg, rows)
    L += ["", f"### Compared with {verdicts.SUBJECT} (the noise claim of results/README.md: {claim.verdict})", ""]
    L += claim.detail if claim.detail else [claim.why]
    L.append("")
    for kind, key in (("salt_pepper", "s"), ("gaussian", "sigma")):
        for mode in ("static", "dynamic"):
            rs = _sel(noise, attack=kind, mode=mode)
            if not rs:
                continue
            levels = sorted({r["level"] for r in rs}, reverse=kind == "salt_pepper")
            L += [f"### {kind}, {mode}", "", _n_line(rs), "",
                  "| method | point | measure | " + " | ".join(f"{key} = {lv:g}" for lv in levels) + " |",
                  "|---|---|---|" + "---|" * len(levels)]
            for m in methods:
                for pt in pts:
                    if not _sel(rs, method=m, point=pt):
                        continue
                    c = _by_seed(_sel(clean, method=m, point=pt))
                    L.append(f"| {m} | {pt} | accuracy | " + " | ".join(
                        _acc(_sel(rs, method=m, point=pt, level=lv)) for lv in levels) + " |")
                    L.append(f"| {m} | {pt} | drop from clean | " + " | ".join(
                        spread(drop(c, _by_seed(_sel(rs, method=m, point=pt, level=lv))), ".1f")
                        for lv in levels) + " |")
            L.append("")
    L += ["![noise sweeps](robustness_noise.png)", ""]
    return L


def condition_label(attack: str, mode: str, level: float, rc: dict) -> str:
    """How a leak condition reads: clean images, the authors' noise, or an older sweep setting."""
    if attack == "clean":
        return "clean images"
    if attack == AUTHORS:
        return f"the authors' noise {verdicts.authors_setting(rc)}"
    return f"{attack} noise, {mode}, level {level:g}"


def _leak_section(cfg, rows, methods) -> list[str]:
    leak = [r for r in rows if r["family"] == "leak"]
    if not leak:
        return []
    rc = cfg["robustness"]
    first = verdicts.leak_comparisons(rows)
    acting = verdicts.leak_settings(first)
    k = len(acting) or len({(c["method"], c["leak_mode"], c["leak"], c["point"]) for c in first})
    comps = verdicts.leak_comparisons(rows, k)
    seeds = len({r["seed"] for r in leak})
    L = ["## Leak", "",
         "exp: V <- leak * V + x; linear: V <- V - (1 - leak) * theta + x, floored at the reset value. The leak acts "
         "on the potential carried from one step to the next, so it cannot act at t = 1: the first step's "
         "potential never saw a leak. Each cell: accuracy with this leak minus accuracy with leak 1 (points) at "
         "the same T, on the same images and noise draws, with its interval from the hierarchical bootstrap ("
         + ("seeds, then images" if seeds >= 2 else "one seed: images only")
         + f") at {verdicts.fmt_level(verdicts.family_level(k))}, the level of the leak claims' family of "
         f"k = {k} settings; McNemar's p per seed in the tables below each grid.", ""]
    conditions = list(dict.fromkeys((c["attack"], c["mode"], c["level"]) for c in comps))
    for attack, mode, level in sorted(conditions, key=lambda c: (c[0] != "clean", c[0] != AUTHORS, c)):
        part = [c for c in comps if (c["attack"], c["mode"], c["level"]) == (attack, mode, level)]
        rs = [r for r in leak if (r["attack"], r["mode"], r["level"]) == (attack, mode, level)]
        pts = point_order({c["point"] for c in part})
        L += [f"### Under {condition_label(attack, mode, level, rc)}", "", _n_line(rs), "",
              "| method | leak mode | leak | " + " | ".join(pts) + " |", "|---|---|---|" + "---|" * len(pts)]
        for m in methods:
            base = [r for r in rs if r["method"] == m and r["leak"] == 1.0]
            if not base:
                continue
            L.append(f"| {m} | - | 1 (accuracy) | " + " | ".join(_acc(_sel(base, point=p)) for p in pts) + " |")
            index = {(c["leak_mode"], c["leak"], c["point"]): c["cmp"] for c in part if c["method"] == m}
            for lm, lv in dict.fromkeys((c["leak_mode"], c["leak"]) for c in part if c["method"] == m):
                L.append(f"| {m} | {lm} | {lv:g} | " + " | ".join(
                    index[(lm, lv, p)].interval() if index.get((lm, lv, p)) else "n/a" for p in pts) + " |")
        L += ["", *[ln for ln in _leak_detail(part)], ""]
    L += ["![leak](robustness_leak.png)", ""]
    return L


def _leak_detail(part) -> list[str]:
    head = ["method", "leak mode", "leak", "point", "leak - no leak (points) [interval]", "McNemar p per seed"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in part:
        d = c["cmp"]
        out.append(f"| {c['method']} | {c['leak_mode']} | {c['leak']:g} | {c['point']} | "
                   f"{d.interval() if d else 'n/a'} | {d.seed_ps() if d else '-'} |")
    return out


def _adversarial_section(cfg, rows) -> list[str]:
    claim = verdicts.adversarial(cfg, rows)
    if not claim.detail:
        return []
    return [f"## Compared with {verdicts.SUBJECT} under attack (the adversarial claim of results/README.md: "
            f"{claim.verdict})", "", *claim.detail, ""]


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
