"""Channel-wise max-norm (Kim, Park, Na and Yoon, AAAI 2020, "Spiking-YOLO: spiking neural
network for energy-efficient object detection", channel-wise normalization).

How it differs from ``maxnorm`` (ratenorm.py): maxnorm gives every neuron of a layer one
threshold, the largest activation of the whole layer on the calibration set, so a channel
whose activations stay far below the layer's largest fires rarely and needs many steps to
be read out (Kim et al.'s "under-activated" channels). Here each output channel c of a
layer gets its own threshold, the largest activation of that channel alone on the same
calibration set (their lambda_c), so every channel spans its whole firing range. The rest
is maxnorm's: a ReLU ANN, single-spike IF neurons, reset by subtraction, V0 = 0.

Kim et al. fold the per-channel scales into the weights (W scaled by lambda_in / lambda_out,
threshold 1); a neuron with threshold lambda_c whose output is n * lambda_c is the same
network with the weights left as trained. A channel that never fires on the calibration
set gets its layer's threshold (maxnorm's); a layer that never fires gets 1.0 and a warning,
as in maxnorm. The channel axis is dim 1 of the layer's output: [N, C, H, W] after a conv,
[N, C] after a linear layer (one threshold per neuron there).
"""
from __future__ import annotations

import warnings

import torch

from ..neurons import IFNeuron
from .base import Recipe, register
from .calibration import for_each_output


class ChannelMaxNorm(Recipe):
    name = "maxnorm-channel"
    activation = "relu"
    needs_calibration = True
    description = ("ReLU ANN, threshold = per-channel max activation on the calibration set "
                   "(Kim et al. 2020), single-spike IF, reset by subtraction, V0 = 0")

    def thresholds(self, model, calib_loader) -> dict[str, torch.Tensor]:
        peak: dict[str, torch.Tensor] = {}

        def running_max(name, out):     # exact, whatever the batch size and order
            if out.dim() < 2:
                raise ValueError(f"layer '{name}' outputs shape {tuple(out.shape)}: no channel axis")
            if out.numel():
                m = out.amax(dim=[d for d in range(out.dim()) if d != 1]).float().cpu()
                peak[name] = torch.maximum(peak[name], m) if name in peak else m
        names = [n for n, _ in self.layers(model)]
        if for_each_output(model, names, calib_loader, running_max) == 0:
            raise ValueError("calib_loader yielded no data")
        result = {}
        for name in names:
            layer_max = float(peak[name].max())
            if not layer_max > 0:
                warnings.warn(f"activation layer '{name}' never fired on the calibration set; "
                              "threshold set to 1.0")
                layer_max = 1.0
            result[name] = torch.where(peak[name] > 0, peak[name], torch.tensor(layer_max))
        return result

    def neuron(self, activation, threshold, leak, leak_mode="exp") -> IFNeuron:
        return IFNeuron(threshold, max_spikes=1, phi=0.0, leak=leak, leak_mode=leak_mode)


MAXNORM_CHANNEL = register(ChannelMaxNorm())
