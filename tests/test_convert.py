"""convert(): thresholds of the rate-norm recipes against an independent computation,
refusals that name the offending layer, argument checks, and that the source ANN is
left untouched."""
from __future__ import annotations

import copy
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

import annsnn
from annsnn import (QCFS, ConversionError, IFNeuron, StepReLU, calibrate_thresholds, convert,
                    get_recipe, simulate)
from annsnn.recipes.ratenorm import RateNorm

from conftest import randomize_bn, tiny_loader

# ----------------------------------------------------------------------------- thresholds

N_CALIB = 140  # multiple of 7; 140 = 2*64 + 12: no batch of 1-2 rows (see conftest's note)


def relu_net() -> nn.Sequential:
    torch.manual_seed(3)
    gen = torch.Generator().manual_seed(3)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(8 * 3 * 3, 16), nn.BatchNorm1d(16), nn.ReLU(),
        nn.Linear(16, 10))
    return randomize_bn(net, gen, torch.randn(32, 1, 12, 12, generator=gen))


def fold_by_hand(net: nn.Sequential) -> nn.Sequential:
    """Fold BN into the preceding conv/linear for this known Sequential (independent of annsnn)."""
    mods = list(copy.deepcopy(net).eval())
    for i in (0, 4, 9):
        fuse = fuse_linear_bn_eval if isinstance(mods[i], nn.Linear) else fuse_conv_bn_eval
        mods[i], mods[i + 1] = fuse(mods[i], mods[i + 1]), nn.Identity()
    return nn.Sequential(*mods).eval()


def relu_outputs(net: nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    outs = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: outs.__setitem__(n, o.detach()))
             for n, m in net.named_modules() if isinstance(m, nn.ReLU)]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return {n: o.reshape(-1).numpy() for n, o in outs.items()}


@pytest.fixture(scope="module")
def calib():
    net = relu_net()
    x = torch.randn(N_CALIB, 1, 12, 12, generator=torch.Generator().manual_seed(5))
    folded = fold_by_hand(net)
    # premise: this platform computes each image's activations identically in batches of 7,
    # 64 and 140 (CPU GEMM kernels can depend on the batch size; see conftest)
    with torch.no_grad():
        full = folded(x)
        for bs in (7, 64):
            parts = torch.cat([folded(x[i:i + bs]) for i in range(0, N_CALIB, bs)])
            assert torch.equal(parts, full), f"platform: float results depend on batch size {bs}"
    return net, x, relu_outputs(folded, x)


@pytest.mark.parametrize("batch_size", [7, 64])
def test_maxnorm_thresholds_are_layer_maxima(calib, batch_size):
    net, x, acts = calib
    snn = convert(net, "maxnorm", tiny_loader(x, batch_size=batch_size))
    neurons = dict(annsnn.spiking_layers(snn))
    assert sorted(neurons) == sorted(acts) == ["11", "2", "6"]
    for name, vals in acts.items():
        n = neurons[name]
        assert float(n.theta) == float(vals.max())
        assert n.max_spikes == 1 and n.phi == 0.0 and n.leak == 1.0


@pytest.mark.parametrize("percentile", [99.9, 90.0])
@pytest.mark.parametrize("batch_size", [7, 64])
def test_robustnorm_thresholds_are_numpy_percentiles(calib, batch_size, percentile):
    net, x, acts = calib
    loader = tiny_loader(x, batch_size=batch_size)
    method = "robustnorm-all" if percentile == 99.9 else RateNorm("rn", percentile=percentile, nonzero=False)
    snn = convert(net, method, loader)
    neurons = dict(annsnn.spiking_layers(snn))
    direct = calibrate_thresholds(fold_by_hand(net), loader, percentile)
    for name, vals in acts.items():
        want = float(np.percentile(vals.astype(np.float64), percentile))  # default: linear
        assert want > 0
        assert abs(float(neurons[name].theta) - want) <= 1e-6 * want
        assert abs(direct[name] - want) <= 1e-6 * want
        assert neurons[name].max_spikes == 1 and neurons[name].phi == 0.0


