"""A converted SNN (annsnn.convert) written as a NIR graph (Neuromorphic Intermediate
Representation, package ``nir``).

What the graph holds, node by node (docs/interop.md has the reasoning):

* ``input``: the raw image (pixels in [0, 1]), presented unchanged at every step: direct
  encoding, the analog image is the first synaptic layer's input current at each step.
* the model's ``Normalize`` ((x - mean) / std per channel) and any BatchNorm left unfolded
  (one after a pooling layer): 1x1 ``Conv2d`` nodes (per-channel scale and bias).
* conv/linear layers with BatchNorm already folded (as ``convert`` folds it): ``Conv2d``,
  ``Affine`` (with bias) or ``Linear``. Spikes in NIR are unit events, while the suite's
  neuron emits ``n * theta``; so each synaptic layer fed by a neuron layer carries that
  layer's threshold in its weights (W * theta_pre), and the bias is unchanged.
* average pooling and flatten: ``AvgPool2d`` and ``Flatten`` (dims without the batch).
* each single-spike ``IFNeuron``: NIR ``IF`` (leak 1) or ``LIF`` (exponential leak), with
  reset by subtraction of ``v_threshold - v_reset``. A neuron that starts at V0 = phi*theta
  is written in the potential's frame shifted by -V0: it rests at 0, fires at
  (1 - phi)*theta and resets to -phi*theta, i.e. subtracts theta, exactly the suite's
  neuron. NIR has no initial potential, and this costs nothing extra (no input, no op).
* the classifier (the last conv/linear, no neuron): its output is the graph's ``output``,
  a current at every step; the suite predicts the argmax of its mean over steps 1..t.

Refused, with one line saying what NIR lacks (``ExportError``): a neuron that emits more
than one spike per step (steprelu, steprelu-cap2/4), the linear leak, an initial potential
together with a leak (NIR's LIF would leak V0 at t = 1, the suite's neuron does not), and
any network that is not a plain sequence of layers (residual additions).
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from annsnn.models import Normalize
from annsnn.neurons import IFNeuron

from ._deps import need

# The length of one simulation step in NIR's continuous time, used only where a time
# constant is written (the leaky neuron). It is snnTorch's NIR convention (export and
# import both use 1e-4 s), so its importer reads the leak back as beta = 1 - dt/tau.
DT = 1e-4

SKIP = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)


class ExportError(ValueError):
    """The SNN cannot be written as NIR exactly; the message is one line naming what is missing."""


@dataclass
class NeuronSpec:
    """One spiking layer as exported: threshold, initial potential (fraction phi) and leak."""
    name: str          # NIR node name
    module: str        # module path in the SNN
    theta: float
    phi: float
    leak: float
    shape: tuple
    v_threshold: float = field(init=False)
    v_reset: float = field(init=False)

    def __post_init__(self):
        # the frame shifted by -V0: rest at 0, fire at (1 - phi) theta, reset to -phi theta
        self.v_threshold = float(np.float32((1.0 - self.phi) * self.theta))
        self.v_reset = float(np.float32(-self.phi * self.theta))


def sequential_leaves(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The leaf layers of a (nested) nn.Sequential in execution order."""
    if not isinstance(model, nn.Sequential):
        raise ExportError(f"'{prefix or type(model).__name__}' is {type(model).__name__}, not a "
                          "sequence of layers: only sequential networks (no residual additions) "
                          "are exported")
    out = []
    for name, m in model.named_children():
        path = f"{prefix}.{name}" if prefix else name
        if isinstance(m, nn.Sequential):
            out += sequential_leaves(m, path)
        else:
            out.append((path, m))
    return out


def neuron_refusal(name: str, m: IFNeuron) -> str | None:
    """Why ``m`` has no exact NIR counterpart (one line), or None when it has one."""
    if m.max_spikes > 1:
        return (f"layer '{name}' emits up to {m.max_spikes} spikes per step: NIR's neurons "
                "(IF, LIF) emit at most one spike per step, and single-spike sub-steps are not "
                "the same network (docs/interop.md)")
    if m.leak != 1.0 and m.leak_mode != "exp":
        return (f"layer '{name}' has the linear leak ({m.leak_mode}, leak {m.leak:g}): NIR's "
                "only leaky neuron (LIF) leaks exponentially")
    if m.leak != 1.0 and m.phi != 0.0:
        return (f"layer '{name}' starts at V0 = {m.phi:g}*theta and leaks ({m.leak:g}): NIR has "
                "no initial potential, and its shifted-rest encoding under LIF would leak V0 at "
                "t = 1, which the suite's neuron does not")
    return None


