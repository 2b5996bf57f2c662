"""Integrate-and-fire neuron with reset by subtraction, optional leak and multi-spike output.

The membrane potential is kept in units of theta (u = V / theta) so that at
t = 1 the neuron computes ``floor(x/theta + phi)`` with exactly the operations
of StepReLU (activations.py): that is what makes conversion exact at T = 1.

Per step (docs/method.md#spiking-neuron):
    u_1 = x_1/theta + phi,   u_t = leak * r_{t-1} + x_t/theta   (t >= 2)
    n_t = clamp(floor(u_t), 0, max_spikes)
    r_t = u_t - n_t,         output n_t * theta
``max_spikes = 1`` is the classic single-spike IF neuron, ``max_spikes = L``
the multi-spike (membrane-potential encoding) neuron of StepReLU.

theta is one number for the whole layer, or one per channel (a [C] tensor; the channel
axis is dim 1 of the input: [N, C] after a linear layer, [N, C, H, W] after a conv). A
per-channel neuron runs the same operations with theta_c broadcast over channel c, so
each channel computes bit for bit what a one-threshold neuron with theta_c computes.

Two leaks act on the carried residual r (never at t = 1):
    leak_mode "exp":    leak * r                         (the default)
    leak_mode "linear": r - clamp(r, -c, c), c = 1 - leak (in units of theta; V <- V - c*theta
                        + x with c*theta = (1 - leak)*theta, the linear leak of Wang et al.,
                        ICACT 2023)
The linear leak is floored at the reset value 0: a positive residual decays by c but
never below 0, and a negative one (reset by subtraction and inhibitory input make
those) rises by c but never above 0 -- the potential moves toward rest without
crossing it, as the exponential leak does. ``leak = 1`` is the same neuron in both
modes, bit for bit (the leak is skipped). One leak grid thus drives both modes.

The spike statistics stay on the neuron's device while it runs and are read on
the host only when asked for (``spikes``, ``max_n``, ``spike_counts()``): a host
read in every layer at every step would stall a GPU at every step.
"""
from __future__ import annotations

import torch
from torch import nn

from .activations import check_levels, check_phi, check_theta
from .fused import clamp_floor_ste


LEAK_MODES = ("exp", "linear")


def check_leak(leak) -> float:
    leak = float(leak)
    if not 0.0 < leak <= 1.0:
        raise ValueError(f"leak must lie in (0, 1], got {leak!r}")
    return leak


def check_leak_mode(leak_mode) -> str:
    if leak_mode not in LEAK_MODES:
        raise ValueError(f"unknown leak_mode {leak_mode!r}; valid: {', '.join(LEAK_MODES)}")
    return leak_mode


def check_thresholds(theta) -> torch.Tensor:
    """``theta`` as the neuron stores it: a 0-d float32 tensor (one threshold for the layer:
    a number, or a tensor with one element) or a 1-D float32 tensor [C] (one per channel; a
    [C, 1, ..., 1] tensor is taken as [C]). Every threshold must be finite and > 0."""
    if not isinstance(theta, torch.Tensor):
        if isinstance(theta, (int, float)) or not hasattr(theta, "__len__"):
            check_theta(theta)
            return torch.tensor(float(theta), dtype=torch.float32)
        theta = torch.as_tensor(theta)
    if theta.numel() == 1:
        check_theta(theta)
        return theta.detach().clone().to(torch.float32).reshape(())
    if theta.dim() == 0 or theta.numel() == 0 or any(s != 1 for s in theta.shape[1:]):
        raise ValueError(f"per-channel theta must have shape [C] (or [C, 1, ..., 1]), got "
                         f"{tuple(theta.shape)}")
    t = theta.detach().clone().to(torch.float32).reshape(-1)
    bad = ~(torch.isfinite(t) & (t > 0))
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise ValueError(f"theta (threshold) must be finite and > 0 in every channel; channel {i} "
                         f"is {float(t[i])!r} ({int(bad.sum())} of {t.numel()} channels bad)")
    return t


