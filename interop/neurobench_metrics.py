"""NeuroBench's own metrics (``neurobench`` 2.x, not a re-implementation) of a converted SNN
run for t steps: synaptic operations (effective MACs and ACs, dense), activation sparsity,
footprint, connection sparsity and classification accuracy.

NeuroBench counts a synaptic layer's operations from the inputs its forward pre-hook sees:
an input that is all 0/1 counts accumulates (ACs), anything else multiply-accumulates (MACs),
one per (non-zero input, non-zero weight) pair. The suite's neuron emits ``n * theta``, which
NeuroBench would take for analog values. So the network it measures is the suite's SNN with
two adapters that leave every number the SNN computes unchanged:

* each spiking layer is wrapped in ``SpikeCount``, which passes the neuron's spike count
  ``n`` on (the activation NeuroBench records);
* each conv/linear layer fed by spikes becomes ``SpikeInputConv2d`` / ``SpikeInputLinear``,
  which multiplies the count back by the presynaptic threshold before the layer's own
  arithmetic, so its output is bit for bit the suite's. NeuroBench binarises a deep copy of
  the layer to count; that copy is the plain layer.

Only sequential networks (as the NIR export) are wrapped. docs/interop.md relates each
NeuroBench metric to the suite's ops, energy and binary sub-step figures.
"""
from __future__ import annotations

import contextlib
import copy
import io

import torch
from torch import nn

from annsnn.neurons import IFNeuron, reset_neurons

from ._deps import need
from .nir_export import SKIP, ExportError, sequential_leaves


class SpikeCount(nn.Module):
    """A spiking layer as NeuroBench sees it: the wrapped neuron, emitting its count n."""

    def __init__(self, neuron: IFNeuron):
        super().__init__()
        self.neuron = neuron

    def forward(self, x):
        # the neuron returns fl(n * theta) with n whole and small: dividing by theta and
        # rounding gives n back exactly
        return torch.round(self.neuron(x) / self.neuron.theta)


class _SpikeInput:
    """Mixin: the layer takes spike counts and multiplies them by the presynaptic threshold
    first, exactly as the suite's neuron does (n.mul_(theta)), then runs the plain layer."""

    plain: type

    def forward(self, n):
        return super().forward(n * self.theta_pre)

    def __deepcopy__(self, memo):
        # NeuroBench counts operations on a binarised deep copy: give it the plain layer
        plain = self.plain.__new__(self.plain)
        plain.__dict__ = {k: copy.deepcopy(v, memo) for k, v in self.__dict__.items()
                          if k != "theta_pre"}
        return plain


class SpikeInputConv2d(_SpikeInput, nn.Conv2d):
    plain = nn.Conv2d


class SpikeInputLinear(_SpikeInput, nn.Linear):
    plain = nn.Linear


def _rewrap(layer: nn.Module, theta: torch.Tensor) -> nn.Module:
    cls = SpikeInputConv2d if isinstance(layer, nn.Conv2d) else SpikeInputLinear
    new = cls.__new__(cls)
    new.__dict__ = dict(layer.__dict__)            # shares the parameters: no copy
    new.theta_pre = theta                          # a plain attribute: not in the footprint
    return new


class TimeLoop(nn.Module):
    """The SNN run for ``T`` steps on a static image, returning the mean classifier output
    (the suite's readout); the neurons are reset at every call (one call = one batch)."""

    def __init__(self, body: nn.Sequential, T: int):
        super().__init__()
        self.body = body
        self.T = int(T)

    def forward(self, x):
        reset_neurons(self.body)
        cum = None
        for _ in range(self.T):
            out = self.body(x)
            cum = out.clone() if cum is None else cum.add_(out)
        return cum / self.T


def spike_count_view(snn: nn.Module, T: int) -> TimeLoop:
    """``snn`` (sequential; its modules are shared, not copied) with the two adapters, run
    for ``T`` steps per call."""
    try:
        leaves = sequential_leaves(snn)
    except ExportError as exc:
        raise ExportError(f"NeuroBench view: {exc}") from None
    body, theta = [], None
    for _, m in leaves:
        if isinstance(m, SKIP):
            continue
        if isinstance(m, IFNeuron):
            body.append(SpikeCount(m))
            theta = m.theta
        elif isinstance(m, (nn.Conv2d, nn.Linear)) and theta is not None:
            body.append(_rewrap(m, theta))
            theta = None
        else:
            if theta is not None and not isinstance(m, (nn.AvgPool2d, nn.Flatten)):
                raise ExportError(f"NeuroBench view: {type(m).__name__} between a spiking layer and "
                                  "the next synaptic layer is not supported")
            body.append(m)
    return TimeLoop(nn.Sequential(*body), T)


def neurobench_metrics(snn: nn.Module, loader, T: int, accuracy: bool = True) -> dict:
    """NeuroBench's results for ``snn`` run for ``T`` steps on every image of ``loader`` (a
    DataLoader of (image, label) batches): Footprint (bytes), ConnectionSparsity,
    ActivationSparsity, SynapticOperations {Effective_MACs, Effective_ACs, Dense} per image
    over the T steps, and ClassificationAccuracy. A metric NeuroBench fails on raises
    (NeuroBench itself would print the error and report 0)."""
    bench = need("neurobench.benchmarks", "NeuroBench's metrics")
    models = need("neurobench.models", "NeuroBench's metrics")
    static = need("neurobench.metrics.static", "NeuroBench's metrics")
    workload = need("neurobench.metrics.workload", "NeuroBench's metrics")
    net = spike_count_view(snn, T).eval()
    model = models.TorchModel(net)
    model.add_activation_module(SpikeCount)
    metrics = [[static.Footprint, static.ConnectionSparsity],
               [workload.ActivationSparsity, workload.SynapticOperations]]
    post = []
    if accuracy:
        metrics[1].append(workload.ClassificationAccuracy)
        post = [lambda out: out.argmax(1)]
    out = io.StringIO()
    with torch.inference_mode(), contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(io.StringIO()):
        b = bench.Benchmark(model, loader, [], post, metrics)
        try:
            results = b.run(quiet=False)
        finally:
            b.workload_metric_manager.cleanup_hooks(model)
    errors = [line for line in out.getvalue().splitlines() if line.startswith("Error running")]
    if errors:
        raise RuntimeError(f"NeuroBench: {errors[0]}")
    return results
