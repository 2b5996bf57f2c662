"""The robustness rows selected and grouped the one way the pages, figures and verdicts use."""
from __future__ import annotations

from collections import defaultdict
from operator import itemgetter

from .stats import robust_correct

AUTHORS = "salt_pepper_authors"   # the authors' AddNoise(s, p): static, on a fraction p of images


def sel(rows, **kw) -> list[dict]:
    """The rows whose fields equal ``kw``."""
    if not kw:
        return list(rows)
    get, want = itemgetter(*kw), tuple(kw.values())
    if len(kw) == 1:
        want = want[0]
    return [r for r in rows if get(r) == want]


def index(rows, *fields) -> dict[tuple, list[dict]]:
    """The rows grouped by the values of ``fields`` (one pass; for many look-ups)."""
    out: dict[tuple, list[dict]] = defaultdict(list)
    get = itemgetter(*fields)
    for r in rows:
        key = get(r)
        out[key if len(fields) > 1 else (key,)].append(r)
    return out


def by_seed(rows) -> dict:
    return {r["seed"]: r for r in rows}


def methods_of(cfg, rows) -> list[str]:
    """The preset's methods that have clean rows, in the preset's order."""
    present = {r["method"] for r in rows if r["family"] == "clean"}
    return [m for m in cfg["methods"] if m in present]


def point_order(points) -> list[str]:
    """T_1, T_2, ... by their step, then T_op."""
    fixed = sorted((p for p in set(points) if p.startswith("T_") and p[2:].isdigit()), key=lambda p: int(p[2:]))
    return fixed + (["T_op"] if "T_op" in set(points) else [])


def points_of(rows) -> list[str]:
    """The evaluation points of the clean rows."""
    return point_order(r["point"] for r in rows if r["family"] == "clean")


def eps_of(rows) -> list[float]:
    return sorted({r["level"] for r in rows if r["family"] in ("transfer", "snn_pgd", "ann") and r["attack"] != "clean"})


def robust_rows(rows) -> list[dict]:
    """Per (seed, method, point, eps): accuracy when an image counts only if it is correct
    clean and under every attack tried there (all transfer sources and attacks, white-box
    PGD through time where run), on the images all of them share; ``ok`` holds the
    per-image result."""
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
                        acc=float(ok.mean()) if n else float("nan"), T=rs[0]["T"], ok=ok,
                        whitebox=any(r["family"] == "snn_pgd" for r in rs),
                        attacks=sorted({f"{r['family']}:{r['source']}:{r['attack']}" for r in rs})))
    return out


def sanity_status(rows, method) -> str | None:
    """"pass" when every gradient-masking check of ``method`` (every seed) passed, "FAIL"
    when one failed, None when none was run."""
    san = sel(rows, family="sanity", method=method)
    if not san:
        return None
    return "pass" if all(str(r["note"]).startswith("pass") for r in san) else "FAIL"
