"""ANN -> SNN conversion as a module swap (DESIGN section 2).

``convert`` folds BatchNorm into the preceding conv/linear, checks that nothing
in the network would make the conversion inexact, computes thresholds where the
method needs them, and replaces each activation module by an ``IFNeuron``. The
graph itself is kept, so residual additions work unchanged.
"""
from __future__ import annotations

import copy
import math
import operator
import warnings
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from .activations import QCFS, StepReLU
from .models import Normalize
from .neurons import IFNeuron, check_leak


class ConversionError(ValueError):
    """The network cannot be converted exactly; the message names the layer and the fix."""


@dataclass(frozen=True)
class Method:
    name: str
    activation: str              # the ANN activation the method converts ("relu", "qcfs", "steprelu")
    accepts: tuple               # activation module types it converts
    needs_calibration: bool
    description: str


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("maxnorm", "relu", (nn.ReLU,), True,
           "ReLU ANN, threshold = per-layer max activation on the calibration set, single-spike IF, V0 = 0"),
    Method("robustnorm", "relu", (nn.ReLU,), True,
           "ReLU ANN, threshold = per-layer percentile (99.9) on the calibration set, single-spike IF, V0 = 0"),
    Method("qcfs", "qcfs", (QCFS,), False,
           "QCFS ANN, threshold = learned lam_q, single-spike IF, V0 = lam_q/2"),
    Method("steprelu", "steprelu", (StepReLU,), False,
           "StepReLU ANN, threshold = theta, multi-spike IF (up to L spikes per step), V0 = phi*theta"),
    Method("steprelu-single", "steprelu", (StepReLU,), False,
           "StepReLU ANN, threshold = theta*L, single-spike IF, V0 = phi*theta*L (ablation)"),
)}

ACTIVATION_TYPES = (nn.ReLU, StepReLU, QCFS)

# Leaf modules whose eval-mode forward is affine or identity, hence survives conversion exactly.
LINEAR_LEAVES = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
    Normalize,
)
MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
             nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)

# Functions and tensor methods allowed inside a forward(): linear (or shape-only) operations,
# which act identically on the ANN's activations and the SNN's spike outputs. Everything
# else (F.relu, x.clamp(), torch.max, x * y, ...) would bypass conversion and is refused.
_LINEAR_FUNCTIONS = {
    operator.add, operator.sub, operator.neg, operator.pos, operator.getitem, getattr,
    torch.add, torch.sub, torch.neg, torch.cat, torch.stack, torch.flatten, torch.reshape,
    torch.squeeze, torch.unsqueeze, torch.transpose, torch.permute, torch.mean, torch.sum,
    F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
    F.adaptive_avg_pool3d, F.dropout, F.pad, F.linear, F.conv1d, F.conv2d, F.conv3d,
}
_SCALAR_FUNCTIONS = {operator.mul, operator.truediv, torch.mul, torch.div}  # linear with a number
_LINEAR_METHODS = {"view", "reshape", "flatten", "size", "contiguous", "add", "sub", "neg", "mean",
                   "sum", "permute", "transpose", "unsqueeze", "squeeze", "expand", "expand_as",
                   "view_as", "unflatten", "dim", "float", "to"}
_SCALAR_METHODS = {"mul", "div"}


def _is_linear_call(node: torch.fx.Node) -> bool:
    if node.op == "call_function":
        if node.target in _LINEAR_FUNCTIONS:
            return True
        targets, args = _SCALAR_FUNCTIONS, node.args
    elif node.op == "call_method":
        if node.target in _LINEAR_METHODS:
            return True
        targets, args = _SCALAR_METHODS, node.args
    else:
        return True
    if node.target in targets and len(args) == 2:
        # x * c and x / c are linear; x * y (two tensors) and c / x are not
        return not isinstance(args[1], torch.fx.Node) or (
            node.target in (operator.mul, torch.mul, "mul") and not isinstance(args[0], torch.fx.Node))
    return False


