"""Gradient-masking sanity checks of white-box PGD through time on the trained SNNs (docs/method.md#robustness),
run by annsnn.attack_checks.gradient_masking_checks on a small subset, one row per check
(family "sanity", attack = the check, acc = the accuracy it judges, note = pass/FAIL and
the numbers behind it):
  - eps_255: PGD with eps = 255/255 brings accuracy to <= 1 %;
  - more_steps: 4x the PGD iterations do not raise accuracy beyond binomial noise;
  - whitebox_vs_transfer: white-box PGD on the SNN leaves it no more accurate than PGD
    crafted on its own source ANN and transferred, beyond noise."""
from __future__ import annotations

import torch

from annsnn.attacks import UnrolledSNN


def run_checks(checks_fn, snn, ann, x, y, pts: dict, rc: dict, seed: int) -> list[dict]:
    """At the method's operating point (or snn_pgd_T_max, the longest attacked T, if smaller)."""
    T = min(pts["T_op"], int(rc["snn_pgd_T_max"]))
    point = "T_op" if T == pts["T_op"] else f"T_{T}"
    eps = max(rc["eps"])
    with torch.random.fork_rng():
        c = checks_fn(UnrolledSNN(snn, T), x, y, eps / 255, steps=rc["snn_pgd_steps"],
                      restarts=rc["snn_pgd_restarts"], seed=seed, source=ann)
    pct = lambda v: f"{100 * v:.1f} %"  # noqa: E731
    checks = [("eps_255", 255.0, c.acc_eps1, c.eps1_ok, f"accuracy {pct(c.acc_eps1)} at eps = 255/255 (<= 1 %)"),
              (f"more_steps_{4 * c.steps}_vs_{c.steps}", eps, c.acc_more_steps, c.more_steps_ok,
               f"{pct(c.acc_more_steps)} vs {pct(c.acc_steps)} (+{pct(c.tol_more_steps)} noise)"),
              ("whitebox_vs_transfer", eps, c.acc_steps, c.whitebox_ok,
               f"white-box {pct(c.acc_steps)} vs transfer from its ANN {pct(c.acc_transfer)} "
               f"(+{pct(c.tol_whitebox)} noise)")]
    return [dict(attack=name, level=float(level), acc=float(acc), point=point, T=T, n=c.n,
                 note=("pass: " if ok else "FAIL: ") + note) for name, level, acc, ok, note in checks]
