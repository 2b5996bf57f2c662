"""Round trip: the exported NIR graph imported by snnTorch's own importer
(``snntorch.import_nir.import_from_nir``), run for T steps on real images and compared with
the suite's own simulation (``annsnn.simulate``): predictions at every t and spike counts per
image, layer and step.

snnTorch 1.0.0's importer needs four repairs before it runs the graph as NIR defines it;
``import_snntorch`` applies them after the import, each one to the modules the importer
built, and returns what it changed (docs/interop.md):

1. ``nir.IF`` becomes ``snn.Leaky(beta=0.9, init_hidden=False)``: a 10% leak per step, and
   a module that returns (spikes, membrane) where the graph passes one tensor, so the
   imported network cannot run at all (snnTorch issue #416; PR #452 sets beta = 1 after
   the 1.0.0 release). Repair: beta = 1, init_hidden = True.
2. ``nir.LIF`` becomes a Leaky that resets to zero; NIR's reset to v_reset read in discrete
   time is a subtraction of v_threshold - v_reset (the suite's neuron). Repair: reset by
   subtraction.
3. Neither reads ``v_reset``: the Leaky fires at and subtracts ``v_threshold``. Repair:
   threshold = v_threshold - v_reset, membrane starting at -v_reset each sample (the same
   neuron in the unshifted frame; for V0 = 0 both are no-ops).
4. ``nir.Flatten`` dims count from the sample (as snnTorch's own exporter writes them), but
   the importer passes them to ``torch.nn.Flatten`` unchanged, flattening the batch too.
   Repair: start_dim/end_dim + 1.
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from annsnn.neurons import spiking_layers
from annsnn.simulate import simulate

from ._deps import need
from .nir_export import graph_input


@dataclass
class Trace:
    """One simulation, per image: predictions at t = 1..T and spikes per layer and step."""
    predictions: torch.Tensor             # [N, T]
    spikes: dict[str, torch.Tensor]       # layer -> [N, T] int64 (spikes summed over its neurons)
    labels: torch.Tensor                  # [N]

    @property
    def acc(self) -> list[float]:
        return (self.predictions == self.labels[:, None]).double().mean(0).tolist()


def _split(batch):
    return batch[0], batch[1]


def suite_trace(snn: nn.Module, loader, T: int, **kwargs) -> Trace:
    """The suite's own simulation (``annsnn.simulate.simulate``), with a forward hook per
    spiking layer that counts each image's spikes at every step."""
    neurons = spiking_layers(snn)
    per_layer: dict[str, list[torch.Tensor]] = {n: [] for n, _ in neurons}

    def hook(mod, inp, out, name):
        if not mod.record:          # simulate's one-image pass that profiles the operations
            return
        n = torch.round(out.detach() / mod.theta)           # out = n * theta, n whole
        per_layer[name].append(n.flatten(1).sum(1).to(torch.int64).cpu())
    hooks = [m.register_forward_hook(lambda mod, i, o, name=name: hook(mod, i, o, name))
             for name, m in neurons]
    try:
        res = simulate(snn, loader, T, progress=False, **kwargs)
    finally:
        for h in hooks:
            h.remove()
    return Trace(res.predictions, _per_image(per_layer, T), res.labels)


def _per_image(per_layer: dict[str, list[torch.Tensor]], T: int) -> dict[str, torch.Tensor]:
    """Per-step spike counts recorded call by call (batch after batch, T calls per batch)
    regrouped as one [N, T] tensor per layer."""
    return {name: torch.cat([torch.stack(steps[i:i + T], 1) for i in range(0, len(steps), T)], 0)
            for name, steps in per_layer.items()}


def _nir_neurons(graph) -> list[tuple[str, object]]:
    nir = need("nir", "the round trip")
    return [(k, v) for k, v in graph.nodes.items() if isinstance(v, (nir.IF, nir.LIF))]


def _no_carried_reset(mem: torch.Tensor) -> torch.Tensor:
    """snn.Leaky's reset signal at the start of a step, made zero: the step's own spike
    then subtracts the threshold once, after the comparison, as in the suite's neuron."""
    return torch.zeros_like(mem)


