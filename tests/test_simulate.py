"""simulate(): leak only matters after t = 1, results do not depend on batch order or size,
state is reset between batches, and the operation counts (SOPs, MACs, firing rate,
largest spike count per step) match hand counts."""
from __future__ import annotations

import copy
import math
import functools

import pytest
import torch
from torch import nn

import annsnn
from annsnn import StepReLU, convert, fold_bn, simulate
from annsnn.convert import trace
from annsnn.metrics import E_AC_PJ, E_MAC_PJ, ann_energy_pj, energy_pj, profile_ops

from conftest import fit_thresholds, random_net, randomize_bn, steprelu_factory, tiny_loader


def small_steprelu_net(seed: int = 0, kind: str = "resnet", L: int = 4, phi: float = 0.5,
                       n: int = 40, classes: int = 10):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    ann, shape = random_net(kind, steprelu_factory(gen, L, phi), gen, depth=3, cin=2, size=8,
                            classes=classes)
    x = torch.randn(n, *shape, generator=gen)
    y = torch.randint(0, classes, (n,), generator=gen)
    randomize_bn(ann, gen, x)
    assert fit_thresholds(ann, x, gen) == 0
    # centre the classifier on the data (bias = -W @ mean feature): otherwise the features'
    # common mode picks one class for every image and the comparisons below are vacuous
    head = [m for m in ann.modules() if isinstance(m, nn.Linear)][-1]
    feats = []
    h = head.register_forward_pre_hook(lambda mod, args: feats.append(args[0].detach()))
    with torch.no_grad():
        ann(x)
        h.remove()
        head.bias.copy_(-head.weight @ feats[0].mean(0))
    return ann, x, y


def outputs_per_step(snn: nn.Module, x: torch.Tensor, T: int) -> torch.Tensor:
    annsnn.reset_neurons(snn)
    with torch.no_grad():
        return torch.stack([snn(x) for _ in range(T)])


# ----------------------------------------------------------------------------- leak

@pytest.mark.parametrize("leak", [0.9, 0.5])
def test_leak_matters_only_after_t1(leak):
    ann, x, y = small_steprelu_net(seed=1)
    T = 8
    ref = convert(ann, "steprelu", leak=1.0)
    lk = convert(ann, "steprelu", leak=leak)
    o_ref, o_lk = outputs_per_step(ref, x, T), outputs_per_step(lk, x, T)
    assert torch.equal(o_ref[0], o_lk[0])                 # t = 1: the leak is never applied
    assert not torch.equal(o_ref[1:], o_lk[1:])           # t > 1: it is
    assert all(not torch.equal(o_ref[t], o_lk[t]) for t in range(2, T))
    loader = tiny_loader(x, y, batch_size=len(x))
    r_ref = simulate(ref, loader, T, ann=ann, progress=False)
    r_lk = simulate(lk, loader, T, ann=ann, progress=False)
    assert r_ref.acc[0] == r_lk.acc[0]
    assert r_ref.conv_error[0] == r_lk.conv_error[0] == 0.0
    assert torch.equal(r_ref.predictions[:, 0], r_lk.predictions[:, 0])
    assert r_ref.identical_at_t1 == r_lk.identical_at_t1 == len(x)
    assert all(a != b for a, b in zip(r_ref.conv_error[1:], r_lk.conv_error[1:]))


# ----------------------------------------------------------------------------- state