def _flat(n: torch.Tensor) -> torch.Tensor:
    """A 1-D view of ``n`` in its memory order (no copy for channels-last batches either)."""
    if n.dim() == 4 and not n.is_contiguous() and n.is_contiguous(memory_format=torch.channels_last):
        return n.permute(0, 2, 3, 1).reshape(-1)
    return n.reshape(-1)


def level_counts(n: torch.Tensor, max_spikes: int, device_kind: str | None = None) -> torch.Tensor:
    """How many entries of ``n`` (whole numbers in 0..max_spikes) equal 0, 1, ..., max_spikes,
    computed on n's device without a host read.

    On the CPU: ``torch.bincount`` (int64 counts). Elsewhere bincount reads the input's
    min and max back to the host, so the counts come from ``torch.histc`` over unit bins
    centred on the levels, in float64 (whole numbers, exact below 2**53).
    ``device_kind`` overrides n's device type, for testing the non-CPU path on a CPU.
    """
    flat = _flat(n.detach())
    if (device_kind or flat.device.type) == "cpu":
        small = torch.uint8 if max_spikes < 256 else torch.int64
        return torch.bincount(flat.to(small), minlength=max_spikes + 1)
    return torch.histc(flat.to(torch.float64), bins=max_spikes + 1, min=-0.5, max=max_spikes + 0.5)


