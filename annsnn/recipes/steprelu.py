"""Conversion of a StepReLU ANN (Wang et al., IJCAI 2023), and its single-spike ablation.

``steprelu``: threshold theta, a multi-spike IF neuron (up to L spikes per step)
starting at phi*theta: at t = 1 it computes StepReLU op for op, so the SNN equals
the BatchNorm-folded ANN bit for bit. A ``max_spikes`` cap below L gives up that
exactness (a cheaper neuron for spike-based hardware; it claims nothing).
``steprelu-single``: the same ANN with binary spikes, threshold theta*L, V0 = theta*L/2.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..activations import check_levels
from ..neurons import IFNeuron
from .base import Recipe, register


class _LearnedThreshold(Recipe):
    """Thresholds come from the trained activations, not from a calibration set."""

    activation = "steprelu"

    def thresholds(self, model, calib_loader=None) -> dict[str, float]:
        """Each layer's threshold exactly as its neuron gets it."""
        return {n: float(self.neuron(m, None, 1.0).theta) for n, m in self.layers(model)}


@dataclass(frozen=True)
class StepReLURecipe(_LearnedThreshold):
    name: str = "steprelu"
    max_spikes: int | None = None   # cap on spikes per step (below L); None: L, exact

    def __post_init__(self):
        if self.max_spikes is not None:
            check_levels(self.max_spikes)

    @property
    def exact_at_t1(self) -> bool:
        return self.max_spikes is None

    @property
    def description(self) -> str:
        cap = ("up to L spikes per step" if self.max_spikes is None
               else f"at most min(L, {self.max_spikes}) spikes per step, not exact at t = 1")
        return f"StepReLU ANN, threshold = theta, multi-spike IF ({cap}), V0 = phi*theta"

    def neuron(self, activation, threshold, leak) -> IFNeuron:
        cap = activation.L if self.max_spikes is None else min(activation.L, self.max_spikes)
        return IFNeuron(activation.threshold().detach(), max_spikes=cap, phi=activation.phi, leak=leak)


class StepReLUSingle(_LearnedThreshold):
    """The ablation: the same StepReLU ANN with binary spikes. It starts at half its
    threshold, as QCFS's neuron does, so that the comparison with steprelu isolates the
    spike cap and is not confounded with the initial potential (phi*theta*L is 0 for phi 0)."""

    name = "steprelu-single"
    description = ("StepReLU ANN, threshold = theta*L, single-spike IF, V0 = theta*L/2 "
                   "(ablation: binary spikes, V0 as QCFS)")

    def neuron(self, activation, threshold, leak) -> IFNeuron:
        return IFNeuron(activation.threshold().detach() * activation.L, max_spikes=1,
                        phi=0.5, leak=leak)


STEPRELU = register(StepReLURecipe())
STEPRELU_SINGLE = register(StepReLUSingle())
# What the accuracy at t = 1 costs in binary sub-steps: the same neuron, capped.
STEPRELU_CAPS = [register(StepReLURecipe(name=f"steprelu-cap{c}", max_spikes=c)) for c in (1, 2, 4)]
