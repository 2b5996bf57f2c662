"""The exactness everything rests on (docs/method.md#exact-conversion): a StepReLU ANN converted to
multi-spike IF neurons reproduces the BatchNorm-folded ANN at T = 1, for any leak,
on random conv / VGG-like / residual / MLP networks and on the five model-zoo
architectures: same logits (relative error <= 1e-5, in practice 0) and the same
prediction on every input, both by a direct step and through ``simulate``.

The reference is always ``fold_bn(ann)``; the unfolded ANN is only compared for
information (``conftest.UNFOLDED_DIFFS``), since folding BatchNorm moves rounding
and a floor turns rounding into whole steps.
"""
from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

import annsnn
from annsnn import StepReLU, convert, fold_bn, simulate
from annsnn.models import build

from conftest import (UNFOLDED_DIFFS, fit_thresholds, random_net, randomize_bn, record_rel_error,
                      steprelu_factory, tiny_loader)

REL_TOL = 1e-5
# ANNSNN_TEST_DEVICE=cuda runs these checks on a GPU (bench/perf/gpu_check.py); nets are built on
# the CPU and moved there, so they are the same nets.
DEVICE = torch.device(os.environ.get("ANNSNN_TEST_DEVICE", "cpu"))


def activation_outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    outs = []
    hooks = [m.register_forward_hook(lambda mod, i, o: outs.append(o.detach()))
             for m in model.modules() if isinstance(m, StepReLU)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return outs


def check_exact_t1(ann: nn.Module, x: torch.Tensor, leak: float, tid: str) -> None:
    ann, x = ann.eval().to(DEVICE), x.to(DEVICE)
    snn = convert(ann, "steprelu", leak=leak)
    ref = fold_bn(ann)
    # non-vacuous: every activation layer of the reference produces some nonzero level
    outs = activation_outputs(ref, x)
    assert outs and all(bool((o > 0).any()) for o in outs), "a layer never fires: test is vacuous"
    with torch.no_grad():
        a = ref(x)
        annsnn.reset_neurons(snn)
        s = snn(x)
        unfolded = ann(x)
    UNFOLDED_DIFFS.append((tid, int((unfolded != a).sum()), a.numel()))
    err = record_rel_error(tid, s, a)
    assert err <= REL_TOL, f"{tid}: relative error {err:.3e}"
    assert torch.equal(s.argmax(1), a.argmax(1)), f"{tid}: predictions differ at T = 1"
    # the same through simulate (one batch holding every input)
    y = torch.randint(0, a.shape[1], (x.shape[0],), generator=torch.Generator().manual_seed(0))
    res = simulate(snn, tiny_loader(x, y, batch_size=x.shape[0]), 1, ann=ann, progress=False)
    assert res.identical_at_t1 == x.shape[0]
    assert torch.equal(res.predictions[:, 0], a.argmax(1).cpu())
    assert res.conv_error[0] <= REL_TOL
    assert res.ann_acc == float((a.argmax(1).cpu() == y).double().mean()) == res.acc[0]


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["conv", "vgg", "resnet", "mlp"]), seed=st.integers(0, 2 ** 20),
       depth=st.integers(1, 4), L=st.integers(1, 16), phi=st.sampled_from([0.0, 0.5]),
       leak=st.sampled_from([1.0, 0.9, 0.5]), per_layer_L=st.booleans(),
       learn_theta=st.booleans(), scale=st.sampled_from([0.3, 1.0, 5.0]))
def test_exact_at_t1_random_networks(kind, seed, depth, L, phi, leak, per_layer_L, learn_theta,
                                     scale):
    torch.manual_seed(seed)                       # weight init
    gen = torch.Generator().manual_seed(seed)     # everything else
    ann, shape = random_net(kind, steprelu_factory(gen, L, phi, per_layer_L, learn_theta), gen,
                            depth, cin=int(torch.randint(1, 4, (), generator=gen)),
                            size=int(torch.randint(4, 11, (), generator=gen)))
    x = torch.randn(10, *shape, generator=gen) * scale
    randomize_bn(ann, gen, x, train_passes=2)
    assume(fit_thresholds(ann, x, gen) == 0)   # no dead layer (rare), else the check is vacuous
    check_exact_t1(ann, x, leak, f"{kind}(seed={seed}, depth={depth}, L={L}, phi={phi}, leak={leak})")


