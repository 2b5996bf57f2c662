"""Conversion of a StepReLU ANN (Wang et al., IJCAI 2023), and its single-spike ablation.

``steprelu``: threshold theta, a multi-spike IF neuron (up to L spikes per step)
starting at phi*theta: at t = 1 it computes StepReLU op for op, so the SNN equals
the BatchNorm-folded ANN bit for bit. ``steprelu-capC`` sends at most C spikes per step
over the same range (a cheaper neuron for spike-based hardware; it claims no exactness).
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


class StepReLURecipe(_LearnedThreshold):
    name = "steprelu"
    exact_at_t1 = True
    description = "StepReLU ANN, threshold = theta, multi-spike IF (up to L spikes per step), V0 = phi*theta"

    def neuron(self, activation, threshold, leak, leak_mode="exp") -> IFNeuron:
        return IFNeuron(activation.threshold().detach(), max_spikes=activation.L,
                        phi=activation.phi, leak=leak, leak_mode=leak_mode)


@dataclass(frozen=True)
class CappedStepReLU(_LearnedThreshold):
    """At most ``cap`` spikes per step (``cap`` binary sub-steps on spike-only hardware)
    over the ANN's whole range: threshold theta*L/cap, so a step carries ``cap`` coarser
    levels and later steps refine them; V0 = half a threshold, as steprelu-single (cap 1).
    The same threshold theta with a cap would instead clip every activation at cap*theta
    (measured on smoke: chance accuracy at every t for caps 1, 2 and 4)."""

    name: str
    cap: int

    def __post_init__(self):
        check_levels(self.cap)

    @property
    def description(self) -> str:
        return (f"StepReLU ANN, threshold = theta*L/{self.cap}, multi-spike IF with at most "
                f"{self.cap} spikes per step, V0 = threshold/2 (not exact at t = 1)")

    def neuron(self, activation, threshold, leak, leak_mode="exp") -> IFNeuron:
        cap = min(self.cap, activation.L)
        return IFNeuron(activation.threshold().detach() * (activation.L / cap), max_spikes=cap,
                        phi=0.5, leak=leak, leak_mode=leak_mode)


class StepReLUSingle(_LearnedThreshold):
    """The ablation: the same StepReLU ANN with binary spikes. It starts at half its
    threshold, as QCFS's neuron does, so that the comparison with steprelu isolates the
    spike cap and is not confounded with the initial potential (phi*theta*L is 0 for phi 0)."""

    name = "steprelu-single"
    description = ("StepReLU ANN, threshold = theta*L, single-spike IF, V0 = theta*L/2 "
                   "(ablation: binary spikes, V0 as QCFS)")

    def neuron(self, activation, threshold, leak, leak_mode="exp") -> IFNeuron:
        return IFNeuron(activation.threshold().detach() * activation.L, max_spikes=1,
                        phi=0.5, leak=leak, leak_mode=leak_mode)


STEPRELU = register(StepReLURecipe())
STEPRELU_SINGLE = register(StepReLUSingle())
# What the accuracy at t = 1 costs in binary sub-steps: the same neuron, capped.
STEPRELU_CAPS = [register(CappedStepReLU(name=f"steprelu-cap{c}", cap=c)) for c in (1, 2, 4)]
