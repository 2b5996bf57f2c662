"""The model zoo: shapes, width multipliers, and the normalisation layer first."""
import pytest
import torch
from torch import nn

from annsnn import convert, fold_bn, reset_neurons, simulate, spiking_layers
from annsnn.models import ARCHITECTURES, VGG_CPU_DEEP_CFG, Normalize, Residual, build

from conftest import fit_thresholds, randomize_bn, tiny_loader


def test_resnet_width_multiplier_scales_every_stage():
    net = build("resnet20", "relu", 10, 3, 32, width=0.5)
    convs = [m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert sorted(set(convs)) == [8, 16, 32]
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_model_starts_with_its_normalisation(arch):
    c, size = (1, 28) if arch == "cnn-small" else (3, 32)
    net = build(arch, "relu", 7, c, size, mean=[0.5] * c, std=[0.25] * c)
    first = next(m for m in net.modules() if not list(m.children()))
    assert isinstance(first, Normalize)
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AdaptiveMaxPool2d)) for m in net.modules())
    assert net.eval()(torch.rand(2, c, size, size)).shape == (2, 7)


def test_unknown_architecture_lists_valid_ones():
    with pytest.raises(ValueError, match="resnet20"):
        build("resnet50")


def test_vgg_cpu_pools_before_the_activation_where_cfg_says_and_checks_its_cfg():
    net = build("vgg-cpu", "relu", 10, 3, 32, cfg=[8, "P", 16, 16, "P", 32])
    mods = list(net)
    acts = [i for i, m in enumerate(mods) if isinstance(m, nn.ReLU)]
    pooled = [isinstance(mods[i - 2], nn.AvgPool2d) and isinstance(mods[i - 1], nn.BatchNorm2d)
              for i in acts]
    assert pooled == [True, False, True, False]
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="divisible by 4"):
        build("vgg-cpu", "relu", 10, 3, 30, cfg=[8, "P", 16, "P"])
    with pytest.raises(ValueError, match="conv widths"):
        build("vgg-cpu", "relu", 10, 3, 32, cfg=["P", 8])


@pytest.mark.parametrize("kw", [dict(mean=[0.5, 0.5, 0.5]), dict(std=[0.25, 0.25, 0.25])])
def test_mean_without_std_or_std_without_mean_is_a_clear_error(kw):
    with pytest.raises(ValueError, match="both mean and std") as e:
        build("resnet20", "relu", 10, 3, 32, **kw)
    assert type(e.value) is ValueError


def test_vgg_cpu_residual_blocks_check_their_cfg():
    net = build("vgg-cpu", "relu", 10, 3, 32, cfg=[8, "P", "R", 16, "P", "R", "R"])
    blocks = [m for m in net if isinstance(m, Residual)]
    assert len(blocks) == 3
    # each block starts as act(x): its body's last BatchNorm weight is 0
    assert all(not b.body[-1][1].weight.any() for b in blocks)
    assert sum(isinstance(m, nn.ReLU) for m in net.modules()) == 2 + 3 * 2
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    for bad in (["R", 8], [8, "R", "P"]):
        with pytest.raises(ValueError, match="residual"):
            build("vgg-cpu", "relu", 10, 3, 32, cfg=bad)


def test_deep_vgg_cpu_has_ten_spiking_layers_and_converts_exactly_at_t1():
    """The deep CPU net (cpu-cifar10-deep preset) with StepReLU and random weights: at least
    ten spiking layers, and its SNN reproduces the BatchNorm-folded ANN at t = 1."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    ann = build("vgg-cpu", {"name": "steprelu", "theta": 1.0, "L": 20, "phi": 0.0}, 10, 3, 32,
                mean=[0.5] * 3, std=[0.25] * 3, cfg=VGG_CPU_DEEP_CFG)
    x = torch.rand(4, 3, 32, 32, generator=gen)
    randomize_bn(ann, gen, x, train_passes=2)
    assert fit_thresholds(ann, x, gen) == 0, "a dead layer would make the test vacuous"
    snn = convert(ann, "steprelu")
    assert len(spiking_layers(snn)) >= 10
    ref = fold_bn(ann)
    with torch.no_grad():
        reset_neurons(snn)
        assert torch.equal(snn(x), ref(x))
    y = torch.arange(4)
    res = simulate(snn, tiny_loader(x, y, batch_size=4), 1, ann=ann, progress=False)
    assert res.identical_at_t1 == 4 and res.conv_error[0] == 0.0
