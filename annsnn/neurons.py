"""Integrate-and-fire neuron with reset by subtraction, optional leak and multi-spike output.

The membrane potential is kept in units of theta (u = V / theta) so that at
t = 1 the neuron computes ``floor(x/theta + phi)`` with exactly the operations
of StepReLU (activations.py): that is what makes conversion exact at T = 1.

Per step (DESIGN section 2):
    u_1 = x_1/theta + phi,   u_t = leak * r_{t-1} + x_t/theta   (t >= 2)
    n_t = clamp(floor(u_t), 0, max_spikes)
    r_t = u_t - n_t,         output n_t * theta
``max_spikes = 1`` is the classic single-spike IF neuron, ``max_spikes = L``
the multi-spike (membrane-potential encoding) neuron of StepReLU.
"""
from __future__ import annotations

import torch
from torch import nn

from .activations import check_levels, check_phi, check_theta, clamp_floor_ste


def check_leak(leak) -> float:
    leak = float(leak)
    if not 0.0 < leak <= 1.0:
        raise ValueError(f"leak must lie in (0, 1], got {leak!r}")
    return leak


class IFNeuron(nn.Module):
    """Stateful spiking layer; call ``reset()`` before each new input sample/batch.

    Statistics for the metrics (spikes emitted, largest spike count in one step,
    neuron-steps simulated) accumulate until ``reset_stats()``.
    ``surrogate=True`` gives the floor a straight-through gradient (a rectangular
    surrogate over the clamp window) for white-box attacks through time; the
    forward pass is unchanged.
    """

    def __init__(self, theta, max_spikes: int = 1, phi: float = 0.0, leak: float = 1.0):
        super().__init__()
        check_theta(theta)
        self.max_spikes = check_levels(max_spikes)
        self.phi = check_phi(phi)
        self.leak = check_leak(leak)
        if isinstance(theta, torch.Tensor):
            theta = theta.detach().clone().to(torch.float32).reshape(())
        else:
            theta = torch.tensor(float(theta), dtype=torch.float32)
        self.register_buffer("theta", theta)
        self.surrogate = False
        self.record = True
        self.u: torch.Tensor | None = None
        self.reset_stats()

    def reset(self) -> None:
        """Forget the membrane potential (start of a new sample)."""
        self.u = None

    def reset_stats(self) -> None:
        self.spikes = 0.0          # total spikes emitted (n counted n times)
        self.neuron_steps = 0      # neurons x steps simulated (per image summed)
        self.max_n = 0.0           # largest n any neuron emitted in one step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.surrogate:  # differentiable path: no in-place updates
            u = x / self.theta + self.phi if self.u is None else self.leak * self.u + x / self.theta
            n = clamp_floor_ste(u, self.max_spikes)  # gradient 1 where 0 <= floor(u) <= max_spikes
            self.u = u - n
            return self._count(n) * self.theta
        if self.u is None:  # t = 1: exactly StepReLU's arithmetic, x/theta + phi
            u = torch.div(x, self.theta)
            u.add_(self.phi)
        else:  # t >= 2: in place; addcdiv_ rounds x/theta, then the sum, as add_(x/theta)
            u = self.u
            if self.leak != 1.0:
                u.mul_(self.leak)
            u.addcdiv_(x, self.theta)
        n = torch.floor(u).clamp_(0, self.max_spikes)
        self.u = u.sub_(n)
        return self._count(n).mul_(self.theta)

    def _count(self, n: torch.Tensor) -> torch.Tensor:
        if self.record:
            with torch.no_grad():
                self.spikes += float(n.sum())
                self.neuron_steps += n.numel()
                if self.max_n < self.max_spikes:  # once at the cap it cannot grow: skip the pass
                    self.max_n = max(self.max_n, float(n.max()))
        return n

    def extra_repr(self) -> str:
        return (f"theta={float(self.theta):.6g}, max_spikes={self.max_spikes}, "
                f"phi={self.phi}, leak={self.leak}")


def spiking_layers(model: nn.Module) -> list[tuple[str, IFNeuron]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, IFNeuron)]


def reset_neurons(model: nn.Module) -> None:
    for _, m in spiking_layers(model):
        m.reset()