@pytest.mark.parametrize("percentile", [99.9, 90.0, 50.0])
@pytest.mark.parametrize("batch_size", [7, 64])
def test_nonzero_percentiles_are_numpy_percentiles_of_the_nonzero_values(calib, batch_size,
                                                                         percentile):
    """nonzero=True (Rueckauer's snntoolbox): the percentile over the activations > 0 only."""
    net, x, acts = calib
    loader = tiny_loader(x, batch_size=batch_size)
    direct = calibrate_thresholds(fold_by_hand(net), loader, percentile, nonzero=True)
    method = "robustnorm" if percentile == 99.9 else RateNorm("rn-nz", percentile=percentile, nonzero=True)
    snn = convert(net, method, loader)
    neurons = dict(annsnn.spiking_layers(snn))
    for name, vals in acts.items():
        pos = vals[vals != 0].astype(np.float64)
        assert 0 < pos.size < vals.size  # premise: zeros present, so the conventions differ
        want = float(np.percentile(pos, percentile))
        assert want > float(np.percentile(vals.astype(np.float64), percentile))
        assert abs(direct[name] - want) <= 1e-6 * want
        assert abs(float(neurons[name].theta) - want) <= 1e-6 * want
    assert calibrate_thresholds(fold_by_hand(net), loader, None, nonzero=True) == \
        {n: float(v.max()) for n, v in acts.items()}


def test_thresholds_do_not_depend_on_batch_size(calib):
    net, x, _ = calib
    for method in ("maxnorm", "robustnorm"):
        a = convert(net, method, tiny_loader(x, batch_size=7))
        b = convert(net, method, tiny_loader(x, batch_size=64))
        ta = {n: float(m.theta) for n, m in annsnn.spiking_layers(a)}
        tb = {n: float(m.theta) for n, m in annsnn.spiking_layers(b)}
        assert ta == tb


def test_shuffled_calibration_loader_is_rejected(calib):
    net, x, _ = calib
    for method in ("maxnorm", "robustnorm"):
        with pytest.raises(ValueError, match="shuffle"):
            convert(net, method, tiny_loader(x, batch_size=7, shuffle=True))


def test_calibration_needs_a_loader_and_a_valid_percentile(calib):
    net, x, _ = calib
    for method in ("maxnorm", "robustnorm"):
        with pytest.raises(ValueError, match="calib_loader") as e:
            convert(net, method)
        assert type(e.value) is ValueError
    for p in (0.0, -1.0, 100.5):
        with pytest.raises(ValueError, match=r"\(0, 100\]"):
            RateNorm("bad", percentile=p)
        with pytest.raises(ValueError, match=r"\(0, 100\]"):
            calibrate_thresholds(fold_by_hand(net), tiny_loader(x), p)


# ----------------------------------------------------------------------------- neuron per method

def test_neuron_settings_per_method():
    x = torch.randn(8, 6)
    step = nn.Sequential(nn.Linear(6, 6), StepReLU(0.25, 5, 0.5, learn_theta=True), nn.Linear(6, 2))
    m = convert(step, "steprelu", leak=0.9)[1]
    assert (float(m.theta), m.max_spikes, m.phi, m.leak) == (0.25, 5, 0.5, 0.9)
    m = convert(step, "steprelu-single")[1]
    assert (float(m.theta), m.max_spikes, m.phi) == (1.25, 1, 0.5)
    step0 = nn.Sequential(nn.Linear(6, 6), StepReLU(0.25, 5, 0.0), nn.Linear(6, 2))
    m = convert(step0, "steprelu-single")[1]   # V0 = theta*L/2 whatever the ANN's phi
    assert (float(m.theta), m.max_spikes, m.phi) == (1.25, 1, 0.5)
    q = nn.Sequential(nn.Linear(6, 6), QCFS(4, 3.0), nn.Linear(6, 2))
    m = convert(q, "qcfs")[1]
    assert (float(m.theta), m.max_spikes, m.phi) == (3.0, 1, 0.5)
    r = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 2))
    m = convert(r, "maxnorm", tiny_loader(x))[1]
    assert m.max_spikes == 1 and m.phi == 0.0
    m = convert(r, "opi", tiny_loader(x))[1]
    assert m.max_spikes == 1 and m.phi == 0.5
    capped = convert(step, "steprelu-cap2")[1]
    assert (float(capped.theta), capped.max_spikes, capped.phi) == (0.625, 2, 0.5)


