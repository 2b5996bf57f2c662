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


def test_vgg5_pools_before_every_activation_and_refuses_odd_sides():
    net = build("vgg5", "relu", 10, 3, 32, widths=(8, 16, 32, 64))
    mods = list(net)
    acts = [i for i, m in enumerate(mods) if isinstance(m, nn.ReLU)]
    assert len(acts) == 4 and all(isinstance(mods[i - 1], nn.AvgPool2d) for i in acts)
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="divisible by 16"):
        build("vgg5", "relu", 10, 3, 28)