def test_batch_order_and_size_do_not_matter():
    """Batches of 8 in order against batches of 16 and 8 with the 8-image blocks shuffled.
    Rows stay in the same position modulo 8: on this platform (AMD EPYC, MKL) a linear
    layer's row results depend on the row's place in a smaller or odd-sized batch."""
    ann, x, y = small_steprelu_net(seed=2)
    n, T = len(x), 6
    blocks = torch.randperm(n // 8, generator=torch.Generator().manual_seed(9))
    perm = (blocks[:, None] * 8 + torch.arange(8)).flatten()
    inv = torch.argsort(perm)
    # premise: the platform computes each image identically in both batchings (see conftest)
    ref = fold_bn(ann)
    with torch.no_grad():
        a8 = torch.cat([ref(x[i:i + 8]) for i in range(0, n, 8)])
        a16 = torch.cat([ref(x[perm][i:i + 16]) for i in range(0, n, 16)])[inv]
    assert torch.equal(a8, a16), "platform: float results depend on the batch size"
    snn = convert(ann, "steprelu", leak=0.9)
    r1 = simulate(snn, tiny_loader(x, y, batch_size=8), T, ann=ann, progress=False, spike_hist=True)
    r2 = simulate(snn, tiny_loader(x[perm], y[perm], batch_size=16), T, ann=ann, progress=False,
                  spike_hist=True)
    assert torch.equal(r1.predictions, r2.predictions[inv])
    assert torch.equal(r1.labels, r2.labels[inv])
    assert r1.acc == r2.acc
    assert r1.sops == r2.sops and r1.firing_rate == r2.firing_rate
    assert r1.max_spikes_per_step == r2.max_spikes_per_step
    assert r1.spike_hist == r2.spike_hist and r1.max_n_per_layer == r2.max_n_per_layer
    assert r1.identical_at_t1 == r2.identical_at_t1 == n
    # predictions vary over images and change over t somewhere: the comparison is not vacuous
    assert len(set(r1.predictions[:, 0].tolist())) > 2
    assert bool((r1.predictions != r1.predictions[:, :1]).any())


def test_state_is_reset_between_batches():
    ann, x, y = small_steprelu_net(seed=3, n=16)
    snn = convert(ann, "steprelu", leak=0.5)
    T = 5
    both = simulate(snn, tiny_loader(x, y, batch_size=8), T, progress=False)
    second = simulate(snn, tiny_loader(x[8:], y[8:], batch_size=8), T, progress=False)
    assert torch.equal(both.predictions[8:], second.predictions)
    # direct: a second run after reset_neurons repeats the first exactly; without a reset
    # the carried residual changes the outputs (so the check above can fail)
    o1 = outputs_per_step(snn, x[:8], T)
    o2 = outputs_per_step(snn, x[:8], T)
    assert torch.equal(o1, o2)
    with torch.no_grad():
        carried = snn(x[:8])
    assert not torch.equal(carried, o1[0])


# ----------------------------------------------------------------------------- metrics

def hand_mlp() -> nn.Sequential:
    """4 -> 3 (StepReLU theta=0.5, L=4) -> 2; the first layer maps x = 1 to currents
    (0.375, 1.0, 2.5), i.e. (0.75, 2, 5) thresholds."""
    net = nn.Sequential(nn.Linear(4, 3, bias=False), StepReLU(0.5, 4, 0.0), nn.Linear(3, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[0.375, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 2.5, 0]]))
        net[2].weight.copy_(torch.tensor([[1.0, 0.5, 0.25], [0.25, 0.5, 1.0]]))
        net[2].bias.zero_()
    return net


def test_sops_macs_firing_rate_by_hand():
    """u/theta per step: (0.75, 2, 5) -> n = (0, 2, 4), r = (.75, 0, 1);
    (1.5, 2, 6) -> (1, 2, 4), r = (.5, 0, 2); (1.25, 2, 7) -> (1, 2, 4).
    Spikes per image per step: 6, 7, 7; fan-out 2 (each hidden neuron feeds 2 outputs):
    SOPs per image, cumulative: 12, 26, 40. ANN MACs 4*3 + 3*2 = 18, first layer 12."""
    ann = hand_mlp()
    snn = convert(ann, "steprelu")
    x = torch.ones(2, 4)
    res = simulate(snn, tiny_loader(x, batch_size=2), 3, ann=ann, progress=False)
    assert res.ann_macs == 18 and res.first_layer_macs == 12
    assert res.sops == [12.0, 26.0, 40.0]
    assert res.firing_rate == {"1": 40 / (3 * 3 * 2)}       # spikes / (neurons * steps * images)
    assert res.max_spikes_per_step == 4.0 and res.max_n_per_layer == {"1": 4}
    t = 3
    assert res.sops_ratio(t) == (12 * t + 40) / 18
    assert res.energy_ratio(t) == pytest.approx((E_MAC_PJ * 12 * t + E_AC_PJ * 40) / (E_MAC_PJ * 18),
                                                rel=1e-12)
    assert res.identical_at_t1 == 2