def check_exportable(snn: nn.Module) -> None:
    """Raise ExportError (one line) for anything NIR cannot express exactly."""
    leaves = sequential_leaves(snn)
    supported = (Normalize, nn.Conv2d, nn.Linear, nn.AvgPool2d, nn.Flatten, IFNeuron,
                 nn.BatchNorm2d) + SKIP
    for name, m in leaves:
        if not isinstance(m, supported):
            raise ExportError(f"layer '{name}' is {type(m).__name__}, which the NIR export does "
                              "not write (supported: Conv2d, Linear, AvgPool2d, Flatten, "
                              "BatchNorm2d, Normalize and single-spike IF neurons)")
        if isinstance(m, IFNeuron):
            why = neuron_refusal(name, m)
            if why:
                raise ExportError(why)
        if isinstance(m, nn.AvgPool2d) and (m.ceil_mode or m.divisor_override is not None or
                                            (m.padding not in (0, (0, 0)) and not m.count_include_pad)):
            raise ExportError(f"layer '{name}' is AvgPool2d with ceil_mode, divisor_override or "
                              "padding excluded from the count, which NIR's AvgPool2d does not have")
        if isinstance(m, nn.Conv2d) and m.padding_mode != "zeros":
            raise ExportError(f"layer '{name}' pads with '{m.padding_mode}': NIR's Conv2d pads with zeros")
    if not any(isinstance(m, IFNeuron) for _, m in leaves):
        raise ExportError("the network has no spiking layer")
    if isinstance(next(m for _, m in reversed(leaves) if not isinstance(m, SKIP)), IFNeuron):
        raise ExportError("the network ends in a spiking layer; the export expects the suite's "
                          "non-spiking classifier as the last layer")


def _shapes(snn: nn.Module, input_shape: tuple) -> dict[str, tuple]:
    """Per-sample output shape of every leaf, from one forward pass on zeros (neuron state and
    statistics are saved and restored)."""
    leaves = sequential_leaves(snn)
    shapes: dict[str, tuple] = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: shapes.__setitem__(n, tuple(o.shape[1:])))
             for n, m in leaves]
    neurons = [m for _, m in leaves if isinstance(m, IFNeuron)]
    saved = [(m.u, m.record) for m in neurons]
    try:
        for m in neurons:
            m.reset()
            m.record = False
        dev = next(iter(list(snn.parameters()) + list(snn.buffers()))).device
        with torch.inference_mode():
            snn(torch.zeros((1, *input_shape), device=dev))
    finally:
        for h in hooks:
            h.remove()
        for m, (u, rec) in zip(neurons, saved):
            m.u, m.record = u, rec
    return shapes


def _f32(t) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        t = t.detach().to("cpu", torch.float64).numpy()
    return np.asarray(t, dtype=np.float64).astype(np.float32)


def _pair(v) -> np.ndarray:
    return np.array(v if isinstance(v, (tuple, list)) else (v, v), dtype=np.int64)


def git_commit(root: Path | None = None) -> str:
    """The commit of the working tree (with '+dirty' if it has changes), or 'unknown'."""
    root = root or Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def neuron_specs(snn: nn.Module, input_shape: tuple) -> list[NeuronSpec]:
    """The exported parameters of every spiking layer, in order."""
    check_exportable(snn)
    shapes = _shapes(snn, input_shape)
    specs, k = [], 0
    for name, m in sequential_leaves(snn):
        if isinstance(m, IFNeuron):
            k += 1
            specs.append(NeuronSpec(f"if{k}" if m.leak == 1.0 else f"lif{k}", name,
                                    float(m.theta), float(m.phi), float(m.leak), shapes[name]))
    return specs


def _times_presynaptic_theta(weight: torch.Tensor, theta_pre, meta: dict):
    """A synapse fed by spikes carries the presynaptic threshold in its weights (a NIR spike is
    a unit event): (weight x theta_pre, None), recorded in ``meta``; unchanged with no theta."""
    w = weight.detach().double()
    if theta_pre is None:
        return w, None
    meta["weight_times_presynaptic_theta"] = theta_pre
    return w * theta_pre, None


