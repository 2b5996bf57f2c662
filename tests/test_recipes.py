"""The conversion recipes: one contract every registered recipe meets on every zoo
architecture (registering a recipe puts it under test here with no other edit),
the registry's refusals, and the literal settings that define each baseline."""
from __future__ import annotations

import re
from collections import OrderedDict

import pytest
import torch
from torch import nn

import annsnn
from annsnn import ConversionError, IFNeuron, convert, fold_bn
from annsnn.activations import ACTIVATIONS, make_activation
from annsnn.models import ARCHITECTURES, build
from annsnn.recipes import RECIPES, Recipe, get_recipe, register
from annsnn.recipes.ratenorm import RateNorm
from annsnn.recipes.steprelu import CappedStepReLU

from conftest import fit_thresholds, randomize_bn, record_rel_error, tiny_loader

T_MAX = 4
N_IMAGES = 8
# tiny versions of the zoo: (in_channels, image side, build kwargs)
TINY = {
    "cnn-small": (1, 8, dict(width=4)),
    "vgg-cpu": (3, 8, dict(cfg=[6, "P", "R", 8, "P"])),  # "R": a residual block
    "vgg16": (3, 32, dict(hidden=32)),
    "resnet18": (3, 16, dict(width=0.125)),
    "resnet20": (3, 8, dict(width=0.5)),
    "resnet34": (3, 16, dict(width=0.125)),
}
# activation knobs for the test nets (an activation missing here is built with its defaults)
KNOBS = {"qcfs": {"L": 4}, "steprelu": {"theta": 1.0, "L": 4, "phi": 0.5}}


def test_tiny_zoo_covers_every_architecture():
    assert sorted(TINY) == sorted(ARCHITECTURES)


def tiny_ann(arch: str, activation: str, seed: int):
    """A zoo net with random weights, realistic BatchNorm statistics and (for quantised
    activations) thresholds on the scale of each layer's input; returns (ann, x)."""
    cin, size, kw = TINY[arch]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    ann = build(arch, {"name": activation, **KNOBS.get(activation, {})}, num_classes=5,
                in_channels=cin, image_size=size, mean=[0.5] * cin, std=[0.25] * cin, **kw)
    x = torch.rand(N_IMAGES, cin, size, size, generator=gen)
    randomize_bn(ann, gen, x, train_passes=2)
    assert fit_thresholds(ann, x, gen) == 0, "a dead layer would make the test vacuous"
    return ann, x


def run_steps(snn: nn.Module, x: torch.Tensor, T: int):
    """Mean classifier output over steps 1..t for t = 1..T, and each neuron's spike counts."""
    counts: list[tuple[IFNeuron, torch.Tensor]] = []
    def hook(mod, inp, out):  # out = n * theta: recover n, and check the product is exactly that
        theta = mod.theta_for(out)    # one threshold, or one per channel
        n = torch.round(out / theta)
        assert torch.equal(n * theta, out)
        counts.append((mod, n))
    hooks = [m.register_forward_hook(hook)
             for _, m in annsnn.spiking_layers(snn)]
    means, total = [], None
    try:
        annsnn.reset_neurons(snn)
        with torch.no_grad():
            for t in range(1, T + 1):
                out = snn(x)
                total = out if total is None else total + out
                means.append(total / t)
    finally:
        for h in hooks:
            h.remove()
    return means, counts


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_contract(name, arch):
    recipe = RECIPES[name]
    ann, x = tiny_ann(arch, recipe.activation, seed=sum(map(ord, arch + name)))
    loader = tiny_loader(x, batch_size=N_IMAGES)
    snn = convert(ann, recipe, loader)
    ref = fold_bn(ann)
    neurons = dict(annsnn.spiking_layers(snn))
    acts = [n for n, m in ann.named_modules() if isinstance(m, ACTIVATIONS[recipe.activation])]
    assert sorted(neurons) == sorted(acts) and acts

    # thresholds: positive, finite, and those the recipe reports (a number per layer, or a
    # [C] tensor per channel, as the neuron stores it)
    thresholds = recipe.thresholds(ref, loader)
    assert sorted(thresholds) == sorted(neurons)
    for n, m in neurons.items():
        theta = m.theta
        assert bool((theta > 0).all()) and bool(torch.isfinite(theta).all()), (n, theta)
        want = torch.as_tensor(thresholds[n], dtype=torch.float32)
        assert want.shape == theta.shape and torch.equal(theta, want), n

    means, counts = run_steps(snn, x, T_MAX)
    for t in (1, T_MAX):
        assert means[t - 1].shape == (N_IMAGES, 5)
        assert bool(torch.isfinite(means[t - 1]).all())
    # every spiking layer emits whole spikes, 0..max_spikes per step, all steps
    assert len(counts) == T_MAX * len(neurons)
    for mod, n in counts:
        assert float(n.min()) >= 0 and float(n.max()) <= mod.max_spikes
    assert any(float(n.max()) > 0 for _, n in counts), "no spike at all: the test is vacuous"

    if recipe.exact_at_t1:
        with torch.no_grad():
            a = ref(x)
        record_rel_error(f"recipe {name} on {arch}", means[0], a)
        assert torch.equal(means[0], a), f"{name} on {arch}: t = 1 differs from the folded ANN"


# the methods the shipped presets and the paper's tables name, in registration order; a
# method registered later (anywhere in the order) changes nothing here
BENCHMARK_METHODS = ["maxnorm", "robustnorm", "robustnorm-all", "opi", "qcfs", "steprelu",
                     "steprelu-single", "steprelu-cap1", "steprelu-cap2", "steprelu-cap4"]