def _get_method(method: str) -> Method:
    if method not in METHODS:
        raise ValueError(f"unknown conversion method {method!r}; valid: {', '.join(METHODS)}")
    return METHODS[method]


def _set_module(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, attr = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, attr, new)


class _LeafTracer(torch.fx.Tracer):
    """Treat our activations and neurons as leaves so their internals are not traced."""

    def is_leaf_module(self, m, qualname):
        return isinstance(m, ACTIVATION_TYPES + (IFNeuron, Normalize)) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> torch.fx.Graph | None:
    """Symbolic graph of ``model``, or None when it cannot be traced (data-dependent control flow)."""
    try:
        return _LeafTracer().trace(model)
    except Exception as exc:  # tracing failures come in many exception types
        warnings.warn(f"torch.fx could not trace {type(model).__name__} ({exc}); functional "
                      "activations inside forward() cannot be checked and BatchNorm is folded "
                      "only where it directly follows a conv/linear inside an nn.Sequential")
        return None


def _node_owner(node: torch.fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path = list(stack.values())[-1]
        path = path[0] if isinstance(path, tuple) else path
        return f"{path or '<root>'} (call '{node.target if isinstance(node.target, str) else getattr(node.target, '__name__', node.target)}')"
    name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
    return f"forward() call '{name}' (graph node {node.name})"


def check_convertible(model: nn.Module, method: str, graph: torch.fx.Graph | None = None) -> None:
    """Raise ConversionError for anything that ``method`` cannot convert exactly."""
    spec = _get_method(method)
    for name, m in model.named_modules():
        label = name or "<root>"
        if isinstance(m, MAX_POOLS):
            raise ConversionError(f"layer '{label}' is {type(m).__name__}: max pooling has no exact "
                                  "spiking counterpart; use nn.AvgPool2d (models meant for conversion "
                                  "use average pooling)")
        if isinstance(m, ACTIVATION_TYPES):
            if not isinstance(m, spec.accepts) or (isinstance(m, StepReLU) and spec.activation != "steprelu"):
                raise ConversionError(
                    f"layer '{label}' is {type(m).__name__}, but method '{method}' converts "
                    f"{spec.activation} networks; train the ANN with activation '{spec.activation}' "
                    f"or pick the method for {type(m).__name__}")
            if isinstance(m, StepReLU) and not m.clip:
                raise ConversionError(f"layer '{label}' is StepReLU(clip=False): inputs above L*theta "
                                      "pass unchanged, which no spiking neuron with at most L spikes "
                                      "per step reproduces; train with clip=True")
            continue
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.track_running_stats:
            raise ConversionError(f"layer '{label}' is BatchNorm without running statistics: in eval "
                                  "mode it normalises with each batch's statistics, which depends on "
                                  "the batch and cannot be folded; use track_running_stats=True")
        if isinstance(m, IFNeuron):
            raise ConversionError(f"layer '{label}' is already a spiking neuron; convert the ANN instead")
        if next(m.children(), None) is None and not isinstance(m, LINEAR_LEAVES):
            raise ConversionError(f"layer '{label}' is {type(m).__name__}, which has no exact spiking "
                                  "counterpart; supported: conv/linear/BatchNorm/average pooling/"
                                  "flatten/dropout and the ReLU, QCFS and StepReLU activations")
    if graph is None:
        return
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
        elif not _is_linear_call(node):
            what = f"Tensor.{node.target}()" if node.op == "call_method" else "a function"
            raise ConversionError(f"{_node_owner(node)} applies {what} that is not linear outside "
                                  "an activation module, so conversion cannot replace it exactly; "
                                  "use an activation module (nn.ReLU / QCFS / StepReLU) or a "
                                  "linear layer instead")
    for target, n in calls.items():
        if n > 1 and isinstance(model.get_submodule(target), ACTIVATION_TYPES):
            raise ConversionError(f"activation layer '{target}' is called {n} times in forward(); a "
                                  "spiking neuron keeps state, so give each call its own module")


def fold_bn(model: nn.Module, graph: torch.fx.Graph | None = None, inplace: bool = False) -> nn.Module:
    """Fold every eval-mode BatchNorm that directly follows a conv/linear into it.

    The folded model is the reference the SNN is compared with: folding moves
    rounding, and a floor behind every activation turns rounding into whole steps.
    """
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    if graph is None:
        graph = trace(model)
    pairs: list[tuple[str, str]] = []
    if graph is not None:
        uses: dict[str, int] = {}
        for node in graph.nodes:
            if node.op == "call_module":
                uses[node.target] = uses.get(node.target, 0) + 1
        for node in graph.nodes:
            if node.op != "call_module" or not isinstance(model.get_submodule(node.target), nn.modules.batchnorm._BatchNorm):
                continue
            prev = node.args[0] if node.args else None
            if (isinstance(prev, torch.fx.Node) and prev.op == "call_module" and len(prev.users) == 1
                    and uses[prev.target] == 1 and uses[node.target] == 1
                    and isinstance(model.get_submodule(prev.target), (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))):
                pairs.append((prev.target, node.target))
    else:
        for name, m in model.named_modules():
            if isinstance(m, nn.Sequential):
                kids = list(m.named_children())
                for (a, ma), (b, mb) in zip(kids, kids[1:]):
                    if isinstance(ma, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) and \
                            isinstance(mb, nn.modules.batchnorm._BatchNorm):
                        pre = f"{name}." if name else ""
                        pairs.append((pre + a, pre + b))
    for lin_path, bn_path in pairs:
        lin, bn = model.get_submodule(lin_path), model.get_submodule(bn_path)
        if not bn.track_running_stats or bn.running_mean is None:
            continue
        fused = (fuse_linear_bn_eval(lin, bn) if isinstance(lin, nn.Linear) else fuse_conv_bn_eval(lin, bn))
        _set_module(model, lin_path, fused)
        _set_module(model, bn_path, nn.Identity())
    return model


def _batches(loader: Iterable, device) -> Iterable[torch.Tensor]:
    for batch in loader:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        yield x.to(device)


def _check_unshuffled(loader) -> None:
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, torch.utils.data.RandomSampler):
        raise ValueError("calib_loader shuffles its data; thresholds must not depend on the order "
                         "or batch size: pass a loader with shuffle=False")