def to_nir(snn: nn.Module, input_shape: tuple, metadata: dict | None = None):
    """The NIR graph (``nir.NIRGraph``) of ``snn`` for per-sample inputs of ``input_shape``
    (e.g. (1, 28, 28)). Raises ExportError (one line) where NIR cannot express it exactly."""
    nir = need("nir", "the NIR export")
    input_shape = tuple(int(s) for s in input_shape)
    check_exportable(snn)
    shapes = _shapes(snn, input_shape)
    specs = {s.module: s for s in neuron_specs(snn, input_shape)}
    nodes = {"input": nir.Input(input_type={"input": np.array(input_shape)})}
    edges, prev = [], "input"
    theta_pre = None              # threshold of the spiking layer feeding the next synapse
    count: dict[str, int] = {}
    cur_shape = input_shape

    def add(kind: str, node) -> None:
        nonlocal prev
        count[kind] = count.get(kind, 0) + 1
        name = f"{kind}{count[kind]}"
        nodes[name] = node
        edges.append((prev, name))
        prev = name

    def spatial(shape):
        return tuple(int(s) for s in shape[-2:])

    graph_meta = {}
    for path, m in sequential_leaves(snn):
        if isinstance(m, SKIP):
            continue
        meta = {"module": path}
        if isinstance(m, Normalize) and prev == "input":
            # the model's fixed input normalisation stays outside the graph, as preprocessing:
            # a 1x1 conv node would compute x * (1/std) - mean/std, which rounds differently
            # from (x - mean) / std and moves first-layer currents by an ulp
            graph_meta["input_mean"] = _f32(m.mean).flatten()
            graph_meta["input_std"] = _f32(m.std).flatten()
            cur_shape = shapes[path]
            continue
        if isinstance(m, (Normalize, nn.BatchNorm2d)):
            if isinstance(m, Normalize):
                scale = 1.0 / m.std.detach().double().flatten()
                shift = -m.mean.detach().double().flatten() * scale
                meta["op"] = "(x - mean) / std per channel"
            else:
                inv = 1.0 / torch.sqrt(m.running_var.double() + m.eps)
                w = m.weight.detach().double() if m.weight is not None else torch.ones_like(inv)
                b = m.bias.detach().double() if m.bias is not None else torch.zeros_like(inv)
                scale = w * inv
                shift = b - m.running_mean.double() * scale
                meta["op"] = "eval-mode BatchNorm2d per channel"
            if theta_pre is not None:   # a scale on spikes: the unit spike carries theta
                scale = scale * theta_pre
                theta_pre = None
            c = scale.numel()
            add("affine", nir.Conv2d(input_shape=spatial(cur_shape),
                                     weight=_f32(scale).reshape(c, 1, 1, 1), stride=1, padding=0,
                                     dilation=1, groups=c, bias=_f32(shift), metadata=meta))
        elif isinstance(m, nn.Conv2d):
            w, theta_pre = _times_presynaptic_theta(m.weight, theta_pre, meta)
            bias = m.bias if m.bias is not None else torch.zeros(m.out_channels)
            pad = m.padding if not isinstance(m.padding, str) else m.padding
            add("conv", nir.Conv2d(input_shape=spatial(cur_shape), weight=_f32(w),
                                   stride=tuple(_pair(m.stride)), padding=pad if isinstance(pad, str) else tuple(_pair(pad)),
                                   dilation=tuple(_pair(m.dilation)), groups=m.groups,
                                   bias=_f32(bias), metadata=meta))
        elif isinstance(m, nn.Linear):
            w, theta_pre = _times_presynaptic_theta(m.weight, theta_pre, meta)
            if m.bias is not None:
                add("fc", nir.Affine(weight=_f32(w), bias=_f32(m.bias), metadata=meta))
            else:
                add("fc", nir.Linear(weight=_f32(w), metadata=meta))
        elif isinstance(m, nn.AvgPool2d):
            add("pool", nir.AvgPool2d(kernel_size=_pair(m.kernel_size),
                                      stride=_pair(m.stride if m.stride is not None else m.kernel_size),
                                      padding=_pair(m.padding), metadata=meta))
        elif isinstance(m, nn.Flatten):
            # NIR's dims count from the sample, without the batch dimension
            start = m.start_dim - 1 if m.start_dim > 0 else m.start_dim
            end = m.end_dim - 1 if m.end_dim > 0 else m.end_dim
            add("flatten", nir.Flatten(input_type={"input": np.array(cur_shape)}, start_dim=start,
                                       end_dim=end, metadata=meta))
        elif isinstance(m, IFNeuron):
            s = specs[path]
            shp = s.shape
            meta.update({"reset": "subtract", "theta": s.theta, "phi": s.phi, "leak": s.leak,
                         "v0": "rest 0 in the frame shifted by -phi*theta (fires at (1-phi)*theta, "
                               "resets to -phi*theta: subtracts theta)",
                         "fires_at": "v >= v_threshold (the suite's floor(u) >= 1)"})
            full = lambda v: np.full(shp, v, dtype=np.float32)  # noqa: E731
            if s.leak == 1.0:
                node = nir.IF(r=full(1.0), v_threshold=full(s.v_threshold), v_reset=full(s.v_reset),
                              metadata=meta)
            else:
                tau = DT / (1.0 - s.leak)
                meta["dt"] = DT
                node = nir.LIF(tau=full(tau), r=full(tau / DT), v_leak=full(0.0),
                               v_threshold=full(s.v_threshold), v_reset=full(s.v_reset), metadata=meta)
            nodes[s.name] = node
            edges.append((prev, s.name))
            prev = s.name
            theta_pre = s.theta
        cur_shape = shapes[path]
    nodes["output"] = nir.Output(output_type={"output": np.array(cur_shape)})
    edges.append((prev, "output"))
    meta = {
        "producer": "annsnn-bench interop.nir_export",
        "input": ("(x - input_mean) / input_std of the image x in [0, 1] (the model's Normalize "
                  "layer, applied before the graph), the same at every step (direct encoding)"
                  if graph_meta else "the image, the same at every step (direct encoding)"),
        **graph_meta,
        "readout": "output node = classifier current at each step; prediction at t = argmax of "
                   "its mean over steps 1..t",
        "spikes": "unit events; a synaptic layer fed by spikes has W * theta_pre as weights",
        "reset": "by subtraction of v_threshold - v_reset",
        "dt": DT,
    }
    for k, v in (metadata or {}).items():
        if v is not None:
            meta[str(k)] = v if isinstance(v, (int, float, str, np.ndarray)) else str(v)
    graph = nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)   # checks every edge's shapes
    return graph


