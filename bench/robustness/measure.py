"""The robustness stage's measurements for one seed (docs/method.md#robustness).

Every part uses the head of one fixed pool of test images, so methods, parts, T and
leaks share images, and noise is drawn per (seed, image, step) (annsnn.noise.draw_paired),
so they share draws too. Each method is evaluated at three points: T = 1, T = 4 and its
operating point (the first t within ``op_gap`` points of its ANN); one simulation of the
largest needed T gives every point. Each row keeps its per-image correctness, from which
robust accuracy (per-image minimum over attacks) and the paired tests are computed.

The stage is a list of units (``_Stage.units``: one method's clean rows, one method's noise
sweep, one source's attack at one eps, ...). ``evaluate`` hands each finished unit to its
caller, which keeps it, and skips the units it is given back: an interrupted stage resumes
where it stopped and loses at most the unit it was in.
"""
from __future__ import annotations

import time
from functools import partial

import torch
from torch.utils.data import DataLoader, TensorDataset

from annsnn import convert, simulate
from annsnn.attacks import UnrolledSNN, fgsm, pgd
from annsnn.metrics import pack_bits
from annsnn.noise import make_perturbation
from annsnn.progress import progress_bar
from annsnn.recipes import get_recipe

from ..costs import first_within, operating_t
from .groups import AUTHORS
from .rows import FIELDS  # noqa: F401 (the columns every row has)


def _tensors(loader):
    xs, ys = zip(*[(x, y) for x, y in loader])
    return torch.cat(xs), torch.cat(ys)


def _loader(x, y, bs):
    return DataLoader(TensorDataset(x, y), batch_size=bs, shuffle=False)


def points(rc: dict, op: int) -> dict[str, int]:
    """{"T_1": 1, "T_4": 4, "T_op": op} from ``T_fixed`` and the operating point."""
    out = {f"T_{t}": int(t) for t in rc["T_fixed"]}
    out["T_op"] = int(op)
    return out


def choose_op(record: dict | None, rc: dict, val_sim=None) -> tuple[int, str]:
    """(operating t, how it was found), always on the validation split: from the seed's
    record (bench.costs.operating_t, its validation curve); if its T_max does not reach it,
    from ``val_sim(T) -> (acc list, ann_acc)``, a simulation of the validation images up to
    rc["T_max"]; else rc["T_max"]. The test images this stage measures on never choose it."""
    gap = float(rc["op_gap"])
    if record is not None:
        t = operating_t(record, gap)
        if t is not None:
            return t, f"validation records: within {gap:g} pt at t = {t}"
        if rc["T_max"] <= record["T_max"] or val_sim is None:
            return int(rc["T_max"]), f"not reached on validation by T = {record['T_max']}: T_max"
    if val_sim is None:
        return int(rc["T_max"]), "no record: T_max"
    acc, ann_acc = val_sim(int(rc["T_max"]))
    t = first_within(acc, ann_acc, gap)
    if t is not None:
        return t, f"validation simulation: within {gap:g} pt at t = {t}"
    return int(rc["T_max"]), f"not reached on validation by T = {rc['T_max']}: T_max"


def _correct_at(res, t: int):
    """Per-image correctness of a simulation at step t."""
    return (res.predictions[:, t - 1] == res.labels).numpy()


def _pgd(model, x, y, eps, steps, restarts, seed):
    return pgd(model, x, y, eps, steps=steps, seed=seed, restarts=restarts) if restarts > 1 \
        else pgd(model, x, y, eps, steps=steps, seed=seed)