# ----------------------------------------------------------------------------- refusals

def seq(**named) -> nn.Sequential:
    return nn.Sequential(OrderedDict(named))


def conv_step(**tail) -> nn.Sequential:
    return seq(conv=nn.Conv2d(1, 2, 3, padding=1), act=StepReLU(0.1, 4), **tail,
               flat=nn.Flatten(), fc=nn.LazyLinear(3))


class FunctionalRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return F.relu(self.lin(x))


class MethodRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return self.lin(x).relu()


class TwiceCalled(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.l2, self.head = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)
        self.shared_yak = StepReLU(0.1, 4)

    def forward(self, x):
        return self.head(self.shared_yak(self.l2(self.shared_yak(self.l1(x)))))


def mlp(act_name: str, act: nn.Module, **extra) -> nn.Sequential:
    return seq(lin=nn.Linear(4, 4), **{act_name: act}, **extra, head=nn.Linear(4, 2))


REFUSALS = [  # (network factory, method, distinctive name that the message must contain)
    (lambda: conv_step(zebra_pool=nn.MaxPool2d(2)), "steprelu", "zebra_pool"),
    (lambda: conv_step(okapi_pool=nn.AdaptiveMaxPool2d(2)), "steprelu", "okapi_pool"),
    (lambda: mlp("act", StepReLU(0.1, 4), narwhal_gelu=nn.GELU()), "steprelu", "narwhal_gelu"),
    (lambda: mlp("act", StepReLU(0.1, 4), axolotl_silu=nn.SiLU()), "steprelu", "axolotl_silu"),
    (lambda: mlp("act", StepReLU(0.1, 4), wombat_block=FunctionalRelu()), "steprelu", "wombat_block"),
    (lambda: mlp("act", StepReLU(0.1, 4), kiwi_block=MethodRelu()), "steprelu", "kiwi_block"),
    (lambda: mlp("relu_ibis", nn.ReLU()), "qcfs", "relu_ibis"),
    (lambda: mlp("relu_ibis", nn.ReLU()), "steprelu", "relu_ibis"),
    (lambda: mlp("step_heron", StepReLU(0.1, 4)), "maxnorm", "step_heron"),
    (lambda: mlp("step_heron", StepReLU(0.1, 4)), "qcfs", "step_heron"),
    (lambda: mlp("qcfs_lemur", QCFS(4, 1.0)), "steprelu", "qcfs_lemur"),
    (lambda: mlp("qcfs_lemur", QCFS(4, 1.0)), "robustnorm", "qcfs_lemur"),
    (lambda: mlp("noclip_tapir", StepReLU(0.1, 4, clip=False)), "steprelu", "noclip_tapir"),
    (lambda: TwiceCalled(), "steprelu", "shared_yak"),
    (lambda: mlp("act", StepReLU(0.1, 4), odd_norm_quokka=nn.LayerNorm(4)), "steprelu",
     "odd_norm_quokka"),
]


@pytest.mark.parametrize("factory, method, name", REFUSALS,
                         ids=[f"{r[2]}-{r[1]}" for r in REFUSALS])
def test_refusals_name_the_layer(factory, method, name):
    net = factory()
    x = torch.randn(4, 1, 6, 6) if isinstance(net[0] if isinstance(net, nn.Sequential) else None,
                                              nn.Conv2d) else torch.randn(4, 4)
    with torch.no_grad():
        net(x)  # the network itself runs (and LazyLinear gets its shape)
    loader = tiny_loader(x) if get_recipe(method).needs_calibration else None
    with pytest.raises(ConversionError) as e:
        convert(net, method, loader)
    assert name in str(e.value), str(e.value)


def test_already_spiking_network_is_refused():
    snn = convert(mlp("act", StepReLU(0.1, 4)), "steprelu")
    with pytest.raises(ConversionError, match="act"):
        convert(snn, "steprelu")


def test_network_without_activation_is_refused():
    with pytest.raises(ConversionError):
        convert(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)), "steprelu")


@pytest.mark.parametrize("kwargs, needle", [
    (dict(leak=0), "(0, 1]"), (dict(leak=0.0), "(0, 1]"), (dict(leak=1.5), "(0, 1]"),
    (dict(leak=-0.2), "(0, 1]")])
