"""Networks meant for conversion: average pooling only, activation as an argument.

Every model starts with its dataset's normalisation layer, so it takes pixels in
[0, 1] and noise or attacks can be applied in pixel space. ``build`` is the one
entry point; the activation is given as a name (``relu``/``qcfs``/``steprelu``),
a dict of knobs with a ``name`` key, or a zero-argument factory.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from .activations import make_activation

ARCHITECTURES = ("cnn-small", "vgg-cpu", "vgg16", "resnet18", "resnet20", "resnet34")


class Normalize(nn.Module):
    """(x - mean) / std per channel, the first layer of every model."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


def _factory(activation) -> Callable[[], nn.Module]:
    if callable(activation) and not isinstance(activation, (str, dict)):
        return activation
    return lambda: make_activation(activation)


def conv_bn(cin, cout, k=3, stride=1, padding=None):
    padding = k // 2 if padding is None else padding
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, padding, bias=False), nn.BatchNorm2d(cout))


class CNNSmall(nn.Sequential):
    """Two conv blocks + one hidden linear layer for 28x28 grey images (cheap on CPU).

    Each block pools before its activation (conv-BN-avgpool-act): pooling is linear,
    so conversion is unaffected, and the spiking layers hold 4x fewer neurons, which
    is what a T-step simulation on a CPU pays for.
    """

    def __init__(self, act, num_classes=10, in_channels=1, image_size=28, width=32, norm=None):
        w = width
        feat = image_size // 4
        super().__init__(
            norm or nn.Identity(),
            conv_bn(in_channels, w), nn.AvgPool2d(2), act(),
            conv_bn(w, 2 * w), nn.AvgPool2d(2), act(),
            nn.Flatten(),
            nn.Linear(2 * w * feat * feat, 128, bias=False), nn.BatchNorm1d(128), act(),
            nn.Linear(128, num_classes),
        )


VGG_CPU_CFG = (48, "P", 96, "P", 192, "P", 384, "P")
VGG_CPU_DEEP_CFG = (48, "P", "R", 96, "P", "R", 192, "P", "R", 384, "P", "R")


