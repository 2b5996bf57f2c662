"""Per-channel thresholds end to end, on tiny hand-made networks (one per edge case) whose
spikes are counted by hand: channel-wise max-norm (maxnorm-channel) against layer-wise
maxnorm, linear layers, dead channels and layers, and what simulate, the metrics, the
bench's cost tables and the white-box unrolling make of a per-channel SNN."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import annsnn
from annsnn import IFNeuron, convert, get_recipe, simulate
from annsnn.attacks import UnrolledSNN
from bench import costs
from bench.report import tables
from lightning_modules.callbacks import result_record

from conftest import tiny_loader
from test_convert import N_CALIB, fold_by_hand, relu_net


def spikes_per_step(snn: nn.Module, x: torch.Tensor, T: int) -> list[torch.Tensor]:
    """The first spiking layer's spike counts n (output / theta) at each of T steps."""
    neuron = annsnn.spiking_layers(snn)[0][1]
    out = []
    h = neuron.register_forward_hook(lambda m, i, o: out.append(o / m.theta_for(o)))
    annsnn.reset_neurons(snn)
    with torch.no_grad():
        for _ in range(T):
            snn(x)
    h.remove()
    return out


def two_scale_conv() -> nn.Sequential:
    """A 1x1 conv from one input channel to two, weights 4 and 0.5 (no bias): on an input of
    ones channel 0 reaches 4, channel 1 only 0.5 -- one layer, two very different ranges."""
    net = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([4.0, 0.5]).reshape(2, 1, 1, 1))
        net[3].weight.fill_(0.25)
        net[3].bias.zero_()
    return net.eval()


def test_each_channel_gets_its_own_max_and_fires_at_its_own_rate():
    """Calibration on ones: channel maxima 4 and 0.5 (maxnorm: 4 for both). Driven by ones,
    u/theta per step is 1 in both channels: one spike per step each. Under maxnorm channel 1
    integrates 0.5/4 = 1/8 per step and fires only at t = 8; at input 1/2, per channel both
    fire at t = 2, 4, 6, 8."""
    net, ones = two_scale_conv(), torch.ones(4, 1, 2, 2)
    chan = convert(net, "maxnorm-channel", tiny_loader(ones))
    layer = convert(net, "maxnorm", tiny_loader(ones))
    assert chan[1].theta.tolist() == [4.0, 0.5] and float(layer[1].theta) == 4.0
    n = spikes_per_step(chan, ones[:1], 8)
    assert all(torch.equal(s, torch.ones(1, 2, 2, 2)) for s in n)
    m = spikes_per_step(layer, ones[:1], 8)
    assert [float(s[0, 1].sum()) for s in m] == [0.0] * 7 + [4.0]     # 4 pixels, once, at t = 8
    assert all(float(s[0, 0].sum()) == 4.0 for s in m)
    half = spikes_per_step(chan, ones[:1] / 2, 8)
    assert [float(s.sum()) for s in half] == [0.0, 8.0] * 4
    # the first step's output equals the ANN for the inputs at the channel maxima (single spike)
    annsnn.reset_neurons(chan)
    with torch.no_grad():
        assert torch.equal(chan(ones[:1]), net(ones[:1]))


def test_linear_layer_gets_one_threshold_per_neuron():
    """After a linear layer ([N, C]) a 'channel' is a neuron: thresholds 1, 2, 3 for a
    Linear(1, 3) with weights 1, 2, 3 calibrated on x = 1; the SNN at t = 1 on x = 1 is the ANN."""
    net = nn.Sequential(nn.Linear(1, 3, bias=False), nn.ReLU(), nn.Linear(3, 1, bias=False)).eval()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0], [2.0], [3.0]]))
        net[2].weight.fill_(1.0)
    snn = convert(net, "maxnorm-channel", tiny_loader(torch.ones(8, 1)))
    assert snn[1].theta.tolist() == [1.0, 2.0, 3.0]
    n = spikes_per_step(snn, torch.tensor([[1.0], [0.5]]), 4)
    assert [s.tolist() for s in n] == [[[1, 1, 1], [0, 0, 0]], [[1, 1, 1], [1, 1, 1]]] * 2
    annsnn.reset_neurons(snn)
    with torch.no_grad():
        assert float(snn(torch.ones(1, 1))) == 6.0


