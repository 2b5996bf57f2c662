"""Pixel-space noise (annsnn.noise): statistics, identities, seeding, and static vs dynamic
drawing as seen through annsnn.simulate."""
from __future__ import annotations

import math
import re

import pytest
import torch

from annsnn.neurons import IFNeuron

from annsnn import convert, simulate
from annsnn.models import build
from annsnn.noise import GaussianNoise, SaltPepper, draw_paired, make_perturbation
from conftest import run_if

# MLflow's rule for metric names (mlflow.utils.validation, non-Windows); copied so that
# annsnn's tests do not import MLflow.
MLFLOW_METRIC_NAME = re.compile(r"^[/\w.\- :]*$")


def gen(seed=0):
    return torch.Generator(device="cpu").manual_seed(seed)


# ---------------------------------------------------------------- salt and pepper

def test_salt_pepper_s1_is_identity():
    x = torch.rand(4, 3, 8, 8, generator=gen(1))
    out = SaltPepper(1.0)(x, gen())
    assert torch.equal(out, x)


def test_salt_pepper_s0_every_pixel_black_or_white():
    x = torch.rand(8, 3, 16, 16, generator=gen(1)) * 0.8 + 0.1
    out = SaltPepper(0.0)(x, gen())
    assert bool(((out == 0) | (out == 1)).all())
    assert 0 < float(out.mean()) < 1          # both colours occur


def test_salt_pepper_statistics_at_s09():
    s = 0.9
    x = torch.full((64, 1, 64, 64), 0.5)      # any change is visible: 0.5 -> 0 or 1
    out = SaltPepper(s)(x, gen(3))
    n = x.numel()
    changed = out != 0.5
    k = int(changed.sum())
    p = 1 - s
    assert abs(k / n - p) <= 3 * math.sqrt(p * (1 - p) / n)
    white = int((out == 1).sum())
    black = int((out == 0).sum())
    assert white + black == k
    assert abs(white - k / 2) <= 3 * math.sqrt(k) / 2


def test_salt_pepper_mask_shared_across_channels():
    x = torch.rand(16, 3, 32, 32, generator=gen(2)) * 0.9 + 0.05   # never exactly 0 or 1
    out = SaltPepper(0.7)(x, gen(5))
    same = (out == x).all(1)
    black = (out == 0).all(1)
    white = (out == 1).all(1)
    assert bool((same | black | white).all())                # each position: all or nothing
    assert int(same.sum()) > 0 and int(black.sum()) > 0 and int(white.sum()) > 0


def test_salt_pepper_rejects_out_of_range():
    for s in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            SaltPepper(s)


# ---------------------------------------------------------------- gaussian

def test_gaussian_sigma0_is_identity():
    x = torch.rand(4, 3, 8, 8, generator=gen(1))
    out = GaussianNoise(0.0)(x, gen())
    assert torch.equal(out, x)


def test_gaussian_range_and_scale():
    x = torch.rand(32, 3, 16, 16, generator=gen(1))
    out = GaussianNoise(0.5)(x, gen())
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert bool((out == 0).any()) and bool((out == 1).any())  # clipping happened
    mid = torch.full((64, 1, 32, 32), 0.5)
    d = GaussianNoise(0.05)(mid, gen(4)) - mid                # clipping at 10 sigma: never
    assert abs(float(d.mean())) < 0.001
    assert abs(float(d.std()) - 0.05) < 0.001


def test_gaussian_rejects_negative_sigma():
    with pytest.raises(ValueError, match=">= 0"):
        GaussianNoise(-0.1)


@pytest.mark.parametrize("p", [GaussianNoise(0.2), SaltPepper(0.8)])
def test_same_seed_same_draw_other_seed_other_draw(p):
    x = torch.rand(4, 3, 8, 8, generator=gen(1))
    assert torch.equal(p(x, gen(7)), p(x, gen(7)))
    assert not torch.equal(p(x, gen(7)), p(x, gen(8)))
    g = gen(7)
    assert not torch.equal(p(x, g), p(x, g))                  # one generator: fresh draws


@run_if(gpu=True)
@pytest.mark.parametrize("p", [GaussianNoise(0.2), SaltPepper(0.8)])
def test_draw_does_not_depend_on_device(p):
    x = torch.rand(4, 3, 8, 8, generator=gen(1))
    on_gpu = p(x.cuda(), gen(7))
    assert on_gpu.device.type == "cuda"
    assert torch.allclose(on_gpu.cpu(), p(x, gen(7)), atol=1e-6, rtol=0)