def _activation_outputs(model, names, loader, device, fn: Callable[[str, torch.Tensor], None]):
    def hook_for(n):
        def hook(mod, inp, out):
            fn(n, out.detach().reshape(-1))  # returns None: never replace the layer's output
        return hook
    hooks = [model.get_submodule(n).register_forward_hook(hook_for(n)) for n in names]
    try:
        with torch.inference_mode():
            for x in _batches(loader, device):
                model(x)
    finally:
        for h in hooks:
            h.remove()


def calibrate_thresholds(model: nn.Module, loader, percentile: float | None = None,
                         bins: int = 4096) -> dict[str, float]:
    """Per-activation-layer max (``percentile=None``) or exact percentile of its outputs.

    Exact and independent of batch size and order: the max is a running max; the
    percentile (numpy's linear interpolation) uses a histogram pass to find the
    bins holding the two order statistics, then a pass that keeps only those values.
    """
    if percentile is not None and not 0.0 < float(percentile) <= 100.0:
        raise ValueError(f"percentile must lie in (0, 100], got {percentile!r}")
    _check_unshuffled(loader)
    model.eval()
    device = next(model.parameters()).device
    names = [n for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    vmax = {n: 0.0 for n in names}
    count = {n: 0 for n in names}

    def pass_max(n, v):
        vmax[n] = max(vmax[n], float(v.max())) if v.numel() else vmax[n]
        count[n] += v.numel()
    _activation_outputs(model, names, loader, device, pass_max)
    if count and min(count.values()) == 0:
        raise ValueError("calib_loader yielded no data")
    if percentile is None or float(percentile) == 100.0:
        result = dict(vmax)
    else:
        q = float(percentile) / 100.0
        hist = {n: torch.zeros(bins, dtype=torch.int64) for n in names}

        def bin_of(n, v):
            scale = bins / vmax[n] if vmax[n] > 0 else 0.0
            return torch.clamp((v.double() * scale).long(), 0, bins - 1)

        _activation_outputs(model, names, loader, device,
                            lambda n, v: hist[n].add_(torch.bincount(bin_of(n, v).cpu(), minlength=bins)))
        want = {}
        for n in names:
            pos = (count[n] - 1) * q
            lo = int(math.floor(pos))
            hi = min(lo + 1, count[n] - 1)
            cum = torch.cumsum(hist[n], 0)
            b_lo = int(torch.searchsorted(cum, torch.tensor(lo), right=True))
            b_hi = int(torch.searchsorted(cum, torch.tensor(hi), right=True))
            below = int(cum[b_lo - 1]) if b_lo > 0 else 0
            want[n] = (pos, lo, hi, b_lo, b_hi, below, [])

        def keep(n, v):
            _, _, _, b_lo, b_hi, _, store = want[n]
            b = bin_of(n, v)
            store.append(v[(b >= b_lo) & (b <= b_hi)].cpu())
        _activation_outputs(model, names, loader, device, keep)
        result = {}
        for n, (pos, lo, hi, _, _, below, store) in want.items():
            vals = torch.sort(torch.cat(store).double()).values
            v_lo, v_hi = float(vals[lo - below]), float(vals[hi - below])
            result[n] = v_lo + (pos - lo) * (v_hi - v_lo)
    for n, v in result.items():
        if not v > 0:
            warnings.warn(f"activation layer '{n}' never fired on the calibration set; threshold set to 1.0")
            result[n] = 1.0
    return result


def _neuron_for(spec: Method, act: nn.Module, threshold: float | None, leak: float) -> IFNeuron:
    if spec.name in ("maxnorm", "robustnorm"):
        return IFNeuron(threshold, max_spikes=1, phi=0.0, leak=leak)
    if spec.name == "qcfs":
        return IFNeuron(act.clip_value().detach(), max_spikes=1, phi=0.5, leak=leak)
    if spec.name == "steprelu":
        return IFNeuron(act.threshold().detach(), max_spikes=act.L, phi=act.phi, leak=leak)
    return IFNeuron(act.threshold().detach() * act.L, max_spikes=1, phi=act.phi, leak=leak)


def convert(ann: nn.Module, method: str, calib_loader=None, leak: float = 1.0,
            percentile: float = 99.9) -> nn.Module:
    """Return a new spiking network for ``method`` (see ``METHODS``); ``ann`` is left untouched.

    maxnorm/robustnorm need ``calib_loader`` (unshuffled, no augmentation); robustnorm
    uses ``percentile`` of each layer's activations.
    """
    spec = _get_method(method)
    leak = check_leak(leak)
    if spec.needs_calibration and calib_loader is None:
        raise ValueError(f"method '{method}' computes thresholds on a calibration set: pass calib_loader")
    model = copy.deepcopy(ann).eval()
    graph = trace(model)
    check_convertible(model, method, graph)
    acts = [(n, m) for n, m in model.named_modules() if isinstance(m, ACTIVATION_TYPES)]
    if not acts:
        raise ConversionError("the network has no activation layer to convert")
    model = fold_bn(model, graph, inplace=True)
    thresholds = {}
    if spec.needs_calibration:
        thresholds = calibrate_thresholds(model, calib_loader,
                                          None if method == "maxnorm" else percentile)
    for name, act in acts:
        _set_module(model, name, _neuron_for(spec, act, thresholds.get(name), leak))
    model.annsnn_method = method
    for p in model.parameters():
        p.requires_grad_(False)
    return model