def test_macs_and_fanout_conv_and_residual_by_hand():
    """conv 1->2 3x3 on 6x6: 2*36*9 = 648 MACs; avgpool 2 -> 18 elements -> linear 18->3: 54.
    Neuron after the conv: fan-out = 54/18 = 3 per spike (through the pooling)."""
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), StepReLU(0.1, 3), nn.AvgPool2d(2),
                        nn.Flatten(), nn.Linear(18, 3))
    snn = convert(net, "steprelu")
    x = torch.randn(4, 1, 6, 6, generator=torch.Generator().manual_seed(0)) + 0.5
    res = simulate(snn, tiny_loader(x, batch_size=4), 2, progress=False)
    assert res.ann_macs == 648 + 54 and res.first_layer_macs == 648
    spikes = res.firing_rate["1"] * (2 * 36) * 2 * 4               # rate * neurons * steps * images
    assert res.sops[-1] == pytest.approx(spikes * 3 / 4, rel=1e-12)

    class Res(nn.Module):
        """act1 feeds lin2 (3 outputs) and, through the identity shortcut, act2: fan-out 3 + 1."""
        def __init__(self):
            super().__init__()
            self.lin1, self.lin2, self.head = nn.Linear(4, 3), nn.Linear(3, 3), nn.Linear(3, 2)
            self.act1, self.act2 = StepReLU(0.1, 4), StepReLU(0.1, 4)

        def forward(self, x):
            h = self.act1(self.lin1(x))
            return self.head(self.act2(self.lin2(h) + h))

    snn = convert(Res(), "steprelu")
    prof = profile_ops(snn, torch.randn(1, 4), trace(snn))
    assert prof.fanout == {"act1": 4.0, "act2": 2.0}
    assert prof.total_macs == 12 + 9 + 6


@pytest.mark.parametrize("L, phi", [(3, 0.0), (8, 0.5)])
def test_max_spikes_per_step_is_observed_max(L, phi):
    ann, x, y = small_steprelu_net(seed=4, kind="vgg", L=L, phi=phi, n=16)
    snn = convert(ann, "steprelu", leak=0.9)
    seen = []
    for _, m in annsnn.spiking_layers(snn):
        m.register_forward_hook(lambda mod, i, o: seen.append(float((o / mod.theta).round().max())))
    res = simulate(snn, tiny_loader(x, y, batch_size=16), 6, progress=False)
    assert res.max_spikes_per_step == max(seen)
    assert 1 <= res.max_spikes_per_step <= L
    # neurons per layer, from the ANN's activation outputs
    sizes = {}
    for name, m in ann.named_modules():
        if isinstance(m, StepReLU):
            m.register_forward_hook(lambda mod, i, o, name=name: sizes.__setitem__(name, o[0].numel()))
    with torch.no_grad():
        ann.eval()(x[:2])
    for name, m in annsnn.spiking_layers(snn):
        assert m.neuron_steps == sizes[name] * 6 * len(x)      # neurons x steps x images
        assert res.firing_rate[name] == m.spikes / m.neuron_steps
    assert sum(m.spikes for _, m in annsnn.spiking_layers(snn)) > 0


def test_simulate_without_ann_and_labels():
    ann, x, y = small_steprelu_net(seed=5, n=8)
    snn = convert(ann, "steprelu")
    res = simulate(snn, tiny_loader(x, y, batch_size=8), 3, progress=False)
    assert res.conv_error is None and res.identical_at_t1 is None and res.ann_acc is None
    assert res.predictions.shape == (8, 3) and len(res.acc) == 3 and len(res.sops) == 3
    with pytest.raises(ValueError):
        simulate(snn, [x], 2, progress=False)            # batches must be (images, labels)
    with pytest.raises(ValueError):
        simulate(snn, [], 2, progress=False)             # no images