# ---------------------------------------------------------------- factory and names

def test_factory_and_names():
    g = make_perturbation("gaussian", 0.1, True)
    assert isinstance(g, GaussianNoise) and g.dynamic and g.sigma == 0.1
    assert g.name == "gaussian/sigma_0.1/dynamic"
    sp = make_perturbation("salt_pepper", 0.9, False)
    assert isinstance(sp, SaltPepper) and not sp.dynamic and sp.s == 0.9
    assert sp.name == "salt_pepper/s_0.9/static"
    assert make_perturbation("gaussian", 0.1, True) == g
    for p in (g, sp, make_perturbation("gaussian", 1e-5), make_perturbation("salt_pepper", 1)):
        assert MLFLOW_METRIC_NAME.match(p.name), p.name


def test_factory_errors_name_the_allowed_range():
    with pytest.raises(ValueError, match="gaussian.*salt_pepper"):
        make_perturbation("speckle", 0.1, False)
    with pytest.raises(ValueError, match="sigma must be .*>= 0"):
        make_perturbation("gaussian", -1.0, False)
    with pytest.raises(ValueError, match=r"s must lie in \[0, 1\]"):
        make_perturbation("salt_pepper", 1.1, False)


# ---------------------------------------------------------------- through simulate

class Recorder:
    """Wraps a perturbation and records what it returns (and so how often it is called)."""

    def __init__(self, inner):
        self.inner = inner
        self.dynamic = inner.dynamic
        self.outputs: list[torch.Tensor] = []

    def __call__(self, x, generator):
        out = self.inner(x, generator)
        self.outputs.append(out.clone())
        return out


@pytest.fixture(scope="module")
def tiny_snn():
    torch.manual_seed(0)
    ann = build("cnn-small", dict(name="steprelu", theta=0.1, L=4), 10, 1, 28, width=4).eval()
    return convert(ann, "steprelu")


def _loader():
    g = gen(11)
    return [(torch.rand(5, 1, 28, 28, generator=g), torch.randint(0, 10, (5,), generator=g))
            for _ in range(2)]


def _run(snn, perturbation, seed, T=3, current=None):
    """Record the images the SNN's first layer receives (``seen``) and, optionally, the
    input current of its first spiking layer at every step (``current``)."""
    rec = Recorder(perturbation)
    seen = []
    handles = [snn[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))]
    if current is not None:
        neuron = next(m for m in snn.modules() if isinstance(m, IFNeuron))
        handles.append(neuron.register_forward_pre_hook(lambda m, args: current.append(args[0].clone())))
    try:
        res = simulate(snn, _loader(), T, perturb=rec, seed=seed, progress=False)
    finally:
        for h in handles:
            h.remove()
    seen = [s for s in seen if s.shape[0] == 5]   # drop simulate's one-image operation count
    if current is not None:
        current[:] = [c for c in current if c.shape[0] == 5]
    # the perturbation is called once per image (each with its own generator): one draw of
    # a batch is its 5 images' outputs together
    assert all(o.shape[0] == 1 for o in rec.outputs) and len(rec.outputs) % 5 == 0
    drawn = [torch.cat(rec.outputs[i:i + 5]) for i in range(0, len(rec.outputs), 5)]
    return res, drawn, seen


@pytest.mark.parametrize("kind,level", [("gaussian", 0.3), ("salt_pepper", 0.7)])
def test_static_noise_drawn_once_per_batch_and_repeated(tiny_snn, kind, level):
    T, batches = 3, 2
    current = []
    res, drawn, seen = _run(tiny_snn, make_perturbation(kind, level, dynamic=False), seed=0, T=T,
                            current=current)
    assert len(drawn) == batches
    # the static image enters the network once per batch (its input current is reused) ...
    assert len(seen) == batches
    for b in range(batches):
        assert torch.equal(seen[b], drawn[b])
    # ... and the first spiking layer receives the same current at every step
    assert len(current) == batches * T
    for b in range(batches):
        for t in range(1, T):
            assert torch.equal(current[b * T + t], current[b * T])
    assert not torch.equal(drawn[0], _loader()[0][0])


