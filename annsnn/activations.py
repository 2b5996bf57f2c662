"""Quantised activations whose spiking counterparts are exact (DESIGN section 2).

StepReLU(x) = theta * clamp(floor(x/theta + phi), 0, L). QCFS is the same
function with theta = lam_q / L, phi = 0.5 and a learnable lam_q; both share one
implementation so that their arithmetic, and hence their step boundaries, agree
bit for bit. The arithmetic order ``x / theta + phi -> floor -> clamp -> * theta``
is the one the spiking neuron uses at t = 1 (see neurons.py): change both or
neither.
"""
from __future__ import annotations

import math

import torch
from torch import nn


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


class _FloorSTE(torch.autograd.Function):
    """floor in the forward pass, identity in the backward pass (straight-through)."""

    @staticmethod
    def forward(ctx, u):
        return torch.floor(u)

    @staticmethod
    def backward(ctx, grad):
        return grad


def floor_ste(u: torch.Tensor) -> torch.Tensor:
    return _FloorSTE.apply(u)


def _ste_window(level: torch.Tensor, L: int) -> torch.Tensor:
    """A float tensor that is > 0 exactly where 0 <= level <= L (``level`` holds integers):
    s = (L+1)/2 - |level - L/2|. The backward passes mask with ``threshold_backward``
    (ReLU's own kernel) on it, because on this CPU comparisons into bool tensors and
    bool-masked ``where``/``masked_fill`` cost 2-15x a float pass (bench/speed.py).
    A NaN level gives a NaN window, which lets the gradient through."""
    return torch.sub(level, L / 2).abs_().neg_().add_((L + 1) / 2)


def _pass_window(grad: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """``grad`` where ``window`` > 0, else 0."""
    return torch.ops.aten.threshold_backward(grad, window, 0)


class _ClampFloorSTE(torch.autograd.Function):
    """clamp(floor(u), 0, L) in the forward pass; the backward pass lets the gradient
    through where the clamp leaves the level unchanged, 0 <= floor(u) <= L (edges
    included, i.e. u in [0, L + 1)), and blocks it elsewhere.

    The mask is explicit rather than autograd's clamp backward: floor's output sits
    exactly on a clamp edge for whole intervals of u (all of [0, 1) floors to 0), and
    PyTorch's edge convention (torch 2.14 passes no gradient at min and max) would
    then remove the gradient on a whole step, and everywhere for L = 1.
    """

    @staticmethod
    def forward(ctx, u, L):
        lev = torch.floor(u)
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(_ste_window(lev, L))
        return torch.clamp(lev, 0, L)

    @staticmethod
    def backward(ctx, grad):
        (window,) = ctx.saved_tensors
        return _pass_window(grad, window), None


def clamp_floor_ste(u: torch.Tensor, L: int) -> torch.Tensor:
    """clamp(floor(u), 0, L) with a straight-through gradient inside 0 <= floor(u) <= L."""
    return _ClampFloorSTE.apply(u, L)


class _FixedThetaStepReLU(torch.autograd.Function):
    """theta * clamp(floor(x/theta + phi), 0, L) for a theta that takes no gradient.

    The same arithmetic in the same order as ``theta * step_levels(...)`` and the same
    straight-through window (outputs and input gradients agree, tested), but the shift,
    floor, clamp and scaling run in place on one buffer.
    """

    @staticmethod
    def forward(ctx, x, theta, L, phi):
        u = torch.div(x, theta)
        u.add_(phi)
        u.floor_()                                   # level before the clamp, an integer
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(_ste_window(u, L), theta)
        u.clamp_(0, L)
        # theta * level: in place when dtypes match; in bfloat16 an in-place mul_ by a
        # float32 0-dim tensor rounds differently from the graph's out-of-place product
        return u.mul_(theta) if u.dtype == theta.dtype else theta * u

    @staticmethod
    def backward(ctx, grad):
        window, theta = ctx.saved_tensors
        g = _pass_window(grad * theta, window)               # d(theta * level)/d level
        g = g.div_(theta) if g.dtype == theta.dtype else g / theta   # d(x/theta)/dx
        return g, None, None, None


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
            y = _FixedThetaStepReLU.apply(x, theta, self.L, self.phi)
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


def make_activation(spec: str | dict | None, **overrides) -> nn.Module:
    """Build an activation from a name (``relu``, ``qcfs``, ``steprelu``) and keyword knobs."""
    if isinstance(spec, dict):
        kwargs = dict(spec)
        name = kwargs.pop("name")
    else:
        name, kwargs = (spec or "relu"), {}
    kwargs.update(overrides)
    name = name.lower()
    if name == "relu":
        if kwargs:
            raise ValueError(f"relu takes no options, got {sorted(kwargs)}")
        return nn.ReLU()
    if name == "qcfs":
        return QCFS(**kwargs)
    if name == "steprelu":
        return StepReLU(**kwargs)
    raise ValueError(f"unknown activation {name!r}; valid: relu, qcfs, steprelu")