def test_a_dead_channel_gets_the_layer_threshold_and_a_dead_layer_one():
    """Channel 1's weight is negative: it never fires on positive calibration inputs, so its
    threshold is the layer's (the largest channel max, 4), not 0; an input that drives it to
    4 then gives one spike. A layer that never fires gets 1.0 and a warning, as maxnorm."""
    net = two_scale_conv()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([4.0, -0.5]).reshape(2, 1, 1, 1))
    snn = convert(net, "maxnorm-channel", tiny_loader(torch.ones(4, 1, 2, 2)))
    assert snn[1].theta.tolist() == [4.0, 4.0]
    n = spikes_per_step(snn, torch.full((1, 1, 2, 2), -8.0), 1)   # channel 1 sees +4
    assert n[0][0, 1].tolist() == [[1, 1], [1, 1]] and float(n[0][0, 0].sum()) == 0
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([-4.0, -0.5]).reshape(2, 1, 1, 1))
    with pytest.warns(UserWarning, match="never fired"):
        dead = convert(net, "maxnorm-channel", tiny_loader(torch.ones(4, 1, 2, 2)))
    assert dead[1].theta.tolist() == [1.0, 1.0]


@pytest.mark.parametrize("batch_size", [7, 64])
def test_thresholds_are_the_channel_maxima_of_the_folded_net(batch_size):
    """On test_convert's conv/BN/linear net (BatchNorm folded first, as convert does): each
    neuron's thresholds are numpy's per-channel maxima of its ReLU's outputs, whatever the
    batch size, except that a channel that never fired gets the layer's largest (maxnorm's
    layer threshold); some channels lie below it."""
    net = relu_net()
    x = torch.randn(N_CALIB, 1, 12, 12, generator=torch.Generator().manual_seed(5))
    folded, outs = fold_by_hand(net), {}
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: outs.__setitem__(n, o.numpy()))
             for n, m in folded.named_modules() if isinstance(m, nn.ReLU)]
    with torch.no_grad():
        folded(x)
    for h in hooks:
        h.remove()
    loader = tiny_loader(x, batch_size=batch_size)
    chan = dict(annsnn.spiking_layers(convert(net, "maxnorm-channel", loader)))
    layer = dict(annsnn.spiking_layers(convert(net, "maxnorm", loader)))
    assert sorted(chan) == sorted(outs) == ["11", "2", "6"]
    dead = 0
    for name, o in outs.items():
        want = o.max(axis=tuple(d for d in range(o.ndim) if d != 1))
        dead += int((want == 0).sum())
        want = np.where(want > 0, want, want.max())   # a channel that never fired: the layer's
        assert np.array_equal(chan[name].theta.numpy(), want), name
        assert float(chan[name].theta.max()) == float(layer[name].theta)
        assert float(chan[name].theta.min()) < float(layer[name].theta)
        assert (chan[name].max_spikes, chan[name].phi) == (1, 0.0)
    assert dead == 3          # three hidden neurons of layer 11 never fire: the rule is exercised


