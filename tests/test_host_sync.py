"""No host reads inside simulate's time loop: on a GPU every read of a device
value stalls the device, and the loop runs layers x steps times per batch.

On the CPU the reads are counted by patching the tensor methods that read a value back
(``item``, ``tolist``, ``cpu``, ``numpy``, ``float()``, ``int()``, ``bool()``,
``__index__``) while ``annsnn.simulate._run_batch``, the time loop, runs. On a CUDA
machine ``torch.cuda.set_sync_debug_mode("error")`` does the same from the driver's side.
"""
from __future__ import annotations

import contextlib
import functools
import importlib

import pytest
import torch
from torch import nn

from annsnn import QCFS, StepReLU, convert, simulate
from annsnn.noise import make_perturbation

from conftest import run_if, tiny_loader

sim_mod = importlib.import_module("annsnn.simulate")   # the module (the package exports a function of that name)
READS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__")


@contextlib.contextmanager
def counting_host_reads():
    """Count every call of a host-reading tensor method while the context is open."""
    counts: dict[str, int] = {}
    saved = {name: getattr(torch.Tensor, name) for name in READS}

    def counting(name, fn):
        @functools.wraps(fn)
        def wrapper(self, *args, **kwargs):
            counts[name] = counts.get(name, 0) + 1
            return fn(self, *args, **kwargs)
        return wrapper

    try:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, counting(name, fn))
        yield counts
    finally:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, fn)


def loop_instrumented(monkeypatch, context):
    """Run every call of the time loop inside ``context()``; returns what each yielded."""
    seen = []
    real = sim_mod._run_batch

    def wrapped(*args, **kwargs):
        with context() as got:
            out = real(*args, **kwargs)
        seen.append(dict(got) if isinstance(got, dict) else got)
        return out

    monkeypatch.setattr(sim_mod, "_run_batch", wrapped)
    return seen


def net(act) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6), act(), nn.AvgPool2d(2),
                         nn.Conv2d(6, 6, 3, padding=1), act(), nn.Flatten(),
                         nn.Linear(6 * 4 * 4, 12), act(), nn.Linear(12, 5)).eval()


CASES = {  # method -> (activation, simulate options)
    "steprelu": (lambda: StepReLU(0.05, 8, 0.5), dict(spike_hist=True)),
    "steprelu-single": (lambda: StepReLU(0.05, 8), dict(perturb=make_perturbation("gaussian", 0.1, True))),
    "qcfs": (lambda: QCFS(4, 0.5), dict(perturb=make_perturbation("salt_pepper", 0.9, False))),
}


def test_the_counter_sees_host_reads():
    t = torch.ones(3)
    with counting_host_reads() as counts:
        float(t.sum()), t.max().item(), t.tolist(), bool(t.all()), t.cpu()
    assert counts == {"__float__": 1, "item": 1, "tolist": 1, "__bool__": 1, "cpu": 1}
    assert torch.Tensor.item is not None and float(t.sum()) == 3.0     # restored


@pytest.mark.parametrize("method", list(CASES))
def test_no_host_read_inside_the_time_loop(monkeypatch, method):
    act, opts = CASES[method]
    ann = net(act)
    snn = convert(ann, method, leak=0.9)
    x = torch.rand(12, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 5, (12,), generator=torch.Generator().manual_seed(2))
    reads = loop_instrumented(monkeypatch, counting_host_reads)
    res = simulate(snn, tiny_loader(x, y, batch_size=8), 6, ann=ann, progress=False, **opts)
    assert len(reads) == 2                                  # both batches ran through the loop
    assert reads == [{}, {}], f"host reads inside the time loop: {reads}"
    assert sum(res.firing_rate.values()) > 0                # the loop did record spikes


@run_if(gpu=True)
@pytest.mark.parametrize("method", list(CASES))
def test_no_device_sync_inside_the_time_loop_on_cuda(monkeypatch, method):
    """CUDA's own check. Dynamic noise is drawn on the CPU (device-independent draws) and
    copied to the GPU at every step, a synchronising copy: left out here."""
    act, opts = CASES[method]
    opts = {k: v for k, v in opts.items() if not (k == "perturb" and v.dynamic)}
    ann = net(act)
    snn = convert(ann, method, leak=0.9).cuda()
    x = torch.rand(12, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 5, (12,), generator=torch.Generator().manual_seed(2))

    @contextlib.contextmanager
    def sync_is_an_error():
        torch.cuda.set_sync_debug_mode("error")
        try:
            yield None
        finally:
            torch.cuda.set_sync_debug_mode("default")

    ran = loop_instrumented(monkeypatch, sync_is_an_error)
    res = simulate(snn, tiny_loader(x, y, batch_size=8), 6, ann=ann, progress=False, **opts)
    assert len(ran) == 2 and sum(res.firing_rate.values()) > 0