class _Stage:
    def __init__(self, cfg, anns, dm, seed, records, progress):
        self.cfg, self.rc, self.anns, self.seed = cfg, cfg["robustness"], anns, seed
        self.calib = dm.calib_dataloader()
        self.bs = cfg["eval_batch_size"]
        self.x, self.y = _tensors(dm.test_dataloader())
        self.rows: list[dict] = []
        self.records = {r["method"]: r for r in records
                        if float(r.get("leak", 1.0)) == 1.0 and r.get("seed", seed) == seed}
        self.progress = progress
        wanted = self.rc["methods"] or cfg["methods"]
        self.methods = [m for m in cfg["methods"] if m in wanted and get_recipe(m).activation in anns]
        self.snns, self.pts = {}, {}
        self.val_loader = dm.val_dataloader() if hasattr(dm, "val_dataloader") else None
        self._val = None

    def head(self, key):
        n = min(int(self.rc[key]), len(self.y))
        return self.x[:n], self.y[:n]

    def add(self, **kw):
        row = dict(seed=self.seed, family="", method="", source="-", attack="-", mode="-", level=0.0,
                   leak=1.0, leak_mode="-", point="-", T=0, n=0, acc=0.0, correct="", note="", wall_s=0.0)
        row.update(kw)
        self.rows.append(row)

    def add_ok(self, ok, **kw):
        """A row measured on images with per-image correctness ``ok`` (n, acc and bits from it)."""
        self.add(n=len(ok), acc=float(ok.mean()), correct=pack_bits(ok), **kw)

    def add_sim(self, res, method, pts=None, **kw):
        """One row per evaluation point from one simulation (predictions [n, T])."""
        for name, t in (pts or self.pts[method]).items():
            self.add_ok(_correct_at(res, t), method=method, point=name, T=t, **kw)

    def ann_correct(self, ann, x, y):
        with torch.inference_mode():
            return torch.cat([ann(xb).argmax(1) == yb for xb, yb in _loader(x, y, self.bs)]).numpy()

    def sim(self, snn, x, y, T, perturb=None, ann=None):
        return simulate(snn, _loader(x, y, self.bs), T, ann=ann, perturb=perturb, seed=self.seed,
                        progress=False)

    def leak_methods(self) -> list[str]:
        """The methods the leak study runs (``leak_methods``; [] = every method)."""
        wanted = self.rc["leak_methods"] or self.methods
        return [m for m in self.methods if m in wanted]

    def snn(self, method):
        """The method's SNN, converted once (a resumed stage converts it again: conversion is
        deterministic given the calibration images, and cheap beside any unit)."""
        if method not in self.snns:
            self.snns[method] = convert(self.anns[get_recipe(method).activation], method, self.calib)
        return self.snns[method]

    def T_need(self, method):
        return max(self.pts[method].values())

    # -- parts ---------------------------------------------------------------------------
    def val_images(self):
        """The validation images where a missing operating point is looked for (the head the
        preset's ``val_subset`` names, as the SNN callback uses)."""
        if self._val is None:
            self._val = _tensors(self.val_loader)
            n = self.cfg.get("val_subset")
            if n:
                self._val = (self._val[0][:n], self._val[1][:n])
        return self._val

    def clean(self, m):
        """The method's operating point (on validation) and its clean rows at every point."""
        x, y = self.head("noise_images")
        ann, snn = self.anns[get_recipe(m).activation], self.snn(m)

        def val_sim(T):
            res = self.sim(snn, *self.val_images(), T, ann=ann)
            return res.acc, res.ann_acc

        op, note = choose_op(self.records.get(m), self.rc, val_sim if self.val_loader is not None else None)
        self.pts[m] = points(self.rc, op)
        res = self.sim(snn, x, y, self.T_need(m))
        self.add_sim(res, m, family="clean", attack="clean", note=note)

    def noise(self, m):
        """The method's noise sweep: every kind, level and mode, and the authors' AddNoise."""
        x, y = self.head("noise_images")
        rc = self.rc
        settings = [(k, lv, dyn) for k, lvs in (("gaussian", rc["gaussian_sigma"]),
                                                 ("salt_pepper", rc["salt_pepper_s"]))
                    for lv in lvs for dyn in rc["dynamic"]]
        for kind, level, dyn in settings:
            res = self.sim(self.snn(m), x, y, self.T_need(m), make_perturbation(kind, level, dyn))
            self.add_sim(res, m, family="noise", attack=kind, mode="dynamic" if dyn else "static",
                         level=float(level))
        p = make_perturbation("salt_pepper", rc["authors_s"], False, p_image=rc["authors_p"])
        res = self.sim(self.snn(m), x, y, self.T_need(m), p)
        self.add_sim(res, m, family="noise", attack=AUTHORS, mode="static", level=float(rc["authors_s"]),
                     note=f"AddNoise({rc['authors_s']:g}, {rc['authors_p']:g})")

    def sources(self) -> list[str]:
        return [s for s in self.rc["sources"] if s in self.anns]

    def ann_clean(self, src):
        """The source ANN's clean accuracy on the transfer images."""
        x, y = self.head("transfer_images")
        self.add_ok(self.ann_correct(self.anns[src].eval(), x, y), family="ann", method=src, source=src,
                    attack="clean", point="ANN")

    def transfer(self, src, kind, eps):
        """One attack of one source ANN at one eps, and every method's SNN on its images."""
        x, y = self.head("transfer_images")
        rc, ann, e = self.rc, self.anns[src].eval(), float(eps) / 255
        if kind == "fgsm":
            xa = torch.cat([fgsm(ann, xb, yb, e) for xb, yb in _loader(x, y, self.bs)])
        else:
            xa = torch.cat([_pgd(ann, xb, yb, e, rc["pgd_steps"], rc["pgd_restarts"], self.seed)
                            for xb, yb in _loader(x, y, self.bs)])
        self.add_ok(self.ann_correct(ann, xa, y), family="ann", method=src, source=src, attack=kind,
                    level=float(eps), point="ANN")
        for m in self.methods:
            res = self.sim(self.snn(m), xa, y, self.T_need(m))
            self.add_sim(res, m, family="transfer", source=src, attack=kind, level=float(eps))

    def snn_pgd(self, m):
        """White-box PGD through time on the method's SNN at each of its points."""
        x, y = self.head("snn_attack_images")
        rc, snn = self.rc, self.snn(m)
        done = {}
        for name in rc["snn_points"]:
            t = self.pts[m].get(name)
            if t is None:
                continue
            for eps in rc["eps"]:
                if t > rc["snn_pgd_T_max"]:
                    self.add(family="snn_pgd", method=m, attack="pgd", level=float(eps), point=name, T=t,
                             n=0, acc=float("nan"), note=f"not run: T > snn_pgd_T_max = {rc['snn_pgd_T_max']}")
                    continue
                if (t, eps) not in done:
                    e = float(eps) / 255
                    xa = torch.cat([_pgd(UnrolledSNN(snn, t), xb, yb, e, rc["snn_pgd_steps"],
                                         rc["snn_pgd_restarts"], self.seed)
                                    for xb, yb in _loader(x, y, self.bs)])
                    res = self.sim(snn, xa, y, t)
                    done[(t, eps)] = _correct_at(res, t)
                self.add_ok(done[(t, eps)], family="snn_pgd", method=m, attack="pgd", level=float(eps),
                            point=name, T=t,
                            note=f"PGD-{rc['snn_pgd_steps']} x {rc['snn_pgd_restarts']} restarts through {t} steps")

    def leak(self, m):
        """The leak where it can act (never at t = 1): clean and under the authors' noise, each
        leak and mode against leak 1 on the same images and noise draws, at every T of
        ``leak_T`` (one simulation to the largest gives them all)."""
        x, y = self.head("leak_images")
        rc = self.rc
        pts = {f"T_{t}": int(t) for t in rc["leak_T"]}
        T = max(pts.values())
        authors = make_perturbation("salt_pepper", rc["authors_s"], False, p_image=rc["authors_p"])
        conditions = [("clean", None, 0.0, ""),
                      (AUTHORS, authors, float(rc["authors_s"]), f"AddNoise({rc['authors_s']:g}, {rc['authors_p']:g})")]
        ann = self.anns[get_recipe(m).activation]
        variants = [(1.0, "-")] + [(float(lv), mode) for mode in rc["leak_modes"]
                                   for lv in rc["leaks"] if float(lv) != 1.0]
        for leak, mode in variants:
            snn = self.snn(m) if leak == 1.0 else convert(ann, m, self.calib, leak, leak_mode=mode)
            for attack, perturb, level, note in conditions:
                res = self.sim(snn, x, y, T, perturb)
                self.add_sim(res, m, pts, family="leak", attack=attack, mode="static", level=level,
                             leak=leak, leak_mode=mode, note=note)

    def sanity(self, m):
        """The gradient-masking checks of the method's white-box attack."""
        from annsnn.attack_checks import gradient_masking_checks as fn

        from .sanity import run_checks
        x, y = self.head("sanity_images")
        src = self.anns[get_recipe(m).activation]
        for row in run_checks(fn, self.snn(m), src, x, y, self.pts[m], self.rc, self.seed):
            self.add(family="sanity", method=m, **row)

    def units(self) -> list[tuple[str, callable]]:
        """(key, measure) for every unit of the stage, in the order they run. Clean units come
        first: they fix each method's points, which every later unit of the method reads."""
        rc, ms = self.rc, self.methods
        out = [(f"clean/{m}", partial(self.clean, m)) for m in ms]
        out += [(f"noise/{m}", partial(self.noise, m)) for m in ms]
        for src in self.sources():
            out.append((f"ann/{src}", partial(self.ann_clean, src)))
            out += [(f"transfer/{src}/{kind}/{eps:g}", partial(self.transfer, src, kind, eps))
                    for kind in rc["ann_attacks"] for eps in rc["eps"]]
        out += [(f"snn_pgd/{m}", partial(self.snn_pgd, m)) for m in ms]
        out += [(f"leak/{m}", partial(self.leak, m)) for m in self.leak_methods()]
        if int(rc["sanity_images"]) > 0:
            out += [(f"sanity/{m}", partial(self.sanity, m)) for m in ms]
        return out

    def run(self, key, measure, kept: dict) -> None:
        """Measure one unit, or take it from ``kept`` (rows, the method's points, wall seconds)."""
        m = key.split("/")[1]
        if key in kept:
            unit = kept[key]
            self.rows.extend(unit["rows"])
            if unit.get("points"):
                self.pts[m] = {k: int(v) for k, v in unit["points"].items()}
            return
        t0, first = time.time(), len(self.rows)
        measure()
        kept[key] = {"rows": self.rows[first:], "wall_s": round(time.time() - t0, 2),
                     "points": self.pts.get(m) if key.startswith("clean/") else None}


def evaluate(cfg: dict, anns: dict, dm, seed: int, records: list[dict], progress: bool = True,
             kept: dict | None = None, on_unit=None) -> list[dict]:
    """All robustness rows of one seed (see FIELDS). ``kept``: units measured before, by key
    (filled in as units finish); ``on_unit(key)`` after each newly measured unit, to keep it.
    ``wall_s`` is the stage's wall time: the sum of its units' measuring times."""
    kept = {} if kept is None else kept
    st = _Stage(cfg, anns, dm, seed, records, progress)
    units = st.units()
    bar = progress_bar(total=len(units), desc="robustness", disable=not progress)
    with torch.random.fork_rng():   # the stage draws nothing from the global RNG that others see
        for key, measure in units:
            bar.set_postfix_str(key, refresh=False)
            fresh = key not in kept
            st.run(key, measure, kept)
            bar.update()
            if fresh and on_unit is not None:
                on_unit(key)
    bar.close()
    wall = sum(kept[k]["wall_s"] for k, _ in units)
    for r in st.rows:
        r["wall_s"] = round(wall, 1)
    return st.rows
