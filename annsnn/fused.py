"""Fused autograd kernels behind the activations: speed only, never a new formula.

Each function here computes exactly what a plain formula in activations.py
computes (values and input gradients, bit for bit: tested against a plain
reference), with fewer passes over memory: in-place updates on one buffer and a
float window mask instead of bool masks (on this CPU comparisons into bool
tensors and bool-masked ``where``/``masked_fill`` cost 2-15x a float pass,
bench/perf/speed.py).
"""
from __future__ import annotations

import torch


def _ste_window(level: torch.Tensor, L: int) -> torch.Tensor:
    """A float tensor that is > 0 exactly where 0 <= level <= L (``level`` holds integers):
    s = (L+1)/2 - |level - L/2|. A NaN level gives a NaN window, which lets the gradient through."""
    return torch.sub(level, L / 2).abs_().neg_().add_((L + 1) / 2)


def _pass_window(grad: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """``grad`` where ``window`` > 0, else 0 (``threshold_backward``, ReLU's own kernel)."""
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
    straight-through window, but the shift, floor, clamp and scaling run in place on
    one buffer.
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


def fixed_theta_step_relu(x: torch.Tensor, theta: torch.Tensor, L: int, phi: float) -> torch.Tensor:
    """``theta * step_levels(x, theta, L, phi)`` for a ``theta`` without gradient, fused."""
    return _FixedThetaStepReLU.apply(x, theta, L, phi)