def _fire_at_or_above(m):
    """snn.Leaky.fire with >= in place of >: the suite's neuron fires at floor(u) >= 1."""
    def fire(mem):
        return (mem >= m.threshold).to(mem.dtype) * m.graded_spikes_factor
    return fire


def import_snntorch(graph, repair: bool = True, ge: bool = True):
    """(network, repairs): ``graph`` imported by snnTorch's own NIR importer and, with
    ``repair``, the four repairs of the module docstring applied (``repairs`` lists what each
    changed). The network's neurons carry ``_interop_v_init`` (membrane at t = 0)."""
    nir = need("nir", "the round trip")
    snn = need("snntorch", "the round trip")
    importer = need("snntorch.import_nir", "the round trip")
    with contextlib.redirect_stdout(io.StringIO()):   # it prints its RNN search
        net = importer.import_from_nir(graph)
    repairs: list[str] = []
    mods = dict(net.named_children())
    for name, node in graph.nodes.items():
        key = name.replace(".", "_")
        m = mods.get(key)
        if m is None:
            continue
        if isinstance(node, (nir.IF, nir.LIF)):
            assert isinstance(m, snn.Leaky), f"snnTorch imported {name} as {type(m).__name__}"
            v_thr = np.unique(node.v_threshold)
            v_reset = np.unique(node.v_reset)
            assert v_thr.size == 1 and v_reset.size == 1, f"{name}: one threshold per layer expected"
            m._interop_v_init = float(-v_reset[0])
            if not repair:
                continue
            with torch.no_grad():
                if isinstance(node, nir.IF):
                    if not (m.beta == 1).all() or not m.init_hidden:
                        repairs.append(f"{name}: IF imported as Leaky(beta={float(m.beta.flatten()[0]):g}, "
                                       f"init_hidden={m.init_hidden}) -> beta=1, init_hidden=True")
                    m.beta = torch.ones_like(torch.as_tensor(m.beta, dtype=torch.float32))
                    m.init_hidden = True
                elif int(m.reset_mechanism_val) != 0:
                    repairs.append(f"{name}: LIF imported with reset '{m.reset_mechanism}' -> subtract")
                    m.reset_mechanism = "subtract"
                    m.state_function = m._base_sub
                if m.reset_delay or not getattr(m, "_interop_reset_now", False):
                    repairs.append(f"{name}: reset signal taken from the membrane left by the "
                                   "previous step -> only this step's spike resets")
                    m.reset_delay = False
                    m.mem_reset = _no_carried_reset
                    m._interop_reset_now = True
                fires_at = node.metadata.get("fires_at", b"")
                fires_at = fires_at.decode() if isinstance(fires_at, bytes) else str(fires_at)
                if ge and fires_at.startswith("v >= "):
                    repairs.append(f"{name}: fires at v > threshold -> v >= threshold (the node's "
                                   "metadata 'fires_at')")
                    m.fire = _fire_at_or_above(m)
                thr = np.float32(np.float64(v_thr[0]) - np.float64(v_reset[0]))
                if float(m.threshold) != float(thr):
                    repairs.append(f"{name}: threshold {float(m.threshold):.9g} (v_threshold) -> "
                                   f"{float(thr):.9g} (v_threshold - v_reset), membrane starts at "
                                   f"{m._interop_v_init:.9g}")
                m.threshold = torch.as_tensor(thr, dtype=torch.float32)
        elif isinstance(node, nir.Flatten) and isinstance(m, nn.Flatten) and repair:
            start = m.start_dim + 1 if m.start_dim >= 0 else m.start_dim
            end = m.end_dim + 1 if m.end_dim >= 0 else m.end_dim
            if (start, end) != (m.start_dim, m.end_dim):
                repairs.append(f"{name}: Flatten({m.start_dim}, {m.end_dim}) -> Flatten({start}, {end}) "
                               "(NIR's dims exclude the batch)")
            m.start_dim, m.end_dim = start, end
    return net, repairs