class IFNeuron(nn.Module):
    """Stateful spiking layer; call ``reset()`` before each new input sample/batch.

    Statistics for the metrics accumulate until ``reset_stats()``, as device tensors:
    ``spike_total`` (float64, spikes emitted, n counted n times; each step's count is
    summed in float64, exact where a float32 sum would round above 2**24), ``peak`` (largest n in
    one step) and, with ``count_levels = True``, ``hist`` (neuron-steps with
    n = 0..max_spikes; it costs about as much as the neuron's own step on a CPU, hence
    off by default); ``neuron_steps`` is an int (neurons x steps, summed over images).
    A single-spike neuron's peak and histogram follow from its spike total.
    ``spikes``, ``max_n`` and ``spike_counts()`` read them on the host.
    ``surrogate=True`` gives the floor a straight-through gradient (a rectangular
    surrogate over the clamp window) for white-box attacks through time; the
    forward pass is unchanged.
    """

    def __init__(self, theta, max_spikes: int = 1, phi: float = 0.0, leak: float = 1.0,
                 leak_mode: str = "exp"):
        super().__init__()
        theta = check_thresholds(theta)
        self.max_spikes = check_levels(max_spikes)
        self.phi = check_phi(phi)
        self.leak = check_leak(leak)
        self.leak_mode = check_leak_mode(leak_mode)
        self.register_buffer("theta", theta)   # 0-d, or [C] per channel (check_thresholds)
        self.surrogate = False
        self.record = True
        self.count_levels = False
        self.u: torch.Tensor | None = None
        self.reset_stats()

    @property
    def per_channel(self) -> bool:
        """True when each channel has its own threshold (``theta`` is [C])."""
        return self.theta.dim() == 1

    def theta_for(self, x: torch.Tensor) -> torch.Tensor:
        """``theta`` shaped to broadcast against ``x`` (an input or output of this layer):
        the 0-d threshold itself, or the [C] thresholds as [C, 1, ..., 1] for the channel
        axis 1 of ``x``. Outputs are n * theta_for(output), so n = output / theta_for(output)."""
        theta = self.theta
        if theta.dim() == 0:
            return theta
        if x.dim() < 2 or x.shape[1] != theta.shape[0]:
            raise ValueError(f"this neuron has {theta.shape[0]} per-channel thresholds, but its "
                             f"input has shape {tuple(x.shape)} (channels on axis 1)")
        return theta.view(-1, *([1] * (x.dim() - 2)))

    def reset(self) -> None:
        """Forget the membrane potential (start of a new sample)."""
        self.u = None

    def reset_stats(self) -> None:
        self.spike_total: torch.Tensor | None = None   # created on the first recorded step
        self.peak: torch.Tensor | None = None
        self.hist: torch.Tensor | None = None
        self.neuron_steps = 0

    def _leaked(self, r: torch.Tensor) -> torch.Tensor:
        """The residual after one step of leak, out of place (the surrogate path)."""
        if self.leak == 1.0:
            return r
        if self.leak_mode == "exp":
            return self.leak * r
        c = 1.0 - self.leak
        return r - r.clamp(-c, c)   # toward 0 by c, never past it; same ops as the in-place path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        theta = self.theta_for(x)   # the 0-d buffer itself for one threshold per layer
        if self.surrogate:  # differentiable path: no in-place updates, the same arithmetic
            u = x / theta + self.phi if self.u is None else self._leaked(self.u) + x / theta
            n = clamp_floor_ste(u, self.max_spikes)  # gradient 1 where 0 <= floor(u) <= max_spikes
            self.u = u - n
            return self._count(n) * theta
        if self.u is None:  # t = 1: exactly StepReLU's arithmetic, x/theta + phi
            u = torch.div(x, theta)
            u.add_(self.phi)
        else:  # t >= 2: in place; addcdiv_ rounds x/theta, then the sum, as add_(x/theta)
            u = self.u
            if self.leak != 1.0:
                if self.leak_mode == "exp":
                    u.mul_(self.leak)
                else:
                    c = 1.0 - self.leak
                    u.sub_(u.clamp(-c, c))
            u.addcdiv_(x, theta)
        n = torch.floor(u).clamp_(0, self.max_spikes)
        self.u = u.sub_(n)
        return self._count(n).mul_(theta)

    def _count(self, n: torch.Tensor) -> torch.Tensor:
        """Record n's statistics on its device (no host read) and return n."""
        if self.record:
            with torch.no_grad():
                s = n.sum(dtype=torch.float64)   # exact: a float32 sum rounds above 2**24
                # out of place, so that a caller holding the previous total can take the difference
                self.spike_total = s if self.spike_total is None else self.spike_total + s
                self.neuron_steps += n.numel()
                if self.max_spikes > 1:
                    top = _flat(n).max()      # on the flat view: 10x faster channels-last
                    self.peak = top if self.peak is None else torch.maximum(self.peak, top)
                    if self.count_levels:
                        h = level_counts(n, self.max_spikes)
                        self.hist = h if self.hist is None else self.hist.add_(h)
        return n

    @property
    def spikes(self) -> float:
        """Total spikes emitted since ``reset_stats()`` (host read)."""
        return 0.0 if self.spike_total is None else float(self.spike_total)

    def spike_counts(self) -> list[int] | None:
        """Neuron-steps with n = 0, 1, ..., max_spikes since ``reset_stats()`` (host read);
        None for a multi-spike neuron that did not count levels."""
        if self.max_spikes == 1:
            fired = round(self.spikes)
            return [self.neuron_steps - fired, fired]
        if self.hist is None:  # nothing simulated yet, or levels not counted
            return None if self.neuron_steps else [0] * (self.max_spikes + 1)
        return [round(c) for c in self.hist.tolist()]

    @property
    def max_n(self) -> float:
        """Largest n any neuron emitted in one step since ``reset_stats()`` (host read)."""
        if self.max_spikes == 1:
            return 1.0 if self.spikes > 0 else 0.0
        return 0.0 if self.peak is None else float(self.peak)

    def extra_repr(self) -> str:
        if self.per_channel:
            theta = (f"theta=[{self.theta.numel()} channels, {float(self.theta.min()):.6g}.."
                     f"{float(self.theta.max()):.6g}]")
        else:
            theta = f"theta={float(self.theta):.6g}"
        return (f"{theta}, max_spikes={self.max_spikes}, "
                f"phi={self.phi}, leak={self.leak}, leak_mode={self.leak_mode}")


def spiking_layers(model: nn.Module) -> list[tuple[str, IFNeuron]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, IFNeuron)]


def reset_neurons(model: nn.Module) -> None:
    for _, m in spiking_layers(model):
        m.reset()