def test_equal_channel_thresholds_are_the_one_threshold_neuron():
    """A per-channel SNN whose channels all carry maxnorm's layer threshold simulates to the
    same result as maxnorm's SNN, metric for metric (accuracy, predictions, SOPs, firing
    rates, spike histograms, conversion error), and the bench's cost columns read it alike."""
    net = relu_net()
    x = torch.randn(64, 1, 12, 12, generator=torch.Generator().manual_seed(7))
    y = torch.randint(0, 10, (64,), generator=torch.Generator().manual_seed(8))
    loader = tiny_loader(x, y, batch_size=32)
    layer = convert(net, "maxnorm", loader)
    spread = convert(net, "maxnorm", loader)
    for name, m in annsnn.spiking_layers(spread):
        c = {"2": 4, "6": 8, "11": 16}[name]
        setattr(spread, name, IFNeuron(m.theta.expand(c), max_spikes=1))
    assert all(m.per_channel for _, m in annsnn.spiking_layers(spread))
    a = simulate(layer, loader, 6, ann=net, progress=False, spike_hist=True)
    b = simulate(spread, loader, 6, ann=net, progress=False, spike_hist=True)
    assert torch.equal(a.predictions, b.predictions) and a.acc == b.acc
    assert (a.sops, a.firing_rate, a.spike_hist, a.max_n_per_layer, a.conv_error) == \
        (b.sops, b.firing_rate, b.spike_hist, b.max_n_per_layer, b.conv_error)
    assert a.sops[-1] > 0
    ra, rb = (result_record("maxnorm", 1.0, r, None) for r in (a, b))
    ra["ann_acc"] = rb["ann_acc"] = 0.0                # every t is an operating point
    assert costs.substeps(ra, 3) == costs.substeps(rb, 3) == (3, 9)
    assert tables.operating_point_table([(("maxnorm", 1.0), [ra])]) == \
        tables.operating_point_table([(("maxnorm", 1.0), [rb])])


def test_simulate_counts_per_channel_spikes_by_hand():
    """two_scale_conv under maxnorm-channel on ones, 3 steps, 2 images: 2 channels x 4 pixels
    = 8 neurons, each spiking at every step (u/theta_c = 1); each spike reaches the 2 outputs
    (fan-out 2), so SOPs per image are 16, 32, 48 cumulative; firing rate 1; the output
    n * theta_c is the ANN's activation, so the conversion error is 0 at every t."""
    net, ones = two_scale_conv(), torch.ones(2, 1, 2, 2)
    snn = convert(net, "maxnorm-channel", tiny_loader(ones))
    res = simulate(snn, tiny_loader(ones, torch.zeros(2, dtype=torch.long), batch_size=2), 3,
                   ann=net, progress=False)
    assert res.sops == [16.0, 32.0, 48.0]
    assert res.firing_rate == {"1": 1.0} and res.max_n_per_layer == {"1": 1}
    assert res.conv_error == [0.0, 0.0, 0.0] and res.identical_at_t1 == 2


def test_white_box_unrolling_sees_the_per_channel_neuron():
    """UnrolledSNN (attacks through time) runs the surrogate path: the same forward values
    as the plain simulation, and a gradient that reaches the input."""
    net = relu_net()
    x = torch.randn(16, 1, 12, 12, generator=torch.Generator().manual_seed(9))
    snn = convert(net, "maxnorm-channel", tiny_loader(x))
    annsnn.reset_neurons(snn)
    with torch.no_grad():
        want = sum(snn(x) for _ in range(4)) / 4
    xg = x.clone().requires_grad_(True)
    got = UnrolledSNN(snn, 4)(xg)
    assert torch.equal(got.detach(), want)
    got.sum().backward()
    assert float(xg.grad.abs().sum()) > 0


def test_maxnorm_channel_is_maxnorm_but_for_the_threshold_rule():
    mc, mx = get_recipe("maxnorm-channel"), get_recipe("maxnorm")
    assert (mc.activation, mc.needs_calibration, mc.exact_at_t1) == (mx.activation, True, False)
    assert "per-channel max" in mc.description and "reset by subtraction" in mc.description
    n = mc.neuron(nn.ReLU(), torch.tensor([1.0, 2.0]), 0.9, "linear")
    assert (n.max_spikes, n.phi, n.leak, n.leak_mode, n.theta.tolist()) == (1, 0.0, 0.9, "linear", [1.0, 2.0])