def test_convert_rejects_bad_leak(kwargs, needle):
    with pytest.raises(ValueError) as e:
        convert(mlp("act", StepReLU(0.1, 4)), "steprelu", **kwargs)
    assert needle in str(e.value)


def test_unknown_method_lists_valid_ones():
    with pytest.raises(ValueError) as e:
        convert(mlp("act", StepReLU(0.1, 4)), "stepReLU-multi")
    for name in ("maxnorm", "robustnorm", "opi", "qcfs", "steprelu", "steprelu-single"):
        assert name in str(e.value)


def test_simulate_rejects_bad_T_max():
    snn = convert(mlp("act", StepReLU(0.1, 4)), "steprelu")
    loader = tiny_loader(torch.randn(4, 4))
    for T in (0, -1, 2.0, True):
        with pytest.raises(ValueError) as e:
            simulate(snn, loader, T, progress=False)
        assert ">= 1" in str(e.value) and "T_max" in str(e.value)


# ----------------------------------------------------------------------------- side effects

def test_convert_leaves_ann_untouched_and_snn_frozen():
    gen = torch.Generator().manual_seed(11)
    torch.manual_seed(11)
    ann = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), StepReLU(0.2, 6, 0.5,
                        learn_theta=True), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(16, 8),
                        nn.BatchNorm1d(8), StepReLU(0.3, 3),
                        nn.Linear(8, 3))
    randomize_bn(ann, gen, torch.randn(8, 3, 4, 4, generator=gen))
    ann.train()
    before = {k: v.clone() for k, v in ann.state_dict().items()}
    grads = {n: p.requires_grad for n, p in ann.named_parameters()}
    snn = convert(ann, "steprelu", leak=0.5)
    after = ann.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert ann.training and all(m.training for m in ann.modules())
    assert {n: p.requires_grad for n, p in ann.named_parameters()} == grads
    assert isinstance(ann[2], StepReLU) and isinstance(ann[1], nn.BatchNorm2d)
    assert all(not p.requires_grad for p in snn.parameters())
    assert not any(isinstance(m, (StepReLU, QCFS, nn.modules.batchnorm._BatchNorm))
                   for m in snn.modules())
    assert [type(m) for m in (snn[2], snn[7])] == [IFNeuron, IFNeuron]
    assert not snn.training


def test_untraceable_model_falls_back_and_stays_exact():
    """Data-dependent control flow defeats torch.fx: convert warns, folds BN inside
    nn.Sequential only, and the T = 1 exactness still holds."""
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), StepReLU(0.17, 5, 0.5))
            self.head = nn.Linear(6, 3)

        def forward(self, x):
            h = self.body(x)
            if h.sum() > -1e9:   # data-dependent: not traceable
                h = h * 1.0
            return self.head(h)

    gen = torch.Generator().manual_seed(2)
    torch.manual_seed(2)
    x = torch.randn(12, 5, generator=gen)
    ann = randomize_bn(Branchy(), gen, x)
    with pytest.warns(UserWarning, match="could not trace"):
        snn = convert(ann, "steprelu")
    assert isinstance(snn.body[1], nn.Identity)
    with pytest.warns(UserWarning):
        ref = annsnn.fold_bn(ann)
    with torch.no_grad():
        annsnn.reset_neurons(snn)
        assert torch.equal(snn(x), ref(x))


# ----------------------------------------------------------------------------- allow-list of functional ops

class _Product(nn.Module):
    """Multiplies two activations: nonlinear, so conversion must refuse it."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.gate_act = StepReLU(0.1, 4)

    def forward(self, x):
        h = self.gate_act(self.lin(x))
        return h * h


class _Scaled(nn.Module):
    """Scales by a constant and adds a residual: linear, so conversion stays exact."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.act = StepReLU(0.1, 4)
        self.out = nn.Linear(4, 3)

    def forward(self, x):
        h = self.act(self.lin(x))
        return self.out(0.5 * h + h / 4 - h.mean(dim=1, keepdim=True))


def test_product_of_tensors_is_refused():
    with pytest.raises(ConversionError, match="not linear"):
        convert(_Product(), "steprelu")