@pytest.mark.parametrize("kind,level", [("gaussian", 0.3), ("salt_pepper", 0.7)])
def test_dynamic_noise_redrawn_every_step(tiny_snn, kind, level):
    T, batches = 3, 2
    res, drawn, seen = _run(tiny_snn, make_perturbation(kind, level, dynamic=True), seed=0, T=T)
    assert len(drawn) == batches * T
    assert len(seen) == batches * T
    for a, b in zip(drawn, seen):
        assert torch.equal(a, b)
    for b in range(batches):
        steps = drawn[b * T:(b + 1) * T]
        assert all(not torch.equal(steps[i], steps[i + 1]) for i in range(T - 1))


@pytest.mark.parametrize("dynamic", [False, True])
def test_simulate_seed_reproducible(tiny_snn, dynamic):
    p = make_perturbation("gaussian", 0.3, dynamic)
    r1, d1, _ = _run(tiny_snn, p, seed=5)
    r2, d2, _ = _run(tiny_snn, p, seed=5)
    r3, d3, _ = _run(tiny_snn, p, seed=6)
    assert all(torch.equal(a, b) for a, b in zip(d1, d2))
    assert torch.equal(r1.predictions, r2.predictions) and r1.acc == r2.acc
    assert r1.sops == r2.sops and r1.firing_rate == r2.firing_rate
    assert not any(torch.equal(a, b) for a, b in zip(d1, d3))
    assert r1.sops != r3.sops      # different inputs -> different spike counts


class _Identity(torch.nn.Module):
    """A one-layer 'SNN' whose only job is to show what simulate feeds it at each step."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(784, 10)
        self.neuron = IFNeuron(1.0)
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        if x.shape[0] > 1:
            self.seen.append(x.clone())
        return self.lin(self.neuron(x.flatten(1)))


@pytest.mark.parametrize("dynamic", [False, True])
def test_noise_is_paired_across_T_and_batch_size(dynamic):
    """The same image at the same step gets the same noise whatever T, the batch size or the
    call: comparisons between T, leaks, methods and study trials are on the same draws."""
    g = gen(3)
    x, y = torch.rand(12, 1, 28, 28, generator=g), torch.randint(0, 10, (12,), generator=g)
    p = make_perturbation("salt_pepper", 0.7, dynamic)
    runs = {}
    for T, bs in ((2, 4), (4, 6)):
        net = _Identity()
        simulate(net, [(x[i:i + bs], y[i:i + bs]) for i in range(0, 12, bs)], T, perturb=p,
                 seed=9, progress=False)
        steps, n_batches = net.seen, 12 // bs     # not Sequential: called at every step
        assert len(steps) == n_batches * T
        runs[T] = [torch.cat([steps[b * T + t] for b in range(n_batches)]) for t in range(T)]
    for t in range(2):
        assert torch.equal(runs[2][t], runs[4][t])
    assert not torch.equal(runs[4][0], x)
    assert torch.equal(runs[4][0], runs[4][3]) != dynamic     # static: one draw per image


def test_authors_setting_corrupts_a_fraction_of_the_images():
    """AddNoise(0.95, 0.5): about half of the images get salt-and-pepper at s = 0.95, the rest
    stay exactly clean; p_image = 1 draws as before (no coin, same generator stream)."""
    x = torch.full((4000, 1, 8, 8), 0.5)
    p = make_perturbation("salt_pepper", 0.95, False, p_image=0.5)
    assert p.name == "salt_pepper/s_0.95_p_0.5/static" and p != make_perturbation("salt_pepper", 0.95)
    out = draw_paired(p, x, seed=0, first_index=0, t=0)
    hit = (out != x).flatten(1).any(1)
    assert abs(float(hit.float().mean()) - 0.5) < 4 * (0.25 / 4000) ** 0.5   # binomial, 4 sigma
    changed = (out[hit] != 0.5).float().mean()
    assert abs(float(changed) - 0.05) < 0.01     # hit images: 1 - s of the pixels; p(miss all 64) ~ 4%
    assert torch.equal(out[~hit], x[~hit])
    every = SaltPepper(0.95)(x[:16], gen(2))
    assert torch.equal(SaltPepper(0.95, p_image=1.0)(x[:16], gen(2)), every)
    with pytest.raises(ValueError, match="p_image"):
        make_perturbation("salt_pepper", 0.95, False, p_image=1.5)
    with pytest.raises(ValueError, match="salt_pepper noise only"):
        make_perturbation("gaussian", 0.1, False, p_image=0.5)
