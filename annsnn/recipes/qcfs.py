"""QCFS conversion (Bu et al., ICLR 2022): the learned clip value lam_q is the
threshold of a single-spike IF neuron that starts at lam_q/2."""
from __future__ import annotations

from ..neurons import IFNeuron
from .base import Recipe, register


class QCFSRecipe(Recipe):
    name = "qcfs"
    activation = "qcfs"
    description = "QCFS ANN, threshold = learned lam_q, single-spike IF, V0 = lam_q/2"

    def thresholds(self, model, calib_loader=None) -> dict[str, float]:
        """The learned lam_q of each QCFS layer, as the neurons get it (no calibration)."""
        return {n: float(self.neuron(m, None, 1.0).theta) for n, m in self.layers(model)}

    def neuron(self, activation, threshold, leak, leak_mode="exp") -> IFNeuron:
        return IFNeuron(activation.clip_value().detach(), max_spikes=1, phi=0.5, leak=leak, leak_mode=leak_mode)


QCFS = register(QCFSRecipe())
