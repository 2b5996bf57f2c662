"""Rate-norm conversion of a ReLU ANN (Diehl et al. 2015; Rueckauer et al. 2017):
threshold = a per-layer statistic of the activations on a calibration set,
single-spike IF neurons with reset by subtraction."""
from __future__ import annotations

from dataclasses import dataclass

from ..activations import check_phi
from ..neurons import IFNeuron
from .base import Recipe, register
from .calibration import calibrate_thresholds


@dataclass(frozen=True)
class RateNorm(Recipe):
    """``percentile`` 100 is max-norm; below 100, robust-norm. ``nonzero``: the percentile
    runs over the non-zero activations (Rueckauer's snntoolbox) rather than over all
    values incl. zeros (SpikingJelly's). ``v0``: initial potential as a fraction of the
    threshold. The neuron resets by subtraction (Rueckauer), not to zero (Diehl 2015)."""

    name: str
    percentile: float = 100.0
    nonzero: bool = True
    v0: float = 0.0
    activation = "relu"
    needs_calibration = True

    def __post_init__(self):
        if not 0.0 < float(self.percentile) <= 100.0:
            raise ValueError(f"percentile must lie in (0, 100], got {self.percentile!r}")
        check_phi(self.v0)  # the neuron's own rule, checked when the recipe is defined

    @property
    def description(self) -> str:
        if float(self.percentile) == 100.0:
            rule = "per-layer max activation"
        else:
            over = "non-zero activations" if self.nonzero else "activations incl. zeros"
            rule = f"per-layer {self.percentile:g}th percentile of the {over}"
        v0 = "0" if self.v0 == 0 else f"{self.v0:g}*threshold"
        return (f"ReLU ANN, threshold = {rule} on the calibration set, single-spike IF, "
                f"reset by subtraction (Rueckauer 2017; not to zero as Diehl 2015), V0 = {v0}")

    def thresholds(self, model, calib_loader) -> dict[str, float]:
        percentile = None if float(self.percentile) == 100.0 else self.percentile
        return calibrate_thresholds(model, calib_loader, percentile, nonzero=self.nonzero)

    def neuron(self, activation, threshold, leak, leak_mode="exp") -> IFNeuron:
        return IFNeuron(threshold, max_spikes=1, phi=self.v0, leak=leak, leak_mode=leak_mode)


MAXNORM = register(RateNorm("maxnorm", percentile=100.0))
# Rueckauer et al.'s own toolbox (snntoolbox) takes the percentile over the non-zero
# activations; SpikingJelly's converter over all values, zeros included: both are in use,
# so the second runs as a labelled variant.
ROBUSTNORM = register(RateNorm("robustnorm", percentile=99.9, nonzero=True))
ROBUSTNORM_ALL = register(RateNorm("robustnorm-all", percentile=99.9, nonzero=False))
