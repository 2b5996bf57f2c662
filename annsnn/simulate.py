"""Run a converted SNN for T_max steps once and read off every metric at every t <= T_max.

Input encoding is direct (the analog image is the input current at each step);
the classifier does not spike, and the prediction at step t is the argmax of the
mean classifier output over steps 1..t (docs/method.md#simulation).

Inside the time loop (``_run_batch``) every count stays on the device; the host
reads them once per batch. On a GPU each host read stalls the device, and the
loop runs layers x steps times per batch.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import nn

from .convert import fold_bn, trace
from .metrics import ann_energy_pj, energy_pj, profile_ops
from .neurons import IFNeuron, reset_neurons, spiking_layers
from .noise import draw_paired
from .progress import progress_bar


@dataclass
class SimResult:
    """Everything one simulation measured; lists are indexed by t - 1."""

    T_max: int
    n_images: int
    acc: list[float]                       # SNN accuracy at t = 1..T_max
    predictions: torch.Tensor              # [n_images, T_max] predicted class at each t
    labels: torch.Tensor                   # [n_images]
    firing_rate: dict[str, float]          # spikes per neuron per step (> 1 for multi-spike), per layer
    max_spikes_per_step: float             # largest n any neuron emitted in one step
    max_n_per_layer: dict[str, int]        # per layer: largest n used (binary sub-steps per step)
    sops: list[float]                      # synaptic operations per image, cumulative to t
    first_layer_macs: float                # analog first layer, paid at every step
    ann_macs: float                        # per image
    conv_error: list[float] | None = None  # mean|SNN - ANN| / mean|ANN| at each t
    ann_acc: float | None = None           # ANN accuracy after the same BatchNorm folding
    ann_predictions: torch.Tensor | None = None
    identical_at_t1: int | None = None     # images whose t=1 prediction equals the folded ANN's
    spike_hist: dict[str, list[int]] | None = None  # simulate(spike_hist=True): per layer,
    #                                        neuron-steps with n = 0, 1, ..., max_spikes
    layer_error: dict[str, list[float]] | None = None  # simulate(layer_error_ts=ts): per spiking
    #                                        layer, sum |mean output to t - ANN activation| / sum |ANN activation|, at each t of ts
    layer_error_ts: list[int] | None = None

    def energy_ratio(self, t: int) -> float:
        """SNN energy over t steps / ANN energy, per image."""
        return energy_pj(self.first_layer_macs, self.sops[t - 1], t) / ann_energy_pj(self.ann_macs)

    def sops_ratio(self, t: int) -> float:
        """SNN operations (first-layer MACs x t + SOPs) / ANN MACs."""
        return (self.first_layer_macs * t + self.sops[t - 1]) / self.ann_macs


class NonFiniteError(ValueError):
    """An image or an activation of the simulation is NaN or infinite. Raised instead of
    returning metrics: one NaN image makes every SOP and energy figure of a run NaN."""


def _nonfinite_error(flags: list[torch.Tensor], batch_sizes: list[int], sops_ok: torch.Tensor) -> NonFiniteError:
    """The error naming the first bad batch and image (indices in the loader's order)."""
    per_image = torch.cat(flags).cpu()          # [n_images, 3]: input, SNN output, ANN output finite
    what = ("input image", "SNN output", "ANN output")
    bad = (~per_image).any(1).nonzero().flatten().tolist()
    if bad:
        i = bad[0]
        first = next(j for j, w in enumerate(what) if not per_image[i, j])
        b = next(k for k, end in enumerate(torch.tensor(batch_sizes).cumsum(0).tolist()) if i < end)
        return NonFiniteError(f"non-finite {what[first]} for image {i} (batch {b}, loader order); "
                              f"{len(bad)} of {len(per_image)} images affected; no metrics were computed")
    b = int((~sops_ok.cpu()).nonzero()[0])
    return NonFiniteError(f"non-finite spike counts in batch {b} (loader order); no metrics were computed")


def _check_T(T_max) -> int:
    if not isinstance(T_max, int) or isinstance(T_max, bool) or T_max < 1:
        raise ValueError(f"T_max must be an integer >= 1, got {T_max!r}")
    return T_max


def static_prefix(snn: nn.Module):
    """(prefix, rest) of a Sequential SNN, where prefix holds everything before the first
    spiking layer. With direct encoding and a static input the prefix's output (the first
    layer's input current) is the same at every step, so it is computed once per batch."""
    if not isinstance(snn, nn.Sequential):
        return None
    for i, m in enumerate(snn):
        if any(isinstance(c, IFNeuron) for c in m.modules()):
            mods = list(snn)
            return (nn.Sequential(*mods[:i]), nn.Sequential(*mods[i:])) if i > 0 else None
    return None


_PROFILES: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _op_profile(snn: nn.Module, x: torch.Tensor):
    """profile_ops of ``snn`` for images shaped like ``x``, traced once per network.

    Tracing and profiling cost about a third of an ANN forward pass of a ResNet-20 batch;
    repeated simulations of one SNN (leaks, noise levels, attacks) reuse the result. The
    key holds every submodule's identity, so a network edited in place is profiled anew.
    """
    key = (tuple(x.shape[1:]), x.dtype, x.is_contiguous(memory_format=torch.channels_last),
           tuple(map(id, snn.modules())))
    hit = _PROFILES.get(snn)
    if hit is not None and hit[0] == key:
        return hit[1]
    prof = profile_ops(snn, x[:1], trace(snn))
    _PROFILES[snn] = (key, prof)
    return prof


def _split(batch):
    if isinstance(batch, (tuple, list)):
        return batch[0], batch[1]
    raise ValueError("the loader must yield (images, labels) batches")


def _spikes_since(m: IFNeuron, before):
    """Spikes ``m`` recorded since its running total was ``before`` (a device scalar, or 0.0)."""
    if m.spike_total is None:
        return 0.0
    return m.spike_total if before is None else m.spike_total - before


class _LayerError:
    """Conversion error by depth: each spiking layer's output averaged over steps 1..t against
    the folded ANN's activation at the same place of the graph (convert keeps module names),
    summed over a batch as |difference| and |activation|, at the steps ``ts``."""

    def __init__(self, snn, ref, neurons, ts, device):
        self.ts, self.names = list(ts), [n for n, _ in neurons]
        self.snn_mods = dict(snn.named_modules())
        self.ref_mods = dict(ref.named_modules())
        self.num = {n: torch.zeros(len(self.ts), dtype=torch.float64, device=device) for n in self.names}
        self.den = {n: torch.zeros((), dtype=torch.float64, device=device) for n in self.names}
        self.act, self.sum, self.handles = {}, {}, []

    def reference(self, ref, x):
        """The ANN forward with its activations kept; returns its output."""
        hs = [self.ref_mods[n].register_forward_hook(lambda m, i, o, n=n: self.act.__setitem__(n, o))
              for n in self.names]
        try:
            out = ref(x)
        finally:
            for h in hs:
                h.remove()
        for n in self.names:
            self.den[n] += self.act[n].abs().sum(dtype=torch.float64)
        self.sum = {}
        return out

    def start(self):
        def keep(m, i, o, n):
            self.sum[n] = o.detach().clone() if n not in self.sum else self.sum[n].add_(o)
        self.handles = [self.snn_mods[n].register_forward_hook(lambda m, i, o, n=n: keep(m, i, o, n))
                        for n in self.names]

    def step(self, t):
        if t in self.ts:
            k = self.ts.index(t)
            for n in self.names:
                self.num[n][k] += (self.sum[n] / t - self.act[n]).abs().sum(dtype=torch.float64)

    def stop(self):
        for h in self.handles:
            h.remove()
        self.handles = []

    def result(self) -> dict[str, list[float]]:
        return {n: (self.num[n].cpu() / max(float(self.den[n]), 1e-30)).tolist() for n in self.names}


def _run_batch(snn, prefix, x, y, a, T_max, neurons, fanout, perturb, seed, first_index, bar, lerr=None):
    """The time loop over one batch, without a host read: returns device tensors
    (predictions [B, T_max], correct [T_max], sum |mean output - a| [T_max] or None,
    SOPs [T_max] in float64, whether each image's summed output stayed finite [B]).

    Per step: SOPs = sum over layers, in layer order, of (spikes this step) x fan-out; a
    layer's spikes this step are the difference of its float64 running totals (whole
    numbers, so the difference is exact below 2**53)."""
    dynamic = bool(getattr(perturb, "dynamic", False))
    current = prefix[0](x) if (prefix and not dynamic) else None
    zero = torch.zeros((), dtype=torch.float64, device=x.device)
    cum = None
    preds, hits, errs, sops = [], [], [], []
    if lerr is not None:
        lerr.start()
    for t in range(1, T_max + 1):
        before = [m.spike_total for _, m in neurons]
        if current is not None:
            out = prefix[1](current)
        else:
            out = snn(draw_paired(perturb, x, seed, first_index, t) if dynamic else x)
        cum = out.clone() if cum is None else cum.add_(out)
        mean = cum / t
        p = mean.argmax(1)
        preds.append(p)
        hits.append((p == y).sum())
        if a is not None:
            errs.append((mean - a).abs().sum())
        sops.append(sum((_spikes_since(m, b) * f for (_, m), b, f in zip(neurons, before, fanout)), zero))
        if lerr is not None:
            lerr.step(t)
        bar.update()
    if lerr is not None:
        lerr.stop()
    # NaN and inf never leave a running sum, so one check after the loop covers every step
    return (torch.stack(preds, 1), torch.stack(hits), torch.stack(errs) if errs else None,
            torch.stack(sops), torch.isfinite(cum).all(1))


def simulate(snn: nn.Module, loader, T_max: int, ann: nn.Module | None = None,
             perturb=None, seed: int = 0, progress: bool = True, desc: str = "simulate",
             channels_last: bool | None = None, spike_hist: bool = False,
             layer_error_ts: tuple[int, ...] = ()) -> SimResult:
    """Simulate ``snn`` for ``T_max`` steps on every batch of ``loader``.

    ``ann``: the source ANN; it is BatchNorm-folded exactly as ``convert`` does and
    used for the conversion error and the t = 1 exactness count.
    ``perturb``: optional pixel-space perturbation ``perturb(x, generator) -> x`` with a
    boolean ``dynamic`` attribute: static ones are drawn once per image and repeated
    at every step, dynamic ones are redrawn at every step. Image i of the loader (in its
    order) at step t draws from a generator seeded by (``seed``, i, t) (``draw_paired``), so
    runs with other T, leaks, methods or batch sizes see the same noise.
    ``channels_last`` (default: on for CPU): run image batches, ``snn`` (converted in place)
    and the reference ANN in channels-last layout, measured 1.7x faster on 2 CPU cores
    (average pooling above all). The SNN and its reference always share one layout, so the
    t = 1 comparison stays op for op.
    ``spike_hist``: also count, per layer, the neuron-steps with n = 0, 1, ..., max_spikes
    (on a CPU this costs about as much as the multi-spike neurons' own steps).
    ``layer_error_ts`` (needs ``ann``): the conversion error of every spiking layer at these
    steps (``SimResult.layer_error``), for the error's growth with depth.
    """
    T_max = _check_T(T_max)
    device = next(iter(list(snn.parameters()) + list(snn.buffers())), torch.empty(0)).device
    snn.eval()
    neurons = spiking_layers(snn)
    for _, m in neurons:
        m.reset_stats()
        m.count_levels = spike_hist
    ref = fold_bn(ann).to(device).eval() if ann is not None else None
    layout = torch.channels_last if (device.type == "cpu" if channels_last is None else channels_last) \
        else torch.contiguous_format
    snn.to(memory_format=layout)
    if ref is not None:
        ref.to(memory_format=layout)
    dynamic = bool(getattr(perturb, "dynamic", False))
    prefix = static_prefix(snn)
    ts = sorted({int(t) for t in layer_error_ts if 1 <= int(t) <= T_max}) if ref is not None else []
    lerr = _LayerError(snn, ref, neurons, ts, device) if ts else None

    # accumulated on the device, batch after batch, in the order the host once summed them
    correct = torch.zeros(T_max, dtype=torch.float64, device=device)
    err_num = torch.zeros(T_max, dtype=torch.float64, device=device)
    err_den = torch.zeros((), dtype=torch.float64, device=device)
    sops = torch.zeros(T_max, dtype=torch.float64, device=device)
    preds, labels, ann_preds = [], [], []
    finite, sops_finite, batch_sizes = [], [], []  # per batch, on the device; read once at the end
    prof, fanout = None, None
    n_images = 0
    try:
        total = len(loader) * T_max
    except TypeError:
        total = None
    bar = progress_bar(total=total, desc=desc, disable=not progress, leave=False, unit="step")
    with torch.inference_mode():
        for batch in loader:
            x, y = _split(batch)
            x, y = x.to(device), y.to(device)
            if x.dim() == 4:
                x = x.contiguous(memory_format=layout)
            if prof is None:
                prof = _op_profile(snn, x)
                fanout = [prof.fanout[name] for name, _ in neurons]
            if perturb is not None and not dynamic:
                x = draw_paired(perturb, x, seed, n_images, 0)
            reset_neurons(snn)
            a = (lerr.reference(ref, x) if lerr is not None else ref(x)) if ref is not None else None
            p, hits, errs, step_sops, out_ok = _run_batch(snn, prefix, x, y, a, T_max, neurons, fanout,
                                                          perturb, seed, n_images, bar, lerr)
            finite.append(torch.stack([torch.isfinite(x).flatten(1).all(1), out_ok,
                                       torch.isfinite(a).all(1) if a is not None else out_ok], 1))
            sops_finite.append(torch.isfinite(step_sops).all())
            batch_sizes.append(x.shape[0])
            correct += hits
            sops += step_sops
            if a is not None:
                err_num += errs.to(torch.float64)
                err_den += a.abs().sum()
                ann_preds.append(a.argmax(1))
            preds.append(p)
            labels.append(y)
            n_images += x.shape[0]
            if progress:  # the one host read per batch, for the bar only
                bar.set_postfix(images=n_images, acc_T=f"{correct[-1].item() / n_images:.4f}")
    bar.close()
    if n_images == 0:
        raise ValueError("the loader yielded no images")
    sops_ok = torch.stack(sops_finite)
    if not bool(torch.cat(finite).all() & sops_ok.all()):   # the one host read for the check
        raise _nonfinite_error(finite, batch_sizes, sops_ok)
    predictions = torch.cat(preds).cpu()
    labels_t = torch.cat(labels).cpu()
    correct, sops = correct.cpu(), sops.cpu()
    res = SimResult(
        T_max=T_max, n_images=n_images,
        acc=(correct / n_images).tolist(),
        predictions=predictions, labels=labels_t,
        firing_rate={name: (m.spikes / m.neuron_steps if m.neuron_steps else 0.0) for name, m in neurons},
        max_spikes_per_step=max((m.max_n for _, m in neurons), default=0.0),
        max_n_per_layer={name: int(m.max_n) for name, m in neurons},
        spike_hist={name: m.spike_counts() for name, m in neurons} if spike_hist else None,
        sops=(torch.cumsum(sops, 0) / n_images).tolist(),
        first_layer_macs=prof.first_layer_macs, ann_macs=prof.total_macs,
    )
    if ref is not None:
        res.ann_predictions = torch.cat(ann_preds).cpu()
        res.ann_acc = float((res.ann_predictions == labels_t).double().mean())
        res.conv_error = (err_num.cpu() / max(float(err_den), 1e-30)).tolist()
        res.identical_at_t1 = int((predictions[:, 0] == res.ann_predictions).sum())
    if lerr is not None:
        res.layer_error, res.layer_error_ts = lerr.result(), ts
    return res