def test_op_profile_is_reused_per_network_and_input_shape():
    """Repeated simulations of one SNN reuse its traced op profile (same counts); a new
    image size or an edited network is profiled anew."""
    from annsnn.simulate import _PROFILES
    torch.manual_seed(0)
    ann = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), StepReLU(0.1, 4, 0.5),
                        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3)).eval()
    snn = convert(ann, "steprelu")
    small, big = torch.rand(4, 2, 8, 8), torch.rand(4, 2, 16, 16)
    y = torch.zeros(4, dtype=torch.long)
    r1 = simulate(snn, tiny_loader(small, y, batch_size=4), 3, progress=False)
    first = _PROFILES[snn][1]
    r2 = simulate(snn, tiny_loader(small, y, batch_size=4), 3, progress=False)
    assert _PROFILES[snn][1] is first and r2.sops == r1.sops and r2.ann_macs == r1.ann_macs
    r3 = simulate(snn, tiny_loader(big, y, batch_size=4), 3, progress=False)
    assert r3.ann_macs > r1.ann_macs and _PROFILES[snn][1] is not first
    before_edit = _PROFILES[snn][1]
    snn[4] = nn.Linear(16, 3)                               # edited in place
    simulate(snn, tiny_loader(big, y, batch_size=4), 1, progress=False)
    assert _PROFILES[snn][1] is not before_edit


# ----------------------------------------------------------------------------- readout

def test_acc_and_predictions_are_the_argmax_of_the_mean_output_so_far():
    """docs/method.md#simulation: the prediction at t is the argmax of the mean classifier output over steps
    1..t. The SNN is run here step by step by hand, on the same single batch in NCHW."""
    ann, x, y = small_steprelu_net(seed=9)
    T = 8
    snn = convert(ann, "steprelu", leak=0.9)
    res = simulate(snn, tiny_loader(x, y, batch_size=len(x)), T, progress=False, channels_last=False)
    outs = outputs_per_step(snn, x, T)
    cum = torch.zeros_like(outs[0])
    for t in range(1, T + 1):
        cum = cum + outs[t - 1]
        want = (cum / t).argmax(1)
        assert torch.equal(res.predictions[:, t - 1], want), f"t = {t}"
        assert res.acc[t - 1] == int((want == y).sum()) / len(x), f"t = {t}"
    # not vacuous: the mean so far and the last step's output disagree somewhere, the
    # predictions change over t and the accuracy is neither 0 nor 1
    assert any(not torch.equal((sum(outs[:t]) / t).argmax(1), outs[t - 1].argmax(1)) for t in range(2, T + 1))
    assert bool((res.predictions != res.predictions[:, :1]).any())
    assert 0 < min(res.acc) and max(res.acc) < 1


def dyadic_conv_net(seed: int = 0):
    """Conv net on which every float32 operation is exact: weights k/8, inputs j/16, thresholds
    powers of two, leak 0.5, average pooling by 4. Any summation order, hence any memory layout,
    gives the same bits, so layouts must agree exactly."""
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), StepReLU(0.25, 8, 0.5), nn.AvgPool2d(2),
                        nn.Conv2d(6, 6, 3, padding=1), StepReLU(0.5, 4, 0.0),
                        nn.Flatten(), nn.Linear(6 * 4 * 4, 5))
    with torch.no_grad():
        for m in net:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(torch.randint(-4, 5, m.weight.shape, generator=g) / 8)
                m.bias.copy_(torch.randint(-4, 5, m.bias.shape, generator=g) / 8)
    x = torch.randint(0, 17, (24, 2, 8, 8), generator=g) / 16
    y = torch.randint(0, 5, (24,), generator=g)
    return net.eval(), x, y