class Residual(nn.Module):
    """x + body(x): the addition is linear, so it survives conversion unchanged."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x):
        return x + self.body(x)


class VGGCPU(nn.Sequential):
    """VGG-style net for 32x32 colour images on a CPU: conv-BN-act and conv-avgpool-BN-act
    blocks, then one linear layer. ``cfg`` lists conv widths; a ``"P"`` after a width
    pools that block (2x2 average) before its BatchNorm and activation.

    Made for a CPU that pays for a T-step simulation in dense MACs: the first block
    pools at once, so every simulated 3x3 convolution runs at 16 px or less (the first
    block's current is static and computed once); extra depth, if wanted, is cheapest at
    4 and 2 px. Pooling before BatchNorm normalises 4x fewer values (BatchNorm was a
    third of a bf16 training step); both are linear, so conversion stays exact, with
    the BatchNorm kept as a per-channel affine layer of the SNN instead of folded.
    Wide channels use the CPU's matrix units far better than ResNet-20's 16-32-64
    (measurements in the cpu-cifar10 preset's ``why``).

    An ``"R"`` after a width (or after another ``"R"``) adds a residual block at that
    width: act(x + conv-BN-act-conv-BN(x)), two spiking layers for two convolutions at
    the current side, its last BatchNorm weight starting at 0 so that the block starts
    as act(x). ``VGG_CPU_DEEP_CFG`` uses them for depth: one block after each of the
    four pooled convolutions gives 12 spiking layers whose convolutions run at 16, 8, 4
    and 2 px, each of 5-11 M MACs (76 M per image, about 2.3x the 4-layer net), so a
    32-step simulation stays affordable. The identity path lets such a net train in a
    dozen epochs (the same 12 layers without it trailed after one epoch), and the zero
    start is what lets StepReLU's fixed range [0, L*theta] train in that time: started
    with every BatchNorm weight at 1, 12-26 % of the inputs of most of its activations
    lay above the range, where the clamp passes no gradient, and 4 epochs reached about
    half the ReLU net's validation accuracy (measurements in the cpu-cifar10-deep
    preset's ``why``). The addition is linear, so conversion is as exact as for the
    plain net.
    """

    def __init__(self, act, num_classes=10, in_channels=3, image_size=32,
                 cfg=VGG_CPU_CFG, norm=None):
        cfg = list(cfg)
        pools = cfg.count("P")
        if (not cfg or cfg[0] in ("P", "R")
                or any(b == "P" and a in ("P", "R") for a, b in zip(cfg, cfg[1:]))):
            raise ValueError("cfg must list conv widths, each optionally followed by 'P', "
                             f"with 'R' (a residual block) after a width; got {cfg}")
        if image_size % 2 ** pools:
            raise ValueError(f"vgg-cpu with {pools} poolings needs an image side divisible by "
                             f"{2 ** pools}, got {image_size}")
        layers, c = [norm or nn.Identity()], in_channels
        for i, w in enumerate(cfg):
            if w == "P":
                continue
            if w == "R":
                body = nn.Sequential(conv_bn(c, c), act(), conv_bn(c, c))
                nn.init.zeros_(body[-1][1].weight)   # the block starts as act(x)
                layers += [Residual(body), act()]
                continue
            if i + 1 < len(cfg) and cfg[i + 1] == "P":  # pool, then normalise 4x fewer values
                layers += [nn.Conv2d(c, int(w), 3, 1, 1, bias=False), nn.AvgPool2d(2),
                           nn.BatchNorm2d(int(w))]
            else:
                layers.append(conv_bn(c, int(w)))
            layers.append(act())
            c = int(w)
        side = image_size // 2 ** pools
        super().__init__(*layers, nn.Flatten(), nn.Linear(c * side * side, num_classes))


VGG16_CFG = (64, 64, "P", 128, 128, "P", 256, 256, 256, "P", 512, 512, 512, "P", 512, 512, 512, "P")


class VGG16(nn.Module):
    """VGG-16 with BatchNorm and average pooling (as in QCFS / StepReLU experiments)."""

    def __init__(self, act, num_classes=10, in_channels=3, image_size=32, norm=None, hidden=4096):
        super().__init__()
        layers, c = [], in_channels
        for v in VGG16_CFG:
            if v == "P":
                layers.append(nn.AvgPool2d(2))
            else:
                layers += [conv_bn(c, v), act()]
                c = v
        self.norm = norm or nn.Identity()
        self.features = nn.Sequential(*layers)
        side = image_size // 32
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(512 * side * side, hidden), act(),
            nn.Linear(hidden, hidden), act(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(self.norm(x)))


class BasicBlock(nn.Module):
    """conv-bn-act-conv-bn + shortcut, then act (the addition survives conversion unchanged)."""

    def __init__(self, act, cin, cout, stride):
        super().__init__()
        self.conv1 = conv_bn(cin, cout, 3, stride)
        self.act1 = act()
        self.conv2 = conv_bn(cout, cout, 3, 1)
        self.shortcut = (conv_bn(cin, cout, 1, stride, 0) if stride != 1 or cin != cout
                         else nn.Identity())
        self.act2 = act()

    def forward(self, x):
        return self.act2(self.conv2(self.act1(self.conv1(x))) + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet with a CIFAR stem (3x3 conv) below 64 px, else an ImageNet stem whose
    max pooling is replaced by average pooling."""

    def __init__(self, act, blocks, widths, num_classes=10, in_channels=3, image_size=32, norm=None):
        super().__init__()
        self.norm = norm or nn.Identity()
        if image_size >= 64:
            self.stem = nn.Sequential(conv_bn(in_channels, widths[0], 7, 2, 3), act(),
                                      nn.AvgPool2d(3, 2, 1))
        else:
            self.stem = nn.Sequential(conv_bn(in_channels, widths[0], 3, 1), act())
        stages, c = [], widths[0]
        for i, (n, w) in enumerate(zip(blocks, widths)):
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                stages.append(BasicBlock(act, c, w, stride))
                c = w
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(c, num_classes))

    def forward(self, x):
        return self.fc(self.pool(self.layers(self.stem(self.norm(x)))))


def build(arch: str, activation="relu", num_classes: int = 10, in_channels: int = 3,
          image_size: int = 32, mean: Sequence[float] | None = None,
          std: Sequence[float] | None = None, **kwargs) -> nn.Module:
    """Build ``arch`` with ``activation`` everywhere; mean/std set the input normalisation
    (omitted: identity, i.e. the model expects already-normalised inputs)."""
    if (mean is None) != (std is None):  # before Normalize, which would fail on a None first
        raise ValueError("give both mean and std, or neither")
    act = _factory(activation)
    norm = Normalize(mean, std) if mean is not None else None
    common = dict(num_classes=num_classes, in_channels=in_channels, image_size=image_size, norm=norm)
    if arch == "cnn-small":
        return CNNSmall(act, **common, **kwargs)
    if arch == "vgg-cpu":
        return VGGCPU(act, **common, **kwargs)
    if arch == "vgg16":
        return VGG16(act, **common, **kwargs)
    resnets = {"resnet18": ((2, 2, 2, 2), (64, 128, 256, 512)),
               "resnet34": ((3, 4, 6, 3), (64, 128, 256, 512)),
               "resnet20": ((3, 3, 3), (16, 32, 64))}
    if arch in resnets:
        blocks, widths = resnets[arch]
        if "width" in kwargs:  # width multiplier, e.g. 0.5 for a half-width network
            scale = kwargs.pop("width")
            widths = tuple(max(1, int(w * scale)) for w in widths)
        return ResNet(act, blocks, widths, **common, **kwargs)
    raise ValueError(f"unknown architecture {arch!r}; valid: {', '.join(ARCHITECTURES)}")
