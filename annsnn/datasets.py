"""Facts about the benchmark datasets: classes, channels, image size, mean/std.

Why here: models, presets and studies need these numbers without loading any
data, and without importing Lightning (the data loaders live in
``lightning_modules.data``). Plain Python, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DatasetInfo", "DATASETS", "CIFAR10_CLASSES"]


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset (mean/std for its own
    normalisation layer; these are per-channel statistics of the train set)."""

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple
    std: tuple


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist", 10, 1, 28, (0.1307,), (0.3081,)),
    "fashion-mnist": DatasetInfo("fashion-mnist", 10, 1, 28, (0.2860,), (0.3530,)),
    "cifar10": DatasetInfo(
        "cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    ),
    "cifar100": DatasetInfo(
        "cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
    ),
    # Lossy JPEG copy of CIFAR-10 (see shared/data/README.md); never call it cifar10.
    "cifar10-jpeg": DatasetInfo(
        "cifar10-jpeg", 10, 3, 32, (0.4913, 0.4821, 0.4465), (0.2452, 0.2428, 0.2606)
    ),
    "imagenet": DatasetInfo(
        "imagenet", 1000, 3, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    ),
}

# CIFAR-10's label order, which is also the alphabetical order of the class
# folders of the JPEG copy (ImageFolder numbers classes alphabetically).
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