def test_channels_last_equals_contiguous_beyond_t1():
    ann, x, y = dyadic_conv_net()
    T = 6
    results = {}
    for cl in (True, False):
        snn = convert(ann, "steprelu", leak=0.5)
        results[cl] = simulate(snn, tiny_loader(x, y, batch_size=8), T, ann=ann, progress=False,
                               channels_last=cl, spike_hist=True)
        assert snn[0].weight.is_contiguous(memory_format=torch.channels_last) == cl
    a, b = results[True], results[False]
    assert torch.equal(a.predictions, b.predictions)
    assert a.acc == b.acc and a.conv_error == b.conv_error and a.sops == b.sops
    assert a.firing_rate == b.firing_rate and a.spike_hist == b.spike_hist
    assert a.max_n_per_layer == b.max_n_per_layer and a.identical_at_t1 == b.identical_at_t1 == len(x)
    # not vacuous: both layers fire at several levels and the predictions move after t = 1
    assert all(sum(1 for c in h[1:] if c) >= 2 for h in a.spike_hist.values())
    assert bool((a.predictions != a.predictions[:, :1]).any()) and len(set(a.predictions[:, -1].tolist())) > 1


def bn_flip_net(n: int = 2000, k: int = 300_000):
    """Linear -> BatchNorm (running variance 1e-4) -> StepReLU (theta 0.01) -> 2 logits, the
    class saying whether the level reached k; inputs placed within 2 levels of that boundary.
    Folding the BatchNorm moves rounding, and here rounding moves whole levels."""
    theta = 0.01
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    ann = nn.Sequential(nn.Linear(4, 1), nn.BatchNorm1d(1), StepReLU(theta, 10 ** 6, 0.0), nn.Linear(1, 2))
    bn = ann[1]
    with torch.no_grad():
        bn.running_mean.fill_(0.3)
        bn.running_var.fill_(1e-4)
        bn.weight.fill_(1.3)
        bn.bias.fill_(0.2)
        ann[3].weight.copy_(torch.tensor([[1.0], [0.0]]))
        ann[3].bias.copy_(torch.tensor([-(k - 0.5) * theta, 0.0]))
    w, b = ann[0].weight.detach().double().flatten(), ann[0].bias.detach().double()
    scale = 1.3 / (1e-4 + bn.eps) ** 0.5
    xr = torch.randn(n, 4, generator=g, dtype=torch.float64)
    pre = ((xr @ w + b) - 0.3) * scale + 0.2
    target = (k + torch.rand(n, generator=g, dtype=torch.float64) * 4 - 2) * theta
    x = (xr + torch.outer((target - pre) / (w @ w * scale), w)).float()
    return ann.eval(), x


def test_identical_at_t1_is_counted_against_the_folded_ann():
    ann, x = bn_flip_net()
    y = torch.zeros(len(x), dtype=torch.long)
    with torch.no_grad():
        folded, unfolded = fold_bn(ann)(x).argmax(1), ann(x).argmax(1)
    assert int((folded != unfolded).sum()) > 0          # the two references disagree here
    snn = convert(ann, "steprelu")
    res = simulate(snn, tiny_loader(x, y, batch_size=len(x)), 2, ann=ann, progress=False)
    assert res.identical_at_t1 == len(x)
    assert torch.equal(res.ann_predictions, folded)
    assert res.ann_acc == float((folded == y).double().mean())
    assert 0 < int(folded.sum()) < len(x)


