"""ANN -> SNN conversion as a module swap (docs/method.md#conversion).

``convert`` is one fixed template: copy, trace, check that nothing in the network
would make the conversion inexact, fold BatchNorm into the preceding conv/linear,
then ask the method's recipe (annsnn.recipes) for the thresholds and for the
``IFNeuron`` that replaces each activation module, and freeze. The graph itself is
kept, so residual additions work unchanged.
"""
from __future__ import annotations

import copy
import operator
import warnings

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from .activations import ACTIVATIONS
from .models import Normalize
from .neurons import IFNeuron, check_leak, check_leak_mode
from .recipes import Recipe, get_recipe
from .recipes.calibration import calibrate_thresholds

__all__ = ["ConversionError", "convert", "check_convertible", "fold_bn", "trace",
           "calibrate_thresholds"]


class ConversionError(ValueError):
    """The network cannot be converted exactly; the message names the layer and the fix."""


def activation_types() -> tuple[type, ...]:
    """Every registered ANN activation class (annsnn.activations.ACTIVATIONS)."""
    return tuple(ACTIVATIONS.values())


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


def _set_module(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, attr = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, attr, new)


class _LeafTracer(torch.fx.Tracer):
    """Treat our activations and neurons as leaves so their internals are not traced."""

    def is_leaf_module(self, m, qualname):
        return isinstance(m, activation_types() + (IFNeuron, Normalize)) or super().is_leaf_module(m, qualname)


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


def check_convertible(model: nn.Module, method: str | Recipe, graph: torch.fx.Graph | None = None) -> None:
    """Raise ConversionError for anything that ``method`` (a name or a Recipe) cannot convert exactly."""
    recipe = get_recipe(method)
    accepted, known = ACTIVATIONS[recipe.activation], activation_types()
    for name, m in model.named_modules():
        label = name or "<root>"
        if isinstance(m, MAX_POOLS):
            raise ConversionError(f"layer '{label}' is {type(m).__name__}: max pooling has no exact "
                                  "spiking counterpart; use nn.AvgPool2d (models meant for conversion "
                                  "use average pooling)")
        if isinstance(m, known):
            if not isinstance(m, accepted):
                raise ConversionError(
                    f"layer '{label}' is {type(m).__name__}, but method '{recipe.name}' converts "
                    f"{recipe.activation} networks; train the ANN with activation '{recipe.activation}' "
                    f"or pick the method for {type(m).__name__}")
            if not getattr(m, "clip", True):
                raise ConversionError(f"layer '{label}' is {type(m).__name__}(clip=False): inputs above "
                                      "L*theta pass unchanged, which no spiking neuron with at most L "
                                      "spikes per step reproduces; train with clip=True")
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
                                  f"flatten/dropout and the activations {', '.join(ACTIVATIONS)}")
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
        if n > 1 and isinstance(model.get_submodule(target), known):
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


def convert(ann: nn.Module, method: str | Recipe, calib_loader=None, leak: float = 1.0,
            leak_mode: str = "exp") -> nn.Module:
    """Return a new spiking network for ``method`` (a name in ``annsnn.recipes.RECIPES`` or a
    Recipe); ``ann`` is left untouched. Recipes that calibrate need ``calib_loader``
    (unshuffled, no augmentation). ``leak`` in (0, 1] and ``leak_mode`` ("exp": r <- leak*r;
    "linear": r moves toward 0 by (1 - leak)*theta, never past it) set every neuron's leak;
    leak 1 is the same SNN in both modes."""
    recipe = get_recipe(method)
    leak = check_leak(leak)
    leak_mode = check_leak_mode(leak_mode)
    if recipe.needs_calibration and calib_loader is None:
        raise ValueError(f"method '{recipe.name}' computes thresholds on a calibration set: "
                         "pass calib_loader")
    model = copy.deepcopy(ann).eval()
    graph = trace(model)
    check_convertible(model, recipe, graph)
    acts = recipe.layers(model)
    if not acts:
        raise ConversionError("the network has no activation layer to convert")
    model = fold_bn(model, graph, inplace=True)
    thresholds = recipe.thresholds(model, calib_loader) if recipe.needs_calibration else None
    for name, act in acts:
        _set_module(model, name, recipe.neuron(act, thresholds[name] if thresholds else None,
                                                 leak, leak_mode))
    for p in model.parameters():
        p.requires_grad_(False)
    return model
