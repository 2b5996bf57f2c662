"""Exact per-layer statistics of ReLU activations on a calibration set: the threshold
rule of the rate-norm recipes (max-norm, robust-norm and OPI).

Exact means independent of batch size and order: the max is a running max; the
percentile (numpy's default linear interpolation) takes a histogram pass to find
the bins that hold the two order statistics, then a pass that keeps only those values.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Iterable

import torch
from torch import nn


def _batches(loader: Iterable, device) -> Iterable[torch.Tensor]:
    for batch in loader:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        yield x.to(device)


def _check_unshuffled(loader) -> None:
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, torch.utils.data.RandomSampler):
        raise ValueError("calib_loader shuffles its data; thresholds must not depend on the order "
                         "or batch size: pass a loader with shuffle=False")


def for_each_output(model: nn.Module, names: list[str], loader,
                    fn: Callable[[str, torch.Tensor], None]) -> int:
    """Run ``model`` (eval mode, no autograd) over every batch of ``loader`` (which must
    not shuffle) and call ``fn(name, output)`` with each named layer's output, as it is
    (e.g. [N, C, H, W]); returns the number of non-empty batches. The building block of a
    recipe's threshold rule: ``fn`` accumulates whatever statistic the rule needs."""
    _check_unshuffled(loader)
    model.eval()
    return _outputs(model, names, loader, next(model.parameters()).device, fn)


def _outputs(model, names, loader, device, fn: Callable[[str, torch.Tensor], None]) -> int:
    def hook_for(n):
        def hook(mod, inp, out):
            fn(n, out.detach())  # returns None: never replace the layer's output
        return hook
    hooks = [model.get_submodule(n).register_forward_hook(hook_for(n)) for n in names]
    n_batches = 0
    try:
        with torch.inference_mode():
            for x in _batches(loader, device):
                model(x)
                n_batches += int(x.numel() > 0)
    finally:
        for h in hooks:
            h.remove()
    return n_batches


def _activation_outputs(model, names, loader, device, nonzero: bool,
                        fn: Callable[[str, torch.Tensor], None]) -> int:
    """Call ``fn(name, values)`` on each named layer's flattened outputs (only the
    non-zero ones if ``nonzero``) for every batch; returns the number of batches."""
    def flat(n, out):
        v = out.reshape(-1)
        fn(n, v[v != 0] if nonzero else v)
    return _outputs(model, names, loader, device, flat)


def calibrate_thresholds(model: nn.Module, loader, percentile: float | None = None,
                         bins: int = 4096, nonzero: bool = False) -> dict[str, float]:
    """Per-ReLU-layer max (``percentile`` None or 100) or exact percentile of its outputs.

    ``nonzero=True`` takes the statistic over the non-zero activations only (Rueckauer
    et al.'s snntoolbox); ``False`` over all values, zeros included (SpikingJelly's).
    A layer with nothing to measure gets threshold 1.0 and a warning.
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
    if _activation_outputs(model, names, loader, device, nonzero, pass_max) == 0:
        raise ValueError("calib_loader yielded no data")
    if percentile is None or float(percentile) == 100.0:
        result = dict(vmax)
    else:
        result = _exact_percentiles(model, names, loader, device, nonzero, float(percentile) / 100.0,
                                    bins, vmax, count)
    for n, v in result.items():
        if not v > 0:
            warnings.warn(f"activation layer '{n}' never fired on the calibration set; threshold set to 1.0")
            result[n] = 1.0
    return result


def _exact_percentiles(model, names, loader, device, nonzero, q, bins, vmax, count):
    hist = {n: torch.zeros(bins, dtype=torch.int64) for n in names}

    def bin_of(n, v):
        scale = bins / vmax[n] if vmax[n] > 0 else 0.0
        return torch.clamp((v.double() * scale).long(), 0, bins - 1)

    _activation_outputs(model, names, loader, device, nonzero,
                        lambda n, v: hist[n].add_(torch.bincount(bin_of(n, v).cpu(), minlength=bins)))
    want = {}
    for n in names:
        if count[n] == 0:  # nothing measured (nonzero and the layer never fired)
            continue
        pos = (count[n] - 1) * q
        lo = int(math.floor(pos))
        hi = min(lo + 1, count[n] - 1)
        cum = torch.cumsum(hist[n], 0)
        b_lo = int(torch.searchsorted(cum, torch.tensor(lo), right=True))
        b_hi = int(torch.searchsorted(cum, torch.tensor(hi), right=True))
        below = int(cum[b_lo - 1]) if b_lo > 0 else 0
        want[n] = (pos, lo, hi, b_lo, b_hi, below, [])

    def keep(n, v):
        if n not in want:
            return
        _, _, _, b_lo, b_hi, _, store = want[n]
        b = bin_of(n, v)
        store.append(v[(b >= b_lo) & (b <= b_hi)].cpu())
    _activation_outputs(model, names, loader, device, nonzero, keep)
    result = {n: 0.0 for n in names}
    for n, (pos, lo, hi, _, _, below, store) in want.items():
        vals = torch.sort(torch.cat(store).double()).values
        v_lo, v_hi = float(vals[lo - below]), float(vals[hi - below])
        result[n] = v_lo + (pos - lo) * (v_hi - v_lo)
    return result
