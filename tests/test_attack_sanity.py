"""Gradient-masking sanity checks (annsnn.attack_checks,
docs/method.md#gradient-masking-checks) on tiny models trained here on a synthetic 4-class
image set: the checks hold for working attacks on ANNs and on SNNs attacked through time
(UnrolledSNN, T = 1 and 4), and each is shown to catch a model
or attack broken on purpose (zero gradients, a zero surrogate, input quantisation, an
attack that weakens with more iterations)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import annsnn.attack_checks as checks
import annsnn.neurons
from annsnn import QCFS, StepReLU, convert
from annsnn.attack_checks import gradient_masking_checks, tolerance, verdicts
from annsnn.attacks import UnrolledSNN

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")   # ART on numpy 2

EPS, STEPS, RESTARTS = 0.05, 5, 2    # restarts as the protocol: 1 restart leaves ~2 % at eps = 1


def dataset(n: int, seed: int, classes: int = 4):
    """Grey 8x8 images, noise in [0.3, 0.7], class k = a faint (+0.1) bright quadrant k:
    separable, but with a margin that PGD at eps ~ 0.05 mostly closes."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = 0.3 + 0.4 * torch.rand(n, 1, 8, 8, generator=g)
    for k in range(classes):
        r, c = divmod(k, 2)
        x[y == k, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4] += 0.1
    return x, y


def net(act, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), act(), nn.AvgPool2d(2), nn.Flatten(),
                         nn.Linear(8 * 16, 32), act(), nn.Linear(32, 4))


def train(model: nn.Module, x, y, epochs: int = 25) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    model.train()
    for _ in range(epochs):
        for i in range(0, len(x), 100):
            opt.zero_grad()
            F.cross_entropy(model(x[i:i + 100]), y[i:i + 100]).backward()
            opt.step()
    return model.eval()


ACTS = {"steprelu": lambda: StepReLU(0.1, 8, 0.0), "qcfs": lambda: QCFS(4, 2.0)}


@pytest.fixture(scope="module")
def setup():
    xtr, ytr = dataset(400, 0)
    x, y = dataset(200, 1)
    anns = {(kind, s): train(net(ACTS[kind], s), xtr, ytr) for kind in ACTS for s in (0, 1)}
    anns[("relu", 0)] = train(net(nn.ReLU, 0), xtr, ytr)
    for m in anns.values():
        with torch.no_grad():
            assert float((m(x).argmax(1) == y).double().mean()) > 0.9   # the models learned
    return anns, x, y


def assert_all_hold(r):
    assert r.acc_clean > 0.8
    assert 0.05 < r.acc_steps < r.acc_clean - 0.2        # non-vacuous: the attack bites, not fully
    assert r.eps1_ok and r.more_steps_ok and r.whitebox_ok and r.passed, r.as_dict()


@pytest.mark.parametrize("kind", ["steprelu", "qcfs"])
def test_checks_hold_for_the_ann(setup, kind):
    """Source: the same architecture trained from another seed (a transfer attack)."""
    anns, x, y = setup
    r = gradient_masking_checks(anns[(kind, 0)], x, y, EPS, STEPS, RESTARTS, source=anns[(kind, 1)])
    assert_all_hold(r)


@pytest.mark.parametrize("kind", ["steprelu", "qcfs"])
@pytest.mark.parametrize("T", [1, 4])
def test_checks_hold_for_the_snn_through_time(setup, kind, T):
    """White-box PGD through time on the SNN against transfer from its own ANN."""
    anns, x, y = setup
    ann = anns[(kind, 0)]
    r = gradient_masking_checks(UnrolledSNN(convert(ann, kind), T), x, y, EPS, STEPS, RESTARTS,
                                source=ann)
    assert_all_hold(r)


# ---------------------------------------------------------------- broken on purpose

class _NoGrad(torch.autograd.Function):
    """Identity forward, zero backward: a model whose gradient says nothing."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return torch.zeros_like(g)


class ZeroGrad(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(_NoGrad.apply(x))


class Quantised(nn.Module):
    """Input quantisation to 1/8 steps without a straight-through gradient (Athalye et
    al.'s obfuscated gradients): the gradient is 0 almost everywhere."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(torch.round(x * 8) / 8)


@pytest.mark.parametrize("wrap", [ZeroGrad, Quantised])
def test_masked_ann_is_caught(setup, wrap):
    anns, x, y = setup
    good = anns[("qcfs", 0)]
    r = gradient_masking_checks(wrap(good), x, y, EPS, STEPS, RESTARTS, source=good)
    assert r.acc_clean > 0.8
    assert not r.passed
    assert not (r.eps1_ok and r.whitebox_ok), r.as_dict()


def test_zero_surrogate_gradient_is_caught(setup, monkeypatch):
    """The SNN's surrogate replaced by one that passes no gradient: PGD through time is blind."""
    anns, x, y = setup
    ann = anns[("steprelu", 0)]
    snn = convert(ann, "steprelu")

    def dead(u, L):
        return torch.clamp(torch.floor(u), 0, L).detach() + 0 * u
    monkeypatch.setattr(annsnn.neurons, "clamp_floor_ste", dead)
    r = gradient_masking_checks(UnrolledSNN(snn, 4), x, y, EPS, STEPS, RESTARTS, source=ann)
    assert not r.passed
    assert not r.whitebox_ok and not r.eps1_ok, r.as_dict()


def test_attack_weaker_with_more_steps_is_caught(setup, monkeypatch):
    """An attack whose longer run does nothing (as a step size shrinking with the number of
    iterations would) fails more_steps_ok."""
    anns, x, y = setup
    real = checks.pgd

    def fading(model, x, y, eps, steps, **kw):
        return x if steps > STEPS else real(model, x, y, eps, steps=steps, **kw)
    monkeypatch.setattr(checks, "pgd", fading)
    r = checks.gradient_masking_checks(anns[("qcfs", 0)], x, y, EPS, STEPS, RESTARTS)
    assert r.eps1_ok and r.whitebox_ok is None
    assert not r.more_steps_ok and not r.passed


# ---------------------------------------------------------------- the rule itself

def test_verdict_rule_and_tolerance():
    assert tolerance(0.5, 0.4, 100) == pytest.approx(0.1)          # 2 SE of the larger accuracy
    assert tolerance(0.0, 0.0, 200) == pytest.approx(1 / 200)      # at least one image
    # on the boundaries (2 SE of 0.5 on 100 images = 0.1; 1 %): every verdict holds
    assert verdicts(100, acc_eps1=0.01, acc_steps=0.4, acc_more_steps=0.5)["more_steps_ok"]
    v = verdicts(100, acc_eps1=0.01, acc_steps=0.5, acc_more_steps=0.5, acc_transfer=0.4)
    assert v["eps1_ok"] and v["more_steps_ok"] and v["whitebox_ok"] and v["tol_whitebox"] == pytest.approx(0.1)
    # one image past each boundary: every verdict fails
    v = verdicts(100, acc_eps1=0.02, acc_steps=0.4, acc_more_steps=0.51, acc_transfer=0.29)
    assert not (v["eps1_ok"] or v["more_steps_ok"] or v["whitebox_ok"])
    assert verdicts(100, 0.0, 0.5, 0.5)["whitebox_ok"] is None


def test_argument_checks(setup):
    anns, x, y = setup
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="eps"):
            gradient_masking_checks(anns[("qcfs", 0)], x, y, bad, STEPS)
    with pytest.raises(ValueError, match="UnrolledSNN"):
        gradient_masking_checks(convert(anns[("qcfs", 0)], "qcfs"), x, y, EPS, STEPS)
