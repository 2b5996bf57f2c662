"""LightningDataModule for the benchmark datasets: splits, in-memory batches, loaders.

Why it looks like this:

* Small datasets (MNIST, Fashion-MNIST, CIFAR-10/100, cifar10-jpeg) are held in
  memory as uint8 tensors, and a whole batch is gathered and augmented at once,
  because PIL transforms per image dominate the epoch time of small models on CPU.
* That batch work is NumPy on the calling thread. As torch ops, these
  sub-millisecond gathers fan out over the intra-op threads, and on a busy
  2-core machine the threads waiting for each other made a Fashion-MNIST epoch
  take ~10 s instead of ~0.2 s; NumPy needs no thread setting around each batch.
* Images come out as float in [0, 1], NOT normalised: every model carries its
  own normalisation layer, so the converted SNN sees the same input as the ANN.
* This is the top of a straight data path: the DataModule calls only
  ``data_decode`` (once, in prepare_data, or in setup on a process that did not
  prepare), which asks ``data_sources`` once where the data are and decodes them.
  The folder the user named is checked at construction (``data_dir``), so a typo
  fails before anything is downloaded or trained. Facts about the datasets
  (classes, size, mean/std) are ``annsnn.datasets``, re-exported here.
"""

from __future__ import annotations

import os
from typing import Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, random_split

from annsnn.datasets import CIFAR10_CLASSES, DATASETS, DatasetInfo
from .data_decode import find_imagenet, load_imagenet, load_in_memory
from .data_dir import DATA_ENV_VAR, DataUnavailableError, given_data_dir

__all__ = [
    "DatasetInfo",
    "DATASETS",
    "CIFAR10_CLASSES",
    "DATA_ENV_VAR",
    "DataUnavailableError",
    "AnnSnnDataModule",
    "InMemoryImages",
    "BatchTransform",
    "build_datamodule",
    "load_in_memory",
    "find_imagenet",
    "split_indices",
]

TEST_SUBSET_SEED = 0  # fixed, so every run's test subset is the same images
CROP_FLIP = ("cifar10", "cifar100", "cifar10-jpeg")  # trained with random crop (padding 4) + flip


# --------------------------------------------------------------------------
# In-memory datasets and batch-level augmentation
# --------------------------------------------------------------------------


class InMemoryImages(Dataset):
    """A view (by index) of uint8 images held in memory.

    ``ds[i]`` gives a float [C, H, W] image in [0, 1] and an int64 label.
    ``__getitems__`` (used by DataLoader when it batches) gathers a whole batch
    as uint8 with one NumPy indexing op; :class:`BatchTransform` then augments
    and converts it, which is far cheaper than per-image transforms.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor | None = None):
        self.images = images
        self.labels = labels
        self.indices = torch.arange(len(images)) if indices is None else torch.as_tensor(indices, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        j = self.indices[i]
        return self.images[j].float().div_(255), self.labels[j]

    def __getitems__(self, idx: Sequence[int]):
        j = self.indices.numpy()[np.asarray(idx, dtype=np.int64)]
        return torch.from_numpy(self.images.numpy()[j]), torch.from_numpy(self.labels.numpy()[j])


class BatchTransform:
    """collate_fn: optional random crop (zero padding) + horizontal flip of a whole
    batch, then uint8 -> float in [0, 1].

    Equivalent to torchvision's RandomCrop(32, padding=4) + RandomHorizontalFlip
    per image, but on the whole uint8 batch at once (about 1 ms for 128 CIFAR
    images instead of tens of ms with PIL). Draws from torch's global RNG, so
    seed_everything and DataLoader worker seeding apply.
    """

    def __init__(self, crop_padding: int = 0, flip: bool = False):
        self.crop_padding = crop_padding
        self.flip = flip

    def __call__(self, batch):
        if isinstance(batch, tuple) and len(batch) == 2 and torch.is_tensor(batch[0]):
            x, y = batch
        else:  # list of samples (e.g. the dataset was wrapped in something without __getitems__)
            x = torch.stack([b[0] for b in batch])
            y = torch.as_tensor([int(b[1]) for b in batch], dtype=torch.int64)
        if self.crop_padding or self.flip:
            x = self.crop_flip(x, self.crop_padding, self.flip)
        if x.dtype == torch.uint8:  # same float32 quotient as x.float() / 255
            x = torch.from_numpy(np.divide(x.numpy(), np.float32(255), dtype=np.float32))
        return x, y

    @staticmethod
    def crop_flip(x: torch.Tensor, pad: int, flip: bool) -> torch.Tensor:
        """Per-image random crop of the zero-padded batch and random horizontal flip."""
        b, c, h, w = x.shape
        oy = torch.randint(0, 2 * pad + 1, (b,)).tolist()
        ox = torch.randint(0, 2 * pad + 1, (b,)).tolist()
        flipped = (torch.rand(b) < 0.5).tolist() if flip else [False] * b
        padded = np.pad(x.numpy(), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        out = np.empty_like(x.numpy())
        for i in range(b):
            window = padded[i, :, oy[i] : oy[i] + h, ox[i] : ox[i] + w]
            out[i] = window[..., ::-1] if flipped[i] else window
        return torch.from_numpy(out)


def _imagenet_transforms():
    from torchvision.transforms import v2

    to_float = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    train = v2.Compose([v2.RandomResizedCrop(224, antialias=True), v2.RandomHorizontalFlip(), *to_float])
    evaluation = v2.Compose([v2.Resize(256, antialias=True), v2.CenterCrop(224), *to_float])
    return train, evaluation


# --------------------------------------------------------------------------
# The DataModule
# --------------------------------------------------------------------------


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) indices into the official train set, by ``random_split`` with a seeded
    generator: val is the head of ``randperm(n)``, the very split the committed nets were
    trained on (tests/test_data.py checks that it stays so)."""
    n_val = int(round(val_fraction * n))
    val, train = random_split(range(n), [n_val, n - n_val], generator=torch.Generator().manual_seed(seed))
    return torch.as_tensor(train.indices, dtype=torch.int64), torch.as_tensor(val.indices, dtype=torch.int64)