def test_fold_bn_matches_the_unfolded_relu_net_where_eps_matters():
    """Running variances of the order of BatchNorm's eps (1e-5): folding must use
    sqrt(var + eps). The real fold matches the unfolded network to float rounding (relative
    to its largest output, the exactness tolerance); a fold without eps is far off."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Flatten(), nn.Linear(4 * 6 * 6, 8), nn.BatchNorm1d(8), nn.ReLU(),
                        nn.Linear(8, 3))
    with torch.no_grad():
        for bn in (net[1], net[5]):
            c = bn.num_features
            bn.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            bn.running_var.copy_(torch.rand(c, generator=g) * 2e-5 + 1e-6)
            bn.weight.copy_(torch.rand(c, generator=g) + 0.5)
            bn.bias.copy_(torch.randn(c, generator=g) * 0.1)
    net.eval()
    x = torch.randn(16, 2, 6, 6, generator=g)
    folded = fold_bn(net)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    no_eps = copy.deepcopy(net)
    for m in no_eps.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eps = 0.0
    with torch.no_grad():
        want, got, without = net(x), folded(x), no_eps(x)
    scale = float(want.abs().max())
    assert float((got - want).abs().max()) / scale <= 1e-5
    assert float((without - want).abs().max()) / scale > 1e-2


# ----------------------------------------------------------------------------- spike counts

def test_energy_constants_are_the_45nm_figures():
    """Horowitz (45 nm): 4.6 pJ per 32-bit float MAC, 0.9 pJ per accumulate. Written as
    literals here on purpose: a test that imported them would follow any change."""
    assert E_MAC_PJ == 4.6 and E_AC_PJ == 0.9
    assert energy_pj(12.0, 40.0, 3) == 4.6 * 12.0 * 3 + 0.9 * 40.0
    assert ann_energy_pj(18.0) == 4.6 * 18.0


def test_spike_hist_by_hand():
    """hand_mlp, 2 images, 3 steps: n = (0, 2, 4), (1, 2, 4), (1, 2, 4) per image, i.e.
    neuron-steps with n = 0..4: 2, 4, 6, 0, 6 (18 = 3 neurons x 3 steps x 2 images, and
    0*2 + 1*4 + 2*6 + 4*6 = 40 spikes)."""
    ann = hand_mlp()
    snn = convert(ann, "steprelu")
    res = simulate(snn, tiny_loader(torch.ones(2, 4), batch_size=2), 3, progress=False, spike_hist=True)
    assert res.spike_hist == {"1": [2, 4, 6, 0, 6]}
    assert res.max_n_per_layer == {"1": 4}
    plain = simulate(snn, tiny_loader(torch.ones(2, 4), batch_size=2), 3, progress=False)
    assert plain.spike_hist is None and plain.max_n_per_layer == {"1": 4}
    assert plain.sops == res.sops and plain.firing_rate == res.firing_rate


@pytest.mark.parametrize("method", ["steprelu", "steprelu-single"])
def test_spike_hist_totals_and_levels_on_a_random_net(method):
    """Per layer: the histogram counts every neuron-step once, its weighted sum is the spike
    total behind the firing rate, and it equals the levels counted from the outputs."""
    ann, x, y = small_steprelu_net(seed=4, kind="vgg", L=6, phi=0.5, n=16)
    snn = convert(ann, method, leak=0.9)
    seen = {name: torch.zeros(m.max_spikes + 1, dtype=torch.long) for name, m in annsnn.spiking_layers(snn)}

    def count(mod, inputs, out, name):
        if mod.record:  # not the op profiler's pass
            seen[name] += torch.bincount((out / mod.theta).round().long().flatten(), minlength=mod.max_spikes + 1)

    for name, m in annsnn.spiking_layers(snn):
        m.register_forward_hook(functools.partial(count, name=name))
    T = 5
    res = simulate(snn, tiny_loader(x, y, batch_size=8), T, progress=False, spike_hist=True)
    for name, m in annsnn.spiking_layers(snn):
        h = res.spike_hist[name]
        assert h == seen[name].tolist()
        assert sum(h) == m.neuron_steps
        assert sum(k * c for k, c in enumerate(h)) == m.spikes
        assert res.firing_rate[name] == m.spikes / m.neuron_steps
        assert res.max_n_per_layer[name] == max(k for k, c in enumerate(h) if c)
    assert res.max_spikes_per_step == max(res.max_n_per_layer.values())
    if method == "steprelu":  # several levels in use, not only 0/1
        assert any(sum(1 for c in h[2:] if c) >= 2 for h in res.spike_hist.values())


# ----------------------------------------------------------------------------- bad data is loud

@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("with_ann", [True, False])
def test_a_non_finite_image_is_an_error_naming_it(value, with_ann):
    """One NaN image made every SOP and energy figure NaN and still counted as identical at
    t = 1; now the run stops, naming the image and its batch in the loader's order."""
    from annsnn.simulate import NonFiniteError
    ann, x, y = small_steprelu_net(seed=4, n=24)
    x = x.clone()
    x[13, 0, 2, 3] = value
    snn = convert(ann, "steprelu")
    with pytest.raises(NonFiniteError, match=r"input image for image 13 \(batch 1, loader order\); "
                                             r"1 of 24 images") as info:
        simulate(snn, tiny_loader(x, y, batch_size=8), 4, ann=ann if with_ann else None, progress=False)
    assert "\n" not in str(info.value)


