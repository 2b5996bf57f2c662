"""The model zoo: shapes, width multipliers, and the normalisation layer first."""
import pytest
import torch
from torch import nn

from annsnn.models import ARCHITECTURES, Normalize, build


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