def test_the_registry():
    """Every entry is a Recipe under its own name, of the registry's style (lowercase words
    joined by '-'), with a description, an activation that exists and boolean flags; the
    benchmark's methods are among them in their order, and of those only steprelu claims
    exactness at t = 1 (any recipe that claims it is checked by test_recipe_contract)."""
    assert RECIPES, "nothing registered"
    for n, r in RECIPES.items():
        assert isinstance(r, Recipe) and r.name == n
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", n), n
        assert r.activation in ACTIVATIONS and isinstance(r.description, str) and r.description
        assert isinstance(r.exact_at_t1, bool) and isinstance(r.needs_calibration, bool)
    assert [n for n in RECIPES if n in BENCHMARK_METHODS] == BENCHMARK_METHODS
    assert [n for n in BENCHMARK_METHODS if RECIPES[n].exact_at_t1] == ["steprelu"]


def test_the_contract_and_refusals_run_on_every_registered_recipe():
    """The per-recipe tests are parametrised from the registry itself, so registering a
    method puts it under test with no edit to this file."""
    for test in (test_recipe_contract, test_wrong_activation_is_refused_naming_the_layer):
        names = [m.args[1] for m in test.pytestmark if m.name == "parametrize" and m.args[0] == "name"]
        assert names == [list(RECIPES)], test.__name__


def test_unknown_name_fails_with_the_list():
    with pytest.raises(ValueError) as e:
        get_recipe("maxnorm-typo")
    assert "maxnorm-typo" in str(e.value)
    for name in RECIPES:
        assert name in str(e.value).split("valid:")[1]


@pytest.mark.parametrize("name", list(RECIPES))
def test_wrong_activation_is_refused_naming_the_layer(name):
    recipe = RECIPES[name]
    for other in ACTIVATIONS:
        if isinstance(make_activation(other), ACTIVATIONS[recipe.activation]):
            continue
        net = nn.Sequential(OrderedDict(lin=nn.Linear(4, 4), mismatched_ocelot=make_activation(other),
                                        head=nn.Linear(4, 2)))
        with pytest.raises(ConversionError, match="mismatched_ocelot"):
            convert(net, recipe, tiny_loader(torch.randn(8, 4)))


def test_registering_a_duplicate_name_fails():
    before = dict(RECIPES)
    with pytest.raises(ValueError, match="already registered"):
        register(RateNorm("maxnorm", percentile=50.0))
    assert RECIPES == before and RECIPES["maxnorm"] is before["maxnorm"]


def test_opi_starts_at_half_the_maxnorm_threshold():
    gen = torch.Generator().manual_seed(4)
    torch.manual_seed(4)
    x = torch.randn(16, 6, generator=gen)
    net = randomize_bn(nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(),
                                     nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)), gen, x)
    loader = tiny_loader(x)
    opi, maxnorm = convert(net, "opi", loader), convert(net, "maxnorm", loader)
    a, b = annsnn.spiking_layers(opi), annsnn.spiking_layers(maxnorm)
    assert [n for n, _ in a] == [n for n, _ in b] == ["2", "4"]
    for (_, o), (_, m) in zip(a, b):
        assert torch.equal(o.theta, m.theta)
        assert (o.phi, m.phi, o.max_spikes, m.max_spikes) == (0.5, 0.0, 1, 1)
        o.reset()
        o(torch.zeros(1, 8))  # no input: the potential is the initial one, half the threshold
        assert torch.equal(o.u * o.theta, torch.full((1, 8), 0.5) * o.theta)
    assert get_recipe("opi").thresholds(fold_bn(net), loader) == \
        get_recipe("maxnorm").thresholds(fold_bn(net), loader)


def test_baseline_defaults_as_literals():
    """The settings that define each baseline (a change here changes published numbers)."""
    rn, mx, opi = get_recipe("robustnorm"), get_recipe("maxnorm"), get_recipe("opi")
    assert (rn.percentile, rn.nonzero, rn.v0) == (99.9, True, 0.0)        # Rueckauer's toolbox
    rn_all = get_recipe("robustnorm-all")
    assert (rn_all.percentile, rn_all.nonzero, rn_all.v0) == (99.9, False, 0.0)  # SpikingJelly's
    assert [get_recipe(f"steprelu-cap{c}").cap for c in (1, 2, 4)] == [1, 2, 4]
    assert (mx.percentile, mx.v0) == (100.0, 0.0)
    assert (opi.percentile, opi.v0) == (100.0, 0.5)
    assert all(r.needs_calibration for r in (rn, mx, opi))
    assert "reset by subtraction" in mx.description and "99.9" in rn.description


def test_steprelu_cap_keeps_the_range_and_claims_no_exactness():
    """cap C: at most C spikes per step over the ANN's whole range L*theta (threshold
    theta*L/C), starting at half a threshold; cap 1 is steprelu-single's neuron."""
    capped = CappedStepReLU(name="steprelu-cap2", cap=2)
    assert not capped.exact_at_t1 and get_recipe("steprelu").exact_at_t1
    act = make_activation("steprelu", theta=0.5, L=6, phi=0.0)
    n = capped.neuron(act, None, 0.9)
    assert (float(n.theta), n.max_spikes, n.phi, n.leak) == (1.5, 2, 0.5, 0.9)
    assert float(n.theta) * n.max_spikes == 0.5 * 6
    one, single = get_recipe("steprelu-cap1").neuron(act, None, 1.0), get_recipe("steprelu-single").neuron(act, None, 1.0)
    assert (float(one.theta), one.max_spikes, one.phi) == (float(single.theta), single.max_spikes, single.phi)
    assert capped.neuron(make_activation("steprelu", L=1), None, 1.0).max_spikes == 1
    with pytest.raises(ValueError, match=">= 1"):
        CappedStepReLU(name="bad", cap=0)