def test_a_non_finite_activation_is_an_error_naming_the_image():
    """Finite images, but a weight that overflows for one image: the SNN (and ANN) outputs
    are what is caught."""
    from annsnn.simulate import NonFiniteError
    net = hand_mlp()
    with torch.no_grad():
        net[2].weight[0, 2] = 3e38        # finite, but 3e38 x (a few spikes) overflows float32
    x = torch.zeros(10, 4)
    x[6, 2] = 1.0                          # only image 6 makes the third neuron spike
    with pytest.raises(NonFiniteError, match=r"non-finite (SNN|ANN) output for image 6 \(batch 3"):
        simulate(convert(net, "steprelu"), tiny_loader(x, batch_size=2), 3, ann=net, progress=False)
    with pytest.raises(NonFiniteError, match=r"non-finite SNN output for image 6 \(batch 3"):
        simulate(convert(net, "steprelu"), tiny_loader(x, batch_size=2), 3, progress=False)


def test_finite_data_still_gives_finite_metrics():
    ann, x, y = small_steprelu_net(seed=4, n=16)
    res = simulate(convert(ann, "steprelu"), tiny_loader(x, y, batch_size=8), 4, ann=ann, progress=False)
    assert all(map(math.isfinite, res.sops + res.acc + res.conv_error + list(res.firing_rate.values())))


# ----------------------------------------------------------------------------- conversion error by depth

def test_layer_error_by_hand_on_one_neuron():
    """x = 0.7 into StepReLU(theta 0.5, L 2): the ANN gives 0.5. steprelu-single fires at
    threshold 1.0 from V0 = 0.5: outputs 1, 0, 1 -> running means 1, 0.5, 2/3, so the layer's
    error is |1 - 0.5| / 0.5 = 1 at t = 1, 0 at t = 2 and 1/3 at t = 3; steprelu is exact at t = 1."""
    lin = torch.nn.Linear(1, 1, bias=False)
    out = torch.nn.Linear(1, 2)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    ann = torch.nn.Sequential(torch.nn.Flatten(), lin, StepReLU(0.5, 2, phi=0.0), out).eval()
    loader = [(torch.full((1, 1), 0.7), torch.zeros(1, dtype=torch.long))]
    res = simulate(convert(ann, "steprelu-single"), loader, 3, ann=ann, progress=False, layer_error_ts=(1, 2, 3))
    (name, errs), = res.layer_error.items()
    assert res.layer_error_ts == [1, 2, 3] and name == "2"
    assert errs == pytest.approx([1.0, 0.0, 1 / 3], abs=1e-6)
    exact = simulate(convert(ann, "steprelu"), loader, 3, ann=ann, progress=False, layer_error_ts=(1,))
    assert exact.layer_error == {"2": [0.0]}


def test_layer_error_of_the_exact_method_is_zero_in_every_layer_at_t1():
    torch.manual_seed(3)
    from annsnn.models import build
    ann = build("cnn-small", {"name": "steprelu", "theta": 0.05, "L": 20}, 10, 1, 28, mean=[0.3], std=[0.3], width=4)
    for m in ann.modules():   # non-trivial BatchNorm statistics, so folding matters
        if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    ann.eval()
    loader = [(torch.rand(16, 1, 28, 28), torch.zeros(16, dtype=torch.long))]
    res = simulate(convert(ann, "steprelu"), loader, 4, ann=ann, progress=False, layer_error_ts=(1, 4))
    assert len(res.layer_error) == 3
    assert all(e[0] == 0.0 for e in res.layer_error.values())
    rate = simulate(convert(ann, "steprelu-single"), loader, 4, ann=ann, progress=False, layer_error_ts=(1, 4))
    assert all(e[0] > 0 for e in rate.layer_error.values())