def snntorch_trace(net: nn.Module, graph, loader, T: int, channels_last: bool | None = None) -> Trace:
    """Run the imported network for T steps on every batch of ``loader`` (the image at every
    step, the membrane of each neuron reset to its v_init per batch) and read off what
    ``suite_trace`` reads: predictions (argmax of the mean output over steps 1..t) and spikes
    per image, layer and step."""
    neurons = [(name, getattr(net, name.replace(".", "_"))) for name, _ in _nir_neurons(graph)]
    shapes = {name: tuple(np.asarray(node.v_threshold).shape) for name, node in _nir_neurons(graph)}
    layout = torch.channels_last if (True if channels_last is None else channels_last) \
        else torch.contiguous_format
    net = net.eval().to(memory_format=layout)
    per_layer: dict[str, list[torch.Tensor]] = {n: [] for n, _ in neurons}
    hooks = [m.register_forward_hook(
        lambda mod, i, o, name=name: per_layer[name].append(
            (o[0] if isinstance(o, tuple) else o).detach().flatten(1).sum(1).round().to(torch.int64)))
        for name, m in neurons]
    preds, labels = [], []
    try:
        with torch.inference_mode():
            for batch in loader:
                x, y = _split(batch)
                if x.dim() == 4:
                    x = x.contiguous(memory_format=layout)
                x = graph_input(x, graph)
                for name, m in neurons:
                    m.mem = torch.full((x.shape[0], *shapes[name]), getattr(m, "_interop_v_init", 0.0))
                cum, p = None, []
                for t in range(1, T + 1):
                    out = net(x)
                    out = out[0] if isinstance(out, tuple) else out
                    cum = out.clone() if cum is None else cum.add_(out)
                    p.append((cum / t).argmax(1))
                preds.append(torch.stack(p, 1))
                labels.append(y)
    finally:
        for h in hooks:
            h.remove()
    return Trace(torch.cat(preds), _per_image(per_layer, T), torch.cat(labels))


def compare(suite: Trace, other: Trace) -> dict:
    """Agreement of two traces of the same images: predictions and spike counts, with the
    first spike mismatch located (layer index, image, step) when there is one."""
    n, T = suite.predictions.shape
    same_pred = suite.predictions == other.predictions
    out = {
        "n_images": n, "T": T,
        "images_identical_all_t": int(same_pred.all(1).sum()),
        "images_identical_at_T": int(same_pred[:, -1].sum()),
        "images_identical_per_t": [int(v) for v in same_pred.sum(0)],     # index t - 1
        "acc_suite": suite.acc, "acc_other": other.acc,
        "layers": [],
    }
    cells = equal = 0
    first = None
    for k, ((ln, a), (bn, b)) in enumerate(zip(suite.spikes.items(), other.spikes.items())):
        eq = a == b
        cells += eq.numel()
        equal += int(eq.sum())
        per_step_equal = (a.sum(0) == b.sum(0))
        out["layers"].append({"suite": ln, "nir": bn, "spikes_suite": int(a.sum()),
                              "spikes_other": int(b.sum()),
                              "cells_equal": int(eq.sum()), "cells": eq.numel(),
                              "steps_with_equal_totals": int(per_step_equal.sum())})
        if first is None and not bool(eq.all()):
            i, t = (~eq).nonzero()[0].tolist()
            first = {"layer": ln, "image": i, "t": t + 1, "suite": int(a[i, t]), "other": int(b[i, t])}
    out["spike_cells_equal"] = equal
    out["spike_cells"] = cells
    out["first_mismatch"] = first
    out["identical"] = bool(same_pred.all()) and equal == cells
    return out


def roundtrip(snn: nn.Module, loader, T: int, input_shape: tuple, path=None,
              metadata: dict | None = None, repair: bool = True, ge: bool = True) -> dict:
    """Export ``snn`` (to ``path`` when given, read back from it), import it with snnTorch,
    run both for T steps on ``loader`` and compare (``compare``'s dict plus the repairs)."""
    nir = need("nir", "the round trip")
    from .nir_export import export_snn, to_nir
    if path is not None:
        export_snn(snn, path, metadata, input_shape)
        graph = nir.read(str(path))
    else:
        graph = to_nir(snn, input_shape, metadata)
    net, repairs = import_snntorch(graph, repair=repair, ge=ge)
    theirs = snntorch_trace(net, graph, loader, T)
    ours = suite_trace(snn, loader, T)
    result = compare(ours, theirs)
    result["repairs"] = repairs
    return result
