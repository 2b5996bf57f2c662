"""FGSM / PGD through ART (annsnn.attacks) and the unrolled surrogate-gradient SNN."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from annsnn import convert, reset_neurons, spiking_layers
from annsnn.attacks import UnrolledSNN, craft, fgsm, pgd
from annsnn.models import Normalize, build
from annsnn.neurons import IFNeuron

TOL = 1e-6


def tiny_model(seed=0, bn=False):
    torch.manual_seed(seed)
    layers = [nn.Conv2d(1, 4, 3, padding=1)]
    if bn:
        layers.append(nn.BatchNorm2d(4))
    layers += [nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 5)]
    return nn.Sequential(*layers).eval()


def data(n=32, seed=1, classes=5, shape=(1, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g)


def ce(model, x, y):
    with torch.no_grad():
        return float(F.cross_entropy(model(x), y))


def reference_fgsm(model, x, y, eps):
    xg = x.clone().requires_grad_(True)
    F.cross_entropy(model(xg), y).backward()
    return (x + eps * xg.grad.sign()).clamp(0, 1)


# ---------------------------------------------------------------- FGSM / PGD on a plain model

def test_fgsm_equals_sign_gradient_step():
    model = tiny_model()
    x, y = data()
    eps = 0.05
    adv = fgsm(model, x, y, eps)
    ref = reference_fgsm(model, x, y, eps)
    assert adv.dtype == x.dtype and adv.device == x.device and adv.shape == x.shape
    assert float((adv - ref).abs().max()) <= TOL
    assert float(((adv - x).abs() > eps / 2).float().mean()) > 0.5   # most pixels moved
    assert ce(model, adv, y) > ce(model, x, y)


@pytest.mark.parametrize("kind", ["fgsm", "pgd"])
def test_eps_is_a_pixel_distance_through_a_normalize_layer(kind):
    """Models carry their normalisation as their first layer (docs/method.md#data), so eps is
    measured on [0, 1] pixels. With std 0.25, an attack in normalised units would move pixels
    by eps * std = eps / 4. Images kept inside [0.2, 0.8], so clipping cannot shorten a step."""
    torch.manual_seed(0)
    model = nn.Sequential(Normalize([0.4], [0.25]), nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 8 * 8, 5)).eval()
    x, y = data()
    x = 0.2 + 0.6 * x
    eps = 0.05
    adv = craft(kind, model, x, y, eps, **({"steps": 5, "seed": 0} if kind == "pgd" else {}))
    moved = (adv - x).abs()
    assert abs(float(moved.max()) - eps) <= TOL
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    assert float((moved > eps / 2).float().mean()) > 0.5               # most pixels moved by ~eps
    if kind == "fgsm":  # the sign step in pixel space, through the Normalize layer
        assert float((adv - reference_fgsm(model, x, y, eps)).abs().max()) <= TOL
    assert ce(model, adv, y) > ce(model, x, y)


def test_eps_zero_changes_nothing():
    model = tiny_model()
    x, y = data()
    assert torch.equal(fgsm(model, x, y, 0.0), x)
    assert torch.equal(pgd(model, x, y, 0.0), x)
    with pytest.raises(ValueError, match="eps"):
        fgsm(model, x, y, -0.1)


@pytest.mark.parametrize("eps", [0.03, 0.1])
def test_pgd_stays_in_ball_and_box_and_raises_loss(eps):
    model = tiny_model()
    x, y = data()
    x[:4] = 0.0                       # images at the box edge: clipping must hold there too
    x[4:8] = 1.0
    adv = pgd(model, x, y, eps, steps=5, seed=0)
    assert float((adv - x).abs().max()) <= eps + TOL
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    assert ce(model, adv, y) > ce(model, x, y)
    assert ce(model, adv, y) >= ce(model, fgsm(model, x, y, eps), y) - 1e-3


def test_pgd_seeded_and_leaves_numpy_rng_alone():
    model = tiny_model()
    x, y = data(8)
    np.random.seed(123)
    state = np.random.get_state()
    a = pgd(model, x, y, 0.1, steps=2, seed=0)
    after = np.random.get_state()
    assert all(np.array_equal(s, t) for s, t in zip(state[1:3], after[1:3]))
    assert torch.equal(a, pgd(model, x, y, 0.1, steps=2, seed=0))
    assert not torch.equal(a, pgd(model, x, y, 0.1, steps=2, seed=1))


def test_pgd_one_step_without_random_start_is_fgsm():
    model = tiny_model()
    x, y = data()
    a = pgd(model, x, y, 0.05, steps=1, step_size=0.05, random_init=False)
    assert float((a - fgsm(model, x, y, 0.05)).abs().max()) <= TOL


def test_attack_restores_model_state_and_works_in_inference_mode():
    model = tiny_model(bn=True).train()
    bn = model[1]
    running = bn.running_mean.clone()
    x, y = data(8)
    with torch.inference_mode():
        xi, yi = x.clone(), y.clone()             # inference tensors, as simulate makes them
        adv = craft("pgd", model, xi, yi, 0.05, steps=2)
        adv_f = craft("fgsm", model, xi, yi, 0.05)
    assert float((adv - x).abs().max()) <= 0.05 + TOL
    assert model.training and bn.training                       # mode restored
    assert torch.equal(bn.running_mean, running)                # attacked in eval mode
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    model.eval()
    assert float((adv_f - reference_fgsm(model, x, y, 0.05)).abs().max()) <= TOL


def test_craft_dispatch_and_errors():
    model = tiny_model()
    x, y = data(8)
    assert torch.equal(craft("fgsm", model, x, y, 0.05), fgsm(model, x, y, 0.05))
    assert torch.equal(craft("PGD", model, x, y, 0.05, steps=2, seed=3),
                       pgd(model, x, y, 0.05, steps=2, seed=3))
    with pytest.raises(ValueError, match="fgsm, pgd"):
        craft("cw", model, x, y, 0.05)
    with pytest.raises(ValueError, match="steps"):
        pgd(model, x, y, 0.05, steps=0)


# ---------------------------------------------------------------- unrolled SNN

@pytest.fixture(scope="module")
def snn():
    torch.manual_seed(0)
    ann = build("cnn-small", dict(name="steprelu", theta=0.1, L=4), 10, 1, 28).eval()
    return convert(ann, "steprelu")


def plain_mean(snn, x, T):
    with torch.no_grad():
        reset_neurons(snn)
        cum = None
        for _ in range(T):
            out = snn(x)
            cum = out if cum is None else cum + out
        reset_neurons(snn)
        return cum / T


def test_unrolled_snn_forward_equals_plain_and_has_gradient(snn):
    x, y = data(8, classes=10, shape=(1, 28, 28))
    neurons = [m for _, m in spiking_layers(snn)]
    ref = plain_mean(snn, x, 4)
    stats = [m.spikes for m in neurons]
    xg = x.clone().requires_grad_(True)
    out = UnrolledSNN(snn, T=4)(xg)
    assert torch.equal(out.detach(), ref)                       # bitwise
    F.cross_entropy(out, y).backward()
    assert bool(torch.isfinite(xg.grad).all()) and float(xg.grad.abs().sum()) > 0
    assert all(m.surrogate is False and m.record is True and m.u is None for m in neurons)
    assert [m.spikes for m in neurons] == stats                 # nothing recorded
    assert not any(p.requires_grad for p in snn.parameters())


def test_unrolled_snn_under_art(snn):
    x, y = data(16, classes=10, shape=(1, 28, 28))
    model = UnrolledSNN(snn, T=2)
    eps = 0.05
    a = fgsm(model, x, y, eps)
    assert float(((a - x).abs() > eps / 2).float().mean()) > 0.1   # ART saw nonzero gradients
    assert float((a - x).abs().max()) <= eps + TOL
    b = pgd(model, x, y, eps, steps=3)
    assert float((b - x).abs().max()) <= eps + TOL
    assert float(b.min()) >= 0.0 and float(b.max()) <= 1.0
    assert ce(model, b, y) > ce(model, x, y)
    neurons = [m for _, m in spiking_layers(snn)]
    assert all(m.surrogate is False and m.record is True for m in neurons)
    assert not any(p.requires_grad for p in snn.parameters())


def test_unrolled_snn_rejects_bad_T(snn):
    for T in (0, 2.0, True):
        with pytest.raises(ValueError, match="T must"):
            UnrolledSNN(snn, T)


def test_bare_snn_is_refused(snn):
    x, y = data(4, classes=10, shape=(1, 28, 28))
    with pytest.raises(ValueError, match="UnrolledSNN"):
        fgsm(snn, x, y, 0.05)


def test_single_spike_surrogate_gradient_nonzero():
    # levels 0 and 1 are both clamp edges: the surrogate must still pass a gradient there
    n = IFNeuron(1.0, max_spikes=1)
    n.surrogate = True
    x = torch.linspace(-0.5, 2.5, 13, requires_grad=True)
    (n(x) + n(x)).sum().backward()
    assert float(x.grad.abs().sum()) > 0
    torch.manual_seed(0)
    ann = build("cnn-small", dict(name="steprelu", theta=0.1, L=4), 10, 1, 28, width=8).eval()
    xs, ys = data(4, classes=10, shape=(1, 28, 28))
    xs.requires_grad_(True)
    F.cross_entropy(UnrolledSNN(convert(ann, "steprelu-single"), T=4)(xs), ys).backward()
    assert bool(torch.isfinite(xs.grad).all()) and float(xs.grad.abs().sum()) > 0


# ---------------------------------------------------------------- PGD restarts

def wrong(model, x, y):
    with torch.no_grad():
        return model(x).argmax(1) != y


def test_pgd_restarts_keep_any_success():
    """restarts = k: the first run is the restarts = 1 result (same seed); an image is kept
    from a later run only where that run misclassifies it, so every image fooled with one
    restart stays fooled, and more restarts fool more images here."""
    model = tiny_model(seed=2)
    x, y = data(64, seed=3)
    with torch.no_grad():
        y = model(x).argmax(1)                  # attack the model's own predictions
    eps, kw = 0.05, dict(steps=2, step_size=0.0125, seed=0)   # short steps: the start matters
    one = pgd(model, x, y, eps, **kw)
    four = pgd(model, x, y, eps, restarts=4, **kw)
    w1, w4 = wrong(model, one, y), wrong(model, four, y)
    assert bool((w4 | ~w1).all())               # nothing fooled once is lost
    assert int(w4.sum()) > int(w1.sum()) > 0    # non-vacuous: the restarts found more
    same = (four == one).flatten(1).all(1)
    assert bool(same[~w4].all())                # unfooled images: the first run's result
    assert not bool(same[w4 & ~w1].any())       # newly fooled ones come from a later run
    assert float((four - x).abs().max()) <= eps + TOL
    assert float(four.min()) >= 0.0 and float(four.max()) <= 1.0
    assert torch.equal(four, pgd(model, x, y, eps, restarts=4, **kw))   # seeded
    assert torch.equal(four, craft("pgd", model, x, y, eps, restarts=4, **kw))


def test_pgd_restarts_argument_checks():
    model = tiny_model()
    x, y = data(4)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="restarts"):
            pgd(model, x, y, 0.05, restarts=bad)
    with pytest.raises(ValueError, match="random_init"):
        pgd(model, x, y, 0.05, restarts=2, random_init=False)


def test_pgd_through_time_with_restarts_leaves_snn_as_found(snn):
    x, y = data(16, classes=10, shape=(1, 28, 28))
    neurons = [m for _, m in spiking_layers(snn)]
    neurons[0].record = False                    # a flag set by the caller must survive too
    stats = [m.spikes for m in neurons]
    try:
        model = UnrolledSNN(snn, T=3)
        adv = pgd(model, x, y, 0.05, steps=3, restarts=2)
        assert float((adv - x).abs().max()) <= 0.05 + TOL
        assert ce(model, adv, y) > ce(model, x, y)
        assert [m.record for m in neurons] == [False] + [True] * (len(neurons) - 1)
        assert all(m.surrogate is False and m.u is None for m in neurons)
        assert [m.spikes for m in neurons] == stats
        assert not any(p.requires_grad or p.grad is not None for p in snn.parameters())
        assert not snn.training
    finally:
        neurons[0].record = True


def test_unrolled_snn_restores_flags_when_forward_fails(snn):
    neurons = [m for _, m in spiking_layers(snn)]
    with pytest.raises(RuntimeError):
        UnrolledSNN(snn, T=2)(torch.rand(2, 3, 28, 28))          # wrong channel count
    assert all(m.surrogate is False and m.record is True and m.u is None for m in neurons)


def test_static_prefix_runs_once_with_the_same_values_and_gradient(snn, monkeypatch):
    """UnrolledSNN runs the layers before the first neuron once per call: the logits are
    bitwise those of the plain T-step loop and the input gradient matches the one that
    runs the prefix at every step (to float rounding: the T gradients are summed first)."""
    import annsnn.attacks as attacks
    x, y = data(8, classes=10, shape=(1, 28, 28))
    calls = []
    first = snn[1]
    hook = first.register_forward_hook(lambda *a: calls.append(1))

    def grad_and_out():
        xg = x.clone().requires_grad_(True)
        out = UnrolledSNN(snn, T=4)(xg)
        F.cross_entropy(out, y).backward()
        return out.detach(), xg.grad

    try:
        out, g = grad_and_out()
        assert len(calls) == 1
        monkeypatch.setattr(attacks, "static_prefix", lambda m: None)
        calls.clear()
        out_every, g_every = grad_and_out()
        assert len(calls) == 4
    finally:
        hook.remove()
    assert torch.equal(out, out_every) and torch.equal(out, plain_mean(snn, x, 4))
    assert float(g.abs().sum()) > 0
    assert torch.allclose(g, g_every, rtol=1e-4, atol=1e-7)
