"""Operation counts: ANN MACs, spiking fan-out, synaptic operations and the 45 nm energy estimate.

Conventions (docs/method.md#metrics):
- a conv/linear layer's MACs per image = output elements x (in_channels/groups x kernel area);
- the first synaptic layer sees analog input, so the SNN pays its MACs at every step;
- every other synaptic operation is triggered by a spike: SOPs = spikes x fan-out, where a
  multi-spike neuron emitting n spikes counts n. A neuron layer's fan-out is, for each
  conv/linear that reads it (through pooling, flatten or residual additions), that layer's
  MACs divided by its input elements, plus 1 for each residual path into another neuron
  (an identity synapse);
- energy: 4.6 pJ per MAC, 0.9 pJ per accumulate (Horowitz, 45 nm).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch
import torch.fx
from torch import nn

from .neurons import IFNeuron

E_MAC_PJ = 4.6
E_AC_PJ = 0.9
SYNAPTIC = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass
class OpProfile:
    macs: dict[str, float] = field(default_factory=dict)        # per synaptic layer, per image
    in_elems: dict[str, float] = field(default_factory=dict)    # input elements per image
    order: list[str] = field(default_factory=list)              # synaptic layers in execution order
    fanout: dict[str, float] = field(default_factory=dict)      # per neuron layer, synapses per spike

    @property
    def total_macs(self) -> float:
        return float(sum(self.macs.values()))

    @property
    def first_layer_macs(self) -> float:
        return float(self.macs[self.order[0]]) if self.order else 0.0


def _layer_macs(m: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> float:
    b = out.shape[0]
    if isinstance(m, nn.Linear):
        return out.numel() / b * m.in_features
    k = 1
    for s in m.kernel_size:
        k *= s
    return out.numel() / b * (m.in_channels // m.groups) * k


def profile_ops(model: nn.Module, example: torch.Tensor, graph: torch.fx.Graph | None = None) -> OpProfile:
    """Count MACs per synaptic layer on one example batch and derive every neuron layer's fan-out."""
    prof = OpProfile()
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, SYNAPTIC):
            def hook(mod, inp, out, name=name):
                if name not in prof.macs:
                    prof.order.append(name)
                prof.macs[name] = _layer_macs(mod, inp[0], out)
                prof.in_elems[name] = inp[0].numel() / inp[0].shape[0]
            hooks.append(m.register_forward_hook(hook))
    neurons = [n for n, m in model.named_modules() if isinstance(m, IFNeuron)]
    seq: list[str] = []  # synaptic and neuron layers in execution order
    for name, m in model.named_modules():
        if isinstance(m, SYNAPTIC + (IFNeuron,)):
            hooks.append(m.register_forward_hook(lambda mod, i, o, name=name: seq.append(name)))
    saved = {n: (model.get_submodule(n).u, model.get_submodule(n).record) for n in neurons}
    try:
        for n in neurons:
            model.get_submodule(n).record = False
            model.get_submodule(n).reset()
        with torch.inference_mode():
            model(example)
    finally:
        for h in hooks:
            h.remove()
        for n, (u, rec) in saved.items():
            model.get_submodule(n).u, model.get_submodule(n).record = u, rec
    if graph is not None:
        prof.fanout = _graph_fanout(model, graph, prof, set(neurons))
    else:  # fall back to "the next synaptic layer executed"
        for i, name in enumerate(seq):
            if name in neurons:
                nxt = next((s for s in seq[i + 1:] if s in prof.macs), None)
                prof.fanout[name] = prof.macs[nxt] / prof.in_elems[nxt] if nxt else 0.0
    for n in neurons:
        prof.fanout.setdefault(n, 0.0)
    return prof


def _graph_fanout(model, graph, prof: OpProfile, neurons: set[str]) -> dict[str, float]:
    fan: dict[str, float] = {}
    for node in graph.nodes:
        if node.op != "call_module" or node.target not in neurons:
            continue
        total, seen, frontier = 0.0, set(), list(node.users)
        while frontier:
            user = frontier.pop()
            if user in seen:
                continue
            seen.add(user)
            if user.op == "call_module" and user.target in prof.macs:
                total += prof.macs[user.target] / prof.in_elems[user.target]
            elif user.op == "call_module" and user.target in neurons:
                total += 1.0
            else:
                frontier.extend(user.users)
        fan[node.target] = total
    return fan


def energy_pj(first_layer_macs: float, sops: float, t: int) -> float:
    """SNN energy per image over t steps: analog first layer as MACs at every step, the rest as ACs."""
    return E_MAC_PJ * first_layer_macs * t + E_AC_PJ * sops


def ann_energy_pj(macs: float) -> float:
    return E_MAC_PJ * macs


def correct_bits(predictions: torch.Tensor, labels: torch.Tensor) -> str:
    """Per-image correctness (prediction == label) packed into bits, base64-encoded: what a
    paired test (McNemar) between two methods on the same images needs, in ~1/6 byte per image."""
    return pack_bits((predictions.cpu() == labels.cpu()).numpy())


def pack_bits(ok) -> str:
    """A boolean array (one entry per image) packed as ``correct_bits`` stores it."""
    import base64

    import numpy as np
    return base64.b64encode(np.packbits(np.asarray(ok, dtype=bool)).tobytes()).decode("ascii")


def bits_correct(packed: str, n: int):
    """The boolean array that ``correct_bits`` packed, for ``n`` images."""
    import base64

    import numpy as np
    return np.unpackbits(np.frombuffer(base64.b64decode(packed), dtype=np.uint8))[:n].astype(bool)


def sha256_tensor(t: torch.Tensor) -> str:
    """SHA-256 of a tensor's shape, dtype and bytes: equal hashes mean equal bits."""
    t = t.detach().cpu().contiguous()
    return hashlib.sha256(f"{tuple(t.shape)}:{t.dtype}".encode() + t.numpy().tobytes()).hexdigest()


def sha256_state(module: nn.Module) -> str:
    """SHA-256 over a module's parameters and buffers in name order (names, shapes, dtypes, bytes)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
