"""Tiny stand-ins for the paper presets' datasets, in the on-disk formats the data layer reads.

Why: the paper presets (CIFAR-10/100, ImageNet) must be shown to start in CI, where the
real data is absent. So the fakes use the real formats, not a shortcut around the readers:

* CIFAR-10 / CIFAR-100: torchvision's ``cifar-10-batches-py`` / ``cifar-100-python``
  pickles, written the way the originals were (Python 2 pickles, so both
  ``encoding="bytes"`` and torchvision's ``encoding="latin1"`` read them).
* ImageNet: ``imagenet/{train,val}/<wnid>/*.JPEG`` written with PIL, in odd sizes so the
  resize/crop pipeline does real work.
* MNIST-format datasets (docs/extending.md's KMNIST): four gzipped IDX files.

torchvision's CIFAR readers check each file's md5 against the real dataset's, which a fake
cannot match. ``trust_fake_cifar`` clears those checksums in the calling process only; run
as a script, this file does that and then runs ``python -m bench`` with its arguments
(Lightning's DDP launcher re-runs the same script, so every rank gets the same treatment).
"""
from __future__ import annotations

import gzip
import pickle
import struct
import sys
from pathlib import Path

import numpy as np

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]


class _Py2Pickler(pickle._Pickler):
    """Pickles ``str`` and ``bytes`` (numpy's raw array data) as Python 2 byte strings, like
    the original CIFAR files: they load as bytes under ``encoding="bytes"`` and as str under
    ``encoding="latin1"``, and numpy rebuilds its arrays from either."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj: str | bytes) -> None:
        b = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(b) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(b)]) + b)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(b)) + b)
        self.memoize(obj)

    dispatch[str] = _save_py2_str
    dispatch[bytes] = _save_py2_str


def _dump(obj, path: Path) -> None:
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def _images(rng: np.random.Generator, n: int) -> np.ndarray:
    """n CIFAR rows: uint8 [n, 3072], channel-major (R plane, G plane, B plane)."""
    return rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)


def write_cifar10(root: Path, n_per_batch: int = 8, n_test: int = 16, seed: int = 0) -> Path:
    """``root/cifar-10-batches-py``: five training batches, a test batch and batches.meta."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        _dump({"batch_label": f"training batch {i} of 5", "data": _images(rng, n_per_batch),
               "labels": [int(v) for v in rng.integers(0, 10, n_per_batch)],
               "filenames": [f"fake_{i}_{j}.png" for j in range(n_per_batch)]},
              folder / f"data_batch_{i}")
    _dump({"batch_label": "testing batch 1 of 1", "data": _images(rng, n_test),
           "labels": [int(v) for v in rng.integers(0, 10, n_test)],
           "filenames": [f"fake_test_{j}.png" for j in range(n_test)]}, folder / "test_batch")
    _dump({"num_cases_per_batch": n_per_batch, "label_names": CIFAR10_CLASSES,
           "num_vis": 3072}, folder / "batches.meta")
    return folder


def write_cifar100(root: Path, n_train: int = 40, n_test: int = 16, seed: int = 0) -> Path:
    """``root/cifar-100-python``: train, test and meta (fine and coarse labels)."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        fine = [int(v) for v in rng.integers(0, 100, n)]
        _dump({"batch_label": f"{split}ing batch 1 of 1", "data": _images(rng, n),
               "fine_labels": fine, "coarse_labels": [f // 5 for f in fine],
               "filenames": [f"fake_{split}_{j}.png" for j in range(n)]}, folder / split)
    _dump({"fine_label_names": [f"fine{i:02d}" for i in range(100)],
           "coarse_label_names": [f"coarse{i:02d}" for i in range(20)]}, folder / "meta")
    return folder


def write_imagenet(root: Path, n_classes: int = 4, n_train: int = 10, n_val: int = 2,
                   seed: int = 0) -> Path:
    """``root/imagenet/{train,val}/<wnid>/*.JPEG``: random RGB JPEGs of assorted sizes."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder = Path(root) / "imagenet"
    for split, n in (("train", n_train), ("val", n_val)):
        for c in range(n_classes):
            d = folder / split / f"n{c:08d}"
            d.mkdir(parents=True, exist_ok=True)
            for j in range(n):
                h, w = (int(v) for v in rng.integers(40, 97, 2))
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
                    d / f"n{c:08d}_{j}.JPEG", quality=90)
    return folder


def write_idx_dataset(folder: Path, n_train: int = 60, n_test: int = 20, seed: int = 0) -> Path:
    """``folder``/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz: a dataset of 28x28 grey
    images in the MNIST file format (IDX, gzipped, as torchvision downloads MNIST, Fashion-MNIST
    and KMNIST), random pixels, labels 0..9 in turn."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
            with gzip.open(folder / f"{prefix}-{kind}-ubyte.gz", "wb") as f:
                f.write(header + arr.tobytes())
    return folder


def write_all(root: Path) -> Path:
    """All three fakes under one data folder (what ``--data-dir`` / ANNSNN_DATA point at)."""
    write_cifar10(root)
    write_cifar100(root)
    write_imagenet(root)
    return Path(root)


def trust_fake_cifar() -> None:
    """Clear torchvision's CIFAR md5 checksums in this process (the fakes cannot match them);
    files must still exist, so a wrong path still fails."""
    from torchvision.datasets import CIFAR10, CIFAR100

    for cls in (CIFAR10, CIFAR100):
        cls.train_list = [[name, None] for name, _ in cls.train_list]
        cls.test_list = [[name, None] for name, _ in cls.test_list]
        cls.meta = {**cls.meta, "md5": None}


if __name__ == "__main__":  # python tests/fakedata.py run --preset ... (the bench CLI)
    if sys.argv[1:2] == ["write"]:    # python tests/fakedata.py write DIR: the fakes only
        print(write_all(Path(sys.argv[2])))
        sys.exit(0)
    trust_fake_cifar()
    from bench.__main__ import main

    sys.exit(main(sys.argv[1:]))