def test_linear_functional_ops_are_accepted_and_exact():
    torch.manual_seed(3)
    net = _Scaled().eval()
    snn = convert(net, "steprelu")
    x = torch.randn(16, 4)
    annsnn.reset_neurons(snn)
    with torch.no_grad():
        assert torch.equal(snn(x), net(x))


def test_batchnorm_without_running_stats_is_refused():
    net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4, track_running_stats=False),
                        StepReLU(0.1, 4), nn.Linear(4, 2))
    with pytest.raises(ConversionError, match="running statistics"):
        convert(net, "steprelu")


# ----------------------------------------------------------------------------- leak modes

def _net_for(recipe_name: str, gen: torch.Generator) -> nn.Sequential:
    """relu_net with the activation the recipe converts (random thresholds for the trained kinds)."""
    kind = get_recipe(recipe_name).activation
    net = relu_net()
    for i, m in enumerate(net):
        if isinstance(m, nn.ReLU) and kind != "relu":
            theta = float(torch.rand((), generator=gen)) * 0.5 + 0.2
            net[i] = StepReLU(theta, 4, 0.5) if kind == "steprelu" else QCFS(4, theta * 4)
    return net.eval()


@pytest.mark.parametrize("leak_mode", ["exp", "linear"])
def test_leak_mode_reaches_every_neuron_of_every_method(leak_mode):
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(N_CALIB, 1, 12, 12, generator=gen)
    for name in annsnn.RECIPES:
        snn = convert(_net_for(name, gen), name, tiny_loader(x, batch_size=70), leak=0.8,
                      leak_mode=leak_mode)
        neurons = [m for m in snn.modules() if isinstance(m, IFNeuron)]
        assert len(neurons) == 3, name
        assert all(m.leak == 0.8 and m.leak_mode == leak_mode for m in neurons), name
    default = convert(_net_for("steprelu", gen), "steprelu", leak=0.8)
    assert all(m.leak_mode == "exp" for m in default.modules() if isinstance(m, IFNeuron))


def test_convert_rejects_unknown_leak_mode():
    for bad in ("lin", "Linear", None):
        with pytest.raises(ValueError) as e:
            convert(mlp("act", StepReLU(0.1, 4)), "steprelu", leak=0.9, leak_mode=bad)
        assert "leak_mode" in str(e.value) and "exp, linear" in str(e.value)


def _outputs(snn: nn.Module, x: torch.Tensor, T: int) -> torch.Tensor:
    annsnn.reset_neurons(snn)
    with torch.no_grad():
        outs = torch.stack([snn(x) for _ in range(T)])
    annsnn.reset_neurons(snn)
    return outs


@pytest.mark.parametrize("method", ["steprelu", "maxnorm", "qcfs"])
def test_leak_one_is_the_same_snn_in_both_modes(method):
    gen = torch.Generator().manual_seed(6)
    x = torch.rand(N_CALIB, 1, 12, 12, generator=gen)
    ann, loader = _net_for(method, gen), tiny_loader(x, batch_size=70)
    a = _outputs(convert(ann, method, loader, leak=1.0, leak_mode="exp"), x[:32], 8)
    b = _outputs(convert(ann, method, loader, leak=1.0, leak_mode="linear"), x[:32], 8)
    assert torch.equal(a, b)


@pytest.mark.parametrize("leak_mode", ["exp", "linear"])
def test_steprelu_stays_exact_at_t1_with_either_leak(leak_mode):
    """The leak acts only on the carried potential: at t = 1 the steprelu SNN with leak 0.5
    equals the BatchNorm-folded ANN bit for bit in both modes; from t = 2 the leak acts."""
    gen = torch.Generator().manual_seed(8)
    x = torch.rand(48, 1, 12, 12, generator=gen)
    ann = randomize_bn(_net_for("steprelu", gen), gen, x)
    ref = annsnn.fold_bn(ann)
    with torch.no_grad():
        want = ref(x)
    leaky = _outputs(convert(ann, "steprelu", leak=0.5, leak_mode=leak_mode), x, 3)
    plain = _outputs(convert(ann, "steprelu"), x, 3)
    assert torch.equal(leaky[0], want)
    assert not torch.equal(leaky[1:], plain[1:])      # non-vacuous: the leak changes later steps