ZOO = [  # arch, in_channels, image_size, L, phi, leak
    ("cnn-small", 1, 28, 8, 0.0, 0.9),
    ("cnn-small", 1, 28, 3, 0.5, 1.0),
    ("vgg-cpu", 3, 32, 16, 0.5, 1.0),
    ("vgg-cpu", 3, 32, 2, 0.0, 0.8),
    ("vgg16", 3, 32, 4, 0.5, 1.0),
    ("vgg16", 3, 32, 16, 0.0, 0.5),
    ("resnet18", 3, 32, 16, 0.0, 0.5),
    ("resnet18", 3, 32, 2, 0.5, 0.9),
    ("resnet20", 3, 32, 3, 0.5, 0.9),
    ("resnet20", 3, 32, 1, 0.0, 1.0),
    ("resnet34", 3, 64, 2, 0.5, 1.0),
    ("resnet34", 3, 64, 12, 0.0, 0.9),
]


@pytest.mark.parametrize("arch, cin, size, L, phi, leak", ZOO)
def test_exact_at_t1_model_zoo(arch, cin, size, L, phi, leak):
    seed = sum(map(ord, arch)) + L
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    mean, std = [0.5] * cin, [0.25] * cin
    ann = build(arch, {"name": "steprelu", "theta": 1.0, "L": L, "phi": phi},
                in_channels=cin, image_size=size, mean=mean, std=std)
    x = torch.rand(4, cin, size, size, generator=gen)
    randomize_bn(ann, gen, x, train_passes=2)
    assert fit_thresholds(ann, x, gen) == 0
    check_exact_t1(ann, x, leak, f"{arch}(L={L}, phi={phi}, leak={leak})")


def test_folding_point_matters_but_snn_matches_folded():
    """Conv + BN with a large running mean (cancellation) and many levels: the unfolded ANN
    lands on the other side of some step boundaries than the folded one (recorded, not
    asserted); the SNN matches the folded ANN bit for bit."""
    torch.manual_seed(7)
    gen = torch.Generator().manual_seed(7)
    ann = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16),
                        StepReLU(0.0123, 16, 0.5),
                        nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16),
                        StepReLU(0.0456, 16, 0.0),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    with torch.no_grad():
        for bn in (ann[1], ann[4]):
            bn.running_mean.copy_(torch.randn(16, generator=gen) * 3)
            bn.running_var.copy_(torch.rand(16, generator=gen) * 0.1 + 0.01)
            bn.bias.copy_(torch.randn(16, generator=gen) * 3)
    ann.eval().to(DEVICE)
    x = torch.randn(16, 3, 16, 16, generator=gen).to(DEVICE)
    assert fit_thresholds(ann, x, gen) == 0
    ref = fold_bn(ann)
    snn = convert(ann, "steprelu")
    with torch.no_grad():
        a_mid = activation_outputs(ref, x)
        u_mid = activation_outputs(ann, x)
        annsnn.reset_neurons(snn)
        s, a = snn(x), ref(x)
    n_diff = sum(int((p != q).sum()) for p, q in zip(a_mid, u_mid))
    UNFOLDED_DIFFS.append(("folding-demo (activation elements)", n_diff,
                           sum(p.numel() for p in a_mid)))
    record_rel_error("folding-demo", s, a)
    assert torch.equal(s, a)


def boundary_neighbours(theta: float, L: int, phi: float, ulps: int = 4) -> torch.Tensor:
    """float32 inputs at and within ``ulps`` ulps of every step boundary (k - phi) * theta,
    k = 0..L+1: the inputs that any change in rounding moves across a step."""
    t = torch.tensor(theta, dtype=torch.float32)
    xb = (torch.arange(0, L + 2, dtype=torch.float32) - phi) * t
    xs = [xb]
    up, down = xb.clone(), xb.clone()
    for _ in range(ulps):
        up = torch.nextafter(up, torch.tensor(float("inf")))
        down = torch.nextafter(down, torch.tensor(float("-inf")))
        xs += [up, down]
    return torch.cat(xs)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(theta=st.floats(1e-3, 10.0), L=st.integers(1, 16), phi=st.sampled_from([0.0, 0.5]),
       leak=st.sampled_from([1.0, 0.9, 0.5]))
def test_exact_at_t1_on_step_boundaries(theta, L, phi, leak):
    """Inputs on and next to every step boundary, arbitrary theta: the converted layer's
    first step equals the activation bit for bit (sensitive to the order of operations:
    e.g. (x + phi*theta)/theta instead of x/theta + phi fails here)."""
    x = boundary_neighbours(theta, L, phi).reshape(1, -1).to(DEVICE)
    ann = nn.Sequential(nn.Identity(), StepReLU(theta, L, phi), nn.Flatten()).to(DEVICE)
    snn = convert(ann, "steprelu", leak=leak)
    with torch.no_grad():
        annsnn.reset_neurons(snn)
        s, a = snn(x), fold_bn(ann)(x)
    record_rel_error(f"boundaries(theta={theta}, L={L}, phi={phi})", s, a)
    assert torch.equal(s, a)