def export_snn(snn: nn.Module, path, metadata: dict | None = None, input_shape: tuple | None = None):
    """Write ``snn`` as a NIR file at ``path`` and return the graph. ``metadata`` (preset, seed,
    method, ...) is stored in the graph with the commit added when absent; ``input_shape``
    defaults to the shape recorded by ``metadata['input_shape']``."""
    nir = need("nir", "the NIR export")
    metadata = dict(metadata or {})
    metadata.setdefault("commit", git_commit())
    if input_shape is None:
        if "input_shape" not in metadata:
            raise ValueError("give input_shape (per sample, e.g. (1, 28, 28))")
        input_shape = tuple(metadata["input_shape"])
    metadata["input_shape"] = "x".join(str(int(s)) for s in input_shape)
    graph = to_nir(snn, input_shape, metadata)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nir.write(str(path), graph)
    return graph


def graph_input(x: torch.Tensor, graph) -> torch.Tensor:
    """What the graph's input node takes for images ``x`` (pixels in [0, 1]): the recorded
    normalisation (x - input_mean) / input_std, computed as annsnn's Normalize computes it."""
    meta = graph.metadata or {}
    if "input_mean" not in meta:
        return x
    shape = (1, -1) + (1,) * (x.dim() - 2)
    mean = torch.as_tensor(np.asarray(meta["input_mean"], dtype=np.float32)).view(shape)
    std = torch.as_tensor(np.asarray(meta["input_std"], dtype=np.float32)).view(shape)
    return (x - mean.to(x.device)) / std.to(x.device)


def read_metadata(graph) -> dict:
    """The graph's metadata with HDF5's bytes decoded to str."""
    out = {}
    for k, v in (graph.metadata or {}).items():
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out