class AnnSnnDataModule(L.LightningDataModule):
    """Train/val/test loaders plus a fixed calibration loader for conversion.

    * val: ``val_fraction`` of the official train set (seeded), never augmented.
    * test: the official test set, unshuffled; ``test_subset=N`` keeps the first N
      of a fixed random order (the same images in every run).
    * calib: ``calib_size`` images of the *training* part, unaugmented and
      unshuffled, so threshold/normalisation statistics never see val or test.
    """

    def __init__(
        self,
        name: str,
        data_dir: str | os.PathLike | None = None,
        batch_size: int = 128,
        val_fraction: float = 0.1,
        seed: int = 0,
        num_workers: int = 0,
        calib_size: int = 1000,
        eval_batch_size: int | None = None,
        test_subset: int | None = None,
    ):
        super().__init__()
        if name not in DATASETS:
            raise ValueError(f"unknown dataset '{name}'; valid names: {', '.join(sorted(DATASETS))}")
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if batch_size < 1 or (eval_batch_size is not None and eval_batch_size < 1):
            raise ValueError("batch sizes must be >= 1")
        if calib_size < 0 or (test_subset is not None and test_subset < 1):
            raise ValueError("calib_size must be >= 0 and test_subset None or >= 1")
        self.name = name
        self.info = DATASETS[name]
        self.data_dir = given_data_dir(data_dir)  # a missing folder fails here, before any training
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.val_fraction = val_fraction
        self.seed = seed
        self.num_workers = num_workers
        self.calib_size = calib_size
        self.test_subset = test_subset
        self._data: dict | None = None
        self._ready = False

    # -- Lightning hooks ---------------------------------------------------

    def prepare_data(self) -> None:
        """Find/download/decode once (Lightning runs this on one process per node)."""
        self._data = self._load()

    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        if self._data is None:  # a process that did not prepare (the decoded cache is there by now)
            self._data = self._load()
        if self.name == "imagenet":
            self._setup_imagenet(self._data)
        else:
            self._setup_in_memory(self._data)
        self._ready = True

    def _load(self) -> dict:
        if self.name == "imagenet":
            return load_imagenet(self.data_dir, *_imagenet_transforms())
        return load_in_memory(self.name, self.data_dir)

    def _indices(self, n_train: int, n_test: int) -> None:
        self.train_indices, self.val_indices = split_indices(n_train, self.val_fraction, self.seed)
        # The training part is already in seeded-random order: its head is a fixed random subset.
        self.calib_indices = self.train_indices[: self.calib_size]
        if self.test_subset is None:
            self.test_indices = torch.arange(n_test)
        else:
            g = torch.Generator().manual_seed(TEST_SUBSET_SEED)
            self.test_indices = torch.randperm(n_test, generator=g)[: self.test_subset]

    def _setup_in_memory(self, d: dict) -> None:
        self.source = d.get("source")
        self.classes = list(d["classes"])
        tx, ty, vx, vy = d["train_x"], d["train_y"], d["test_x"], d["test_y"]
        self._indices(len(tx), len(vx))
        self.train_set = InMemoryImages(tx, ty, self.train_indices)
        self.val_set = InMemoryImages(tx, ty, self.val_indices)
        self.calib_set = InMemoryImages(tx, ty, self.calib_indices)
        self.test_set = InMemoryImages(vx, vy, self.test_indices)
        if self.name in CROP_FLIP:
            self._train_collate = BatchTransform(crop_padding=4, flip=True)
        else:
            self._train_collate = BatchTransform()
        self._eval_collate = BatchTransform()

    def _setup_imagenet(self, d: dict) -> None:
        self.source = d["source"]
        self.classes = d["classes"]
        self._indices(len(d["train"]), len(d["test"]))
        self.train_set = Subset(d["train"], self.train_indices.tolist())
        self.val_set = Subset(d["train_eval"], self.val_indices.tolist())
        self.calib_set = Subset(d["train_eval"], self.calib_indices.tolist())
        self.test_set = Subset(d["test"], self.test_indices.tolist())
        self._train_collate = self._eval_collate = None  # default collate

    # -- loaders -------------------------------------------------------------

    def _loader(self, ds: Dataset, batch_size: int, shuffle: bool, collate) -> DataLoader:
        return DataLoader(
            ds,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=collate,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, True, self._train_collate)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.eval_batch_size, False, self._eval_collate)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_batch_size, False, self._eval_collate)

    def calib_dataloader(self) -> DataLoader:
        return self._loader(self.calib_set, self.eval_batch_size, False, self._eval_collate)


def build_datamodule(
    name: str,
    data_dir: str | os.PathLike | None = None,
    batch_size: int = 128,
    val_fraction: float = 0.1,
    seed: int = 0,
    num_workers: int = 0,
    calib_size: int = 1000,
    eval_batch_size: int | None = None,
    test_subset: int | None = None,
) -> AnnSnnDataModule:
    """The datamodule for a dataset name (see DATASETS); data is found lazily in prepare_data/setup."""
    return AnnSnnDataModule(
        name,
        data_dir=data_dir,
        batch_size=batch_size,
        val_fraction=val_fraction,
        seed=seed,
        num_workers=num_workers,
        calib_size=calib_size,
        eval_batch_size=eval_batch_size,
        test_subset=test_subset,
    )
