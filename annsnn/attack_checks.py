"""Sanity checks against gradient masking (Carlini et al. 2019, "On evaluating adversarial
robustness"; docs/method.md#gradient-masking-checks): a white-box robust accuracy is only
believable if the attack behind it is working. Three symptoms of an attack defeated by its
own gradients:

- ``eps1_ok``: with eps = 1 the ball is the whole [0, 1] box, so PGD can reach an image
  of another class: accuracy must be (near) 0, here <= ``EPS1_MAX_ACC`` (1 %).
- ``more_steps_ok``: 4x more PGD iterations must not raise accuracy beyond noise.
- ``whitebox_ok``: white-box PGD on ``target`` must do at least as well as the same PGD
  crafted on ``source`` (a surrogate, e.g. the ANN the SNN was converted from) and
  transferred; white-box losing to transfer means its gradients are uninformative.

"Beyond noise" is ``tol = max(z * SE, 1/n)``: ``z`` binomial standard errors
sqrt(p (1 - p) / n) of the larger of the two accuracies compared, on the n images
checked, and at least one image. The attacks and images are the caller's; a white-box
SNN target is ``annsnn.attacks.UnrolledSNN(snn, T)``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .attacks import check_eps, check_stateless, checked_inputs, model_device, pgd

EPS1_MAX_ACC = 0.01     # accuracy allowed under PGD at eps = 1 (the whole box)
MORE_STEPS = 4          # the long attack runs MORE_STEPS * steps iterations
_SLACK = 1e-9           # accuracies are counts / n: compare them without float-rounding flips


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of ``x`` that ``model`` (eval mode, restored afterwards) classifies as ``y``."""
    if x.shape[0] == 0:
        raise ValueError("accuracy of no images is undefined")
    training = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        device = model_device(model)
        pred = model(x.to(device)).argmax(-1).cpu()
    finally:
        for m, t in training:
            m.training = t
    return float((pred == y.cpu()).double().mean())


def tolerance(p: float, q: float, n: int, z: float = 2.0) -> float:
    """Noise allowance for comparing accuracies p and q measured on the same n images."""
    top = max(p, q)
    return max(z * math.sqrt(top * (1.0 - top) / n), 1.0 / n)


@dataclass(frozen=True)
class MaskingChecks:
    """Accuracies (fractions in [0, 1]) and the verdicts; ``whitebox_ok`` and
    ``acc_transfer`` are None when no source model was given."""

    n: int                      # images checked
    eps: float                  # pixel units, images in [0, 1]
    steps: int
    restarts: int
    seed: int | None
    z: float
    acc_clean: float
    acc_eps1: float             # white-box PGD-steps at eps = 1
    acc_steps: float            # white-box PGD-steps at eps (the protocol's attack)
    acc_more_steps: float       # white-box PGD-(4*steps) at eps
    acc_transfer: float | None  # PGD-steps at eps crafted on source, evaluated on target
    tol_more_steps: float
    tol_whitebox: float | None
    eps1_ok: bool
    more_steps_ok: bool
    whitebox_ok: bool | None

    @property
    def acc_whitebox(self) -> float:
        return self.acc_steps

    @property
    def passed(self) -> bool:
        """Every verdict that was tested holds."""
        return self.eps1_ok and self.more_steps_ok and self.whitebox_ok is not False

    def as_dict(self) -> dict:
        d = asdict(self)
        d["acc_whitebox"], d["passed"] = self.acc_whitebox, self.passed
        return d


def verdicts(n: int, acc_eps1: float, acc_steps: float, acc_more_steps: float,
             acc_transfer: float | None = None, z: float = 2.0) -> dict:
    """The three verdicts and their tolerances from the accuracies alone (kept separate so
    the rule is testable without running attacks)."""
    tol_more = tolerance(acc_steps, acc_more_steps, n, z)
    tol_wb = None if acc_transfer is None else tolerance(acc_steps, acc_transfer, n, z)
    return dict(
        tol_more_steps=tol_more, tol_whitebox=tol_wb,
        eps1_ok=acc_eps1 <= EPS1_MAX_ACC + _SLACK,
        more_steps_ok=acc_more_steps <= acc_steps + tol_more + _SLACK,
        whitebox_ok=None if acc_transfer is None else acc_steps <= acc_transfer + tol_wb + _SLACK,
    )


def gradient_masking_checks(target: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                            steps: int, restarts: int = 1, seed: int | None = 0,
                            source: nn.Module | None = None, z: float = 2.0) -> MaskingChecks:
    """Run the three checks of this module on ``target`` with L-inf PGD (``annsnn.attacks.pgd``,
    default step size, ``restarts`` random starts, ``seed``) on images ``x`` in [0, 1] with
    labels ``y``: PGD-steps at eps = 1 and at ``eps``, PGD-(4*steps) at ``eps`` and, when
    ``source`` is given, PGD-steps crafted on ``source`` and evaluated on ``target``.
    Cost: (1 + 1 + 4 (+ 1 on source)) * steps * restarts gradient steps."""
    eps = check_eps(eps)
    x, y = checked_inputs(x, y)
    if eps <= 0.0 or eps >= 1.0:
        raise ValueError(f"eps must lie in (0, 1): eps = 1 is checked separately, got {eps!r}")
    if x.shape[0] == 0:
        raise ValueError("no images to check")
    for model in (target, source):
        if model is not None:
            check_stateless(model)      # a bare SNN would carry state between calls
    kw = dict(steps=steps, restarts=restarts, seed=seed)
    acc_clean = accuracy(target, x, y)
    acc_eps1 = accuracy(target, pgd(target, x, y, 1.0, **kw), y)
    acc_steps = accuracy(target, pgd(target, x, y, eps, **kw), y)
    acc_more = accuracy(target, pgd(target, x, y, eps, **{**kw, "steps": MORE_STEPS * steps}), y)
    acc_transfer = None if source is None else accuracy(target, pgd(source, x, y, eps, **kw), y)
    n = int(x.shape[0])
    return MaskingChecks(n=n, eps=eps, steps=steps, restarts=restarts, seed=seed, z=z,
                         acc_clean=acc_clean, acc_eps1=acc_eps1, acc_steps=acc_steps,
                         acc_more_steps=acc_more, acc_transfer=acc_transfer,
                         **verdicts(n, acc_eps1, acc_steps, acc_more, acc_transfer, z))
