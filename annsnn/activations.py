"""Quantised activations whose spiking counterparts are exact (docs/method.md#activations).

StepReLU(x) = theta * clamp(floor(x/theta + phi), 0, L). QCFS is the same
function with theta = lam_q / L, phi = 0.5 and a learnable lam_q; both share one
implementation so that their arithmetic, and hence their step boundaries, agree
bit for bit. The arithmetic order ``x / theta + phi -> floor -> clamp -> * theta``
is the one the spiking neuron uses at t = 1 (see neurons.py): change both or
neither. The fused kernels that make the fixed-theta path fast live in fused.py
and are tested equal to these formulas.
"""
from __future__ import annotations

import inspect
import math

import torch
from torch import nn

from .fused import clamp_floor_ste, fixed_theta_step_relu


def step_levels(x: torch.Tensor, theta: torch.Tensor, L: int, phi: float) -> torch.Tensor:
    """Integer level clamp(floor(x/theta + phi), 0, L) with straight-through gradients.

    The gradient reaching ``x`` is 1 where the clamp does not saturate, i.e.
    0 <= floor(x/theta + phi) <= L (edges included), and 0 outside, as QCFS and
    the authors' STE; ``theta`` gets autograd's gradient.
    """
    return clamp_floor_ste(x / theta + phi, L)


class StepReLU(nn.Module):
    """theta * clamp(floor(x/theta + phi), 0, L); range [0, L*theta].

    ``clip=False`` reproduces the authors' released code, where inputs above
    L*theta pass unchanged; such a network cannot be converted exactly and
    ``convert`` refuses it.
    """

    def __init__(self, theta: float = 0.05, L: int = 20, phi: float = 0.0,
                 clip: bool = True, learn_theta: bool = False):
        super().__init__()
        check_theta(theta)
        self.L = check_levels(L)
        self.phi = check_phi(phi)
        self.clip = bool(clip)
        t = torch.tensor(float(theta), dtype=torch.float32)
        if learn_theta:
            self.theta = nn.Parameter(t)
        else:
            self.register_buffer("theta", t)

    def threshold(self) -> torch.Tensor:
        if isinstance(self.theta, nn.Parameter):
            return positive_threshold(self.theta)
        return self.theta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        theta = self.threshold()
        if theta.requires_grad:
            y = theta * step_levels(x, theta, self.L, self.phi)
        else:  # fixed threshold: the fused path, bit for bit the same values and gradients
            y = fixed_theta_step_relu(x, theta, self.L, self.phi)
        if not self.clip:
            y = torch.where(x > self.L * theta, x, y)
        return y

    def extra_repr(self) -> str:
        return (f"theta={float(self.threshold()):.6g}, L={self.L}, phi={self.phi}, "
                f"clip={self.clip}, learn_theta={isinstance(self.theta, nn.Parameter)}")


class QCFS(nn.Module):
    """Quantisation-clip-floor-shift activation (Bu et al., ICLR 2022).

    lam_q * clamp(floor(x*L/lam_q + 0.5)/L, 0, 1) with a learnable lam_q,
    computed as StepReLU(theta=lam_q/L, phi=0.5) so the two agree exactly.
    """

    phi = 0.5
    clip = True
    # Bu et al.'s released code trains lam_q with the same weight decay as the weights
    # (their SGD decays every parameter); the training module reads this flag.
    decay_threshold = True

    def __init__(self, L: int = 8, init_lam: float = 8.0):
        super().__init__()
        self.L = check_levels(L)
        check_theta(init_lam)
        self.lam = nn.Parameter(torch.tensor(float(init_lam), dtype=torch.float32))

    def threshold(self) -> torch.Tensor:
        return self.clip_value() / self.L

    def clip_value(self) -> torch.Tensor:
        """lam_q, held at or above THRESHOLD_FLOOR (the single-spike neuron's threshold)."""
        return positive_threshold(self.lam)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        theta = self.threshold()
        return theta * step_levels(x, theta, self.L, self.phi)

    def extra_repr(self) -> str:
        return f"L={self.L}, lam={float(self.lam):.6g}"


# ----------------------------------------------------------------------------- argument checks

def check_levels(L) -> int:
    if not isinstance(L, int) or isinstance(L, bool) or L < 1:
        raise ValueError(f"L (number of levels) must be an integer >= 1, got {L!r}")
    return L


def check_phi(phi) -> float:
    phi = float(phi)
    if not 0.0 <= phi < 1.0:
        raise ValueError(f"phi (shift) must lie in [0, 1), got {phi!r}")
    return phi


THRESHOLD_FLOOR = 1e-4
"""Smallest threshold a learnable theta (or lam_q / L) may take. A threshold is one
scalar per layer whose gradient sums over every neuron of the layer, so a large
learning rate can throw it below zero in one step (seen on CIFAR-10 with lr 0.2:
theta = -3.03). ``threshold()`` clamps it here; the conversion copies
``threshold()``, so the SNN and the ANN still use the same value."""


def positive_threshold(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself while it is >= THRESHOLD_FLOOR (bit for bit), the floor otherwise."""
    return torch.clamp_min(t, THRESHOLD_FLOOR)


def check_theta(theta) -> float:
    value = float(theta)
    if not (value > 0.0 and math.isfinite(value)):
        raise ValueError(f"theta (threshold) must be finite and > 0, got {theta!r}")
    return value


ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "qcfs": QCFS, "steprelu": StepReLU}
"""Activation name (as in presets and recipes' ``activation``) -> module class; the one
place a new ANN activation is registered."""


def make_activation(spec: str | dict | None, **overrides) -> nn.Module:
    """Build an activation from a registered name and keyword knobs (a dict with a ``name``
    key, or a name plus ``overrides``); a typo gets a ValueError naming the valid choices."""
    if isinstance(spec, dict):
        kwargs = dict(spec)
        name = kwargs.pop("name")
    else:
        name, kwargs = (spec or "relu"), {}
    kwargs.update(overrides)
    cls = ACTIVATIONS.get(name.lower())
    if cls is None:
        raise ValueError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}")
    valid = [p for p in inspect.signature(cls).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(f"activation {name.lower()!r} has no option(s) {', '.join(unknown)}; "
                         f"valid: {', '.join(valid) or '(none)'}")
    return cls(**kwargs)
