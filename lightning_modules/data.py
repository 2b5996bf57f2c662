"""LightningDataModules for the benchmark datasets.

Why it looks like this:

* Small datasets (MNIST, Fashion-MNIST, CIFAR-10/100, cifar10-jpeg) are held in
  memory as uint8 tensors and augmented per batch on tensors, because PIL
  transforms per image dominate the epoch time of small models on CPU.
* Decoding is done once per machine and cached as ``<cache>/<name>-decoded.pt``
  (the 60,000 JPEGs of cifar10-jpeg take a while to decode).
* Images come out as float in [0, 1], NOT normalised: every model carries its
  own normalisation layer, so the converted SNN sees the same input as the ANN.
* Data is looked for in a fixed order (``data_dir``/``ANNSNN_DATA``, project
  cache, torchvision download, offline copies) so that the same code runs on a
  machine with network, on an offline machine with the shared copies, and on a
  cluster with a shared data folder.  One line says which source was used.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import socket
import struct
import tarfile
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import lightning as L
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from torch.utils.data import DataLoader, Dataset

__all__ = [
    "DatasetInfo",
    "DATASETS",
    "DataUnavailableError",
    "AnnSnnDataModule",
    "InMemoryImages",
    "BatchTransform",
    "build_datamodule",
    "load_in_memory",
    "find_imagenet",
    "split_indices",
]


# --------------------------------------------------------------------------
# Dataset facts
# --------------------------------------------------------------------------


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

MNIST_CLASSES = tuple(str(i) for i in range(10))
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)

# --------------------------------------------------------------------------
# Where data lives.  Module-level so tests (and odd machines) can repoint them;
# they are read at call time, never bound as default arguments.
# --------------------------------------------------------------------------

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = PROJECT_ROOT / ".data"
SHARED_DATA_DIR = PROJECT_ROOT.parent / "shared" / "data"
MNIST_OFFLINE_DIR = SHARED_DATA_DIR / "mnist"
FASHION_MNIST_OFFLINE_DIR = Path("/usr/share/datasets/fashion-mnist")
CIFAR10_JPEG_TARBALL = SHARED_DATA_DIR / "cifar10-jpeg.tar.gz"
DATA_ENV_VAR = "ANNSNN_DATA"
DOWNLOAD_TIMEOUT_S = 10.0
TEST_SUBSET_SEED = 0  # fixed, so every run's test subset is the same images
_CACHE_VERSION = 1

_IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
_TV_DIRS = {  # torchvision's folder names under its root
    "mnist": "MNIST/raw",
    "fashion-mnist": "FashionMNIST/raw",
    "cifar10": "cifar-10-batches-py",
    "cifar100": "cifar-100-python",
}
_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class DataUnavailableError(RuntimeError):
    """No source could supply the requested dataset."""


@rank_zero_only
def _say(msg: str) -> None:
    print(f"[data] {msg}", flush=True)


# --------------------------------------------------------------------------
# Readers: each returns (train_x, train_y, test_x, test_y, classes) with
# uint8 images [N, C, H, W] and int64 labels.
# --------------------------------------------------------------------------


def _open_maybe_gz(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx(path: Path) -> torch.Tensor:
    """Read an IDX file (plain or .gz) of unsigned bytes into a uint8 tensor."""
    with _open_maybe_gz(Path(path)) as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = bytearray(data[4 + 4 * ndim :])
    expected = 1
    for d in dims:
        expected *= d
    if len(body) != expected:
        raise ValueError(f"{path}: {len(body)} bytes, header says {expected}")
    return torch.frombuffer(body, dtype=torch.uint8).reshape(dims)


def _idx_files(folder: Path) -> dict[str, Path] | None:
    """The four MNIST-style IDX files in `folder` (plain preferred over .gz)."""
    found = {}
    for key, stem in _IDX_FILES.items():
        for cand in (folder / stem, folder / f"{stem}.gz"):
            if cand.is_file():
                found[key] = cand
                break
        else:
            return None
    return found


def _read_idx_set(folder: Path, classes: Sequence[str] = MNIST_CLASSES):
    files = _idx_files(folder)
    assert files is not None
    out = {k: read_idx(p) for k, p in files.items()}
    for split in ("train", "test"):
        x, y = out[f"{split}_x"], out[f"{split}_y"]
        if x.ndim != 3 or len(x) != len(y):
            raise ValueError(f"{folder}: {split} images {tuple(x.shape)} vs labels {tuple(y.shape)}")
    return (
        out["train_x"].unsqueeze(1).contiguous(), out["train_y"].long(),
        out["test_x"].unsqueeze(1).contiguous(), out["test_y"].long(),
        list(classes),
    )


def _cifar_pickle_files(folder: Path, name: str) -> tuple[list[Path], list[Path]] | None:
    if name == "cifar10":
        train = [folder / f"data_batch_{i}" for i in range(1, 6)]
        test = [folder / "test_batch"]
    else:
        train, test = [folder / "train"], [folder / "test"]
    if all(p.is_file() for p in train + test):
        return train, test
    return None


def _read_cifar_set(folder: Path, name: str):
    """Read the python-pickle CIFAR batches (torchvision's download format)."""
    files = _cifar_pickle_files(folder, name)
    assert files is not None
    key = b"labels" if name == "cifar10" else b"fine_labels"

    def load(paths):
        xs, ys = [], []
        for p in paths:
            with open(p, "rb") as f:
                d = pickle.load(f, encoding="bytes")
            xs.append(torch.as_tensor(d[b"data"], dtype=torch.uint8).reshape(-1, 3, 32, 32))
            ys.append(torch.as_tensor(d[key], dtype=torch.int64))
        return torch.cat(xs), torch.cat(ys)

    tx, ty = load(files[0])
    vx, vy = load(files[1])
    meta = folder / ("batches.meta" if name == "cifar10" else "meta")
    classes = [str(i) for i in range(DATASETS[name].num_classes)]
    if meta.is_file():
        with open(meta, "rb") as f:
            m = pickle.load(f, encoding="bytes")
        names = m.get(b"label_names") or m.get(b"fine_label_names")
        if names:
            classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return tx, ty, vx, vy, classes


def _scan_image_folder(root: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """ImageFolder-style scan: classes = sorted sub-folders, files sorted by name."""
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    samples = []
    for label, cls in enumerate(classes):
        names = sorted(
            e.name for e in os.scandir(root / cls)
            if e.is_file() and e.name.lower().endswith(_IMAGE_EXTS)
        )
        samples.extend((str(root / cls / n), label) for n in names)
    return classes, samples


def _decode_images(datas: list[torch.Tensor], size: int, names: list[str]) -> torch.Tensor:
    """Decode encoded image bytes to uint8 [N, 3, size, size] (batched JPEG decode when possible)."""
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg

    if not datas:
        return torch.empty((0, 3, size, size), dtype=torch.uint8)
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its decoders in favour of TorchCodec (not a
        # dependency here); they are ~3x faster than PIL on these tiny JPEGs.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torchvision\.io")
        try:
            imgs = decode_jpeg(datas, mode=ImageReadMode.RGB)
        except RuntimeError:  # not all JPEG (or one is broken): slow path names the culprit
            imgs = []
            for d, n in zip(datas, names):
                try:
                    imgs.append(decode_image(d, mode=ImageReadMode.RGB))
                except RuntimeError as e:
                    raise ValueError(f"cannot decode {n}: {e}") from e
    for img, n in zip(imgs, names):
        if tuple(img.shape[1:]) != (size, size):
            raise ValueError(f"{n}: image is {tuple(img.shape[1:])}, expected {size}x{size}")
    return torch.stack(imgs)


def _assemble(entries: dict[str, list[tuple[str, str, torch.Tensor]]], where: Path):
    """{split: [(class, file name, bytes)]} -> decoded train/test tensors; labels =
    alphabetical class order, files sorted by name within a class (ImageFolder's order)."""
    out = {}
    classes = {}
    for split in ("train", "test"):
        items = sorted(entries.get(split, []), key=lambda e: (e[0], e[1]))
        classes[split] = sorted({e[0] for e in items})
        label_of = {c: i for i, c in enumerate(classes[split])}
        x = _decode_images([e[2] for e in items], 32, [f"{where}:{split}/{e[0]}/{e[1]}" for e in items])
        y = torch.tensor([label_of[e[0]] for e in items], dtype=torch.int64)
        out[split] = (x, y)
    if classes["train"] != classes["test"] or tuple(classes["train"]) != CIFAR10_CLASSES:
        raise ValueError(
            f"{where}: class folders {classes['train']} / {classes['test']} are not the CIFAR-10 "
            f"classes {list(CIFAR10_CLASSES)} (their alphabetical order is the label order)"
        )
    return (*out["train"], *out["test"], list(CIFAR10_CLASSES))


def _jpeg_folder_ok(root: Path) -> bool:
    return (root / "train").is_dir() and (root / "test").is_dir()


def _read_jpeg_folder(root: Path):
    """Decode a {train,test}/<class>/*.jpg tree."""
    entries = {}
    for split in ("train", "test"):
        _, samples = _scan_image_folder(root / split)
        entries[split] = [
            (Path(p).parent.name, Path(p).name, torch.frombuffer(bytearray(Path(p).read_bytes()), dtype=torch.uint8))
            for p, _ in samples
        ]
    return _assemble(entries, root)


def _read_jpeg_tarball(tarball: Path):
    """Decode the {train,test}/<class>/*.jpg images straight out of the tarball.

    Streaming the archive takes ~3 s; extracting its 60,000 files first took
    ~13-15 s here (file creation), and the decoded cache makes the folder
    unnecessary afterwards anyway.
    """
    entries: dict[str, list] = {"train": [], "test": []}
    with tarfile.open(tarball, "r:*") as tf:
        for m in tf:
            if not m.isfile():
                continue
            parts = Path(m.name).parts
            if len(parts) < 3 or parts[-3] not in entries or not parts[-1].lower().endswith(_IMAGE_EXTS):
                continue
            data = tf.extractfile(m).read()
            entries[parts[-3]].append((parts[-2], parts[-1], torch.frombuffer(bytearray(data), dtype=torch.uint8)))
    if not entries["train"] or not entries["test"]:
        raise ValueError(f"{tarball}: expected train/<class>/*.jpg and test/<class>/*.jpg in the archive")
    return _assemble(entries, tarball)


def _torchvision_download(name: str, root: Path) -> None:
    """torchvision's own download, with a short timeout so offline machines fail fast."""
    import torchvision.datasets as tvd

    cls = {
        "mnist": tvd.MNIST,
        "fashion-mnist": tvd.FashionMNIST,
        "cifar10": tvd.CIFAR10,
        "cifar100": tvd.CIFAR100,
    }[name]
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        for train in (True, False):
            cls(str(root), train=train, download=True)
    finally:
        socket.setdefaulttimeout(old)


# --------------------------------------------------------------------------
# Source resolution
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    """A place the data can be read from, found without reading it."""

    description: str  # for the one printed line
    path: Path
    reader: Callable[[], tuple]


def _candidate_in_dir(name: str, d: Path) -> _Source | None:
    """Look for `name` in torchvision's layout or the offline layouts under `d`."""
    if name in ("mnist", "fashion-mnist"):
        for sub in (_TV_DIRS[name], name):
            folder = d / sub
            if _idx_files(folder):
                return _Source(f"{folder}", folder, lambda f=folder: _read_idx_set(f, _idx_classes(name)))
    elif name in ("cifar10", "cifar100"):
        folder = d / _TV_DIRS[name]
        if _cifar_pickle_files(folder, name):
            return _Source(f"{folder}", folder, lambda f=folder: _read_cifar_set(f, name))
    elif name == "cifar10-jpeg":
        folder = d / "cifar10-jpeg"
        if _jpeg_folder_ok(folder):
            return _Source(f"{folder}", folder, lambda f=folder: _read_jpeg_folder(f))
    elif name == "imagenet":
        folder = d / "imagenet"
        if (folder / "train").is_dir() and (folder / "val").is_dir():
            return _Source(f"{folder}", folder, lambda: None)
    return None


def _idx_classes(name: str) -> tuple[str, ...]:
    return FASHION_MNIST_CLASSES if name == "fashion-mnist" else MNIST_CLASSES


def _layouts_help() -> str:
    return (
        "MNIST/raw or mnist/ (IDX files, .gz or not); FashionMNIST/raw or fashion-mnist/; "
        "cifar-10-batches-py/; cifar-100-python/; cifar10-jpeg/{train,test}/<class>/*.jpg; "
        "imagenet/{train,val}/<class>/*.JPEG"
    )


def _unavailable(name: str, tried: list[str]) -> DataUnavailableError:
    can_download = name in _TV_DIRS
    lines = [
        f"No data for dataset '{name}'. Tried: " + "; ".join(tried) + ".",
        "Supply it in one of three ways:",
        "  1. network: run once on a machine with network access; torchvision downloads "
        f"it into {CACHE_DIR}"
        + ("" if can_download else f" (not possible for '{name}': there is no download for it)")
        + ".",
        "  2. offline copies: MNIST IDX .gz files in "
        f"{MNIST_OFFLINE_DIR}; Fashion-MNIST via `apt-get install dataset-fashion-mnist` "
        f"(files in {FASHION_MNIST_OFFLINE_DIR}); the CIFAR-10 JPEG copy {CIFAR10_JPEG_TARBALL} "
        "(only as 'cifar10-jpeg')"
        + ("" if name in ("mnist", "fashion-mnist", "cifar10-jpeg") else f"; none for '{name}'")
        + ".",
        f"  3. --data-dir DIR or {DATA_ENV_VAR}=DIR, a folder holding the data in one of these "
        "layouts: " + _layouts_help() + ".",
    ]
    return DataUnavailableError("\n".join(lines))


def _source_stamp(src: _Source) -> str:
    """Identifies a user-given source's contents, so its decoded cache is reused
    only while the files are unchanged."""
    h = hashlib.sha1(str(src.path.resolve()).encode())
    for dirpath, dirnames, filenames in os.walk(src.path):
        dirnames.sort()
        for fn in sorted(filenames):
            st = os.stat(os.path.join(dirpath, fn))
            h.update(f"{dirpath}/{fn}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def _load_cache(path: Path, stamp: str | None) -> dict | None:
    if not path.is_file():
        return None
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # corrupt or foreign file: decode again
        return None
    if not isinstance(d, dict) or d.get("version") != _CACHE_VERSION:
        return None
    if stamp is not None and d.get("stamp") != stamp:
        return None
    return d


def _save_cache(path: Path, d: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    os.close(fd)
    try:
        torch.save(d, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _decode(name: str, src: _Source, cache_path: Path, stamp: str | None) -> dict:
    tx, ty, vx, vy, classes = src.reader()
    d = {
        "version": _CACHE_VERSION, "name": name, "source": src.description,
        "stamp": stamp, "classes": list(classes),
        "train_x": tx, "train_y": ty, "test_x": vx, "test_y": vy,
    }
    try:
        _save_cache(cache_path, d)
    except OSError as e:  # read-only project folder: still usable, just slower next time
        _say(f"could not write decoded cache {cache_path}: {e}")
    return d


def load_in_memory(name: str, data_dir: str | os.PathLike | None = None) -> dict:
    """Find, decode (or load the decoded cache of) a small dataset.

    Order: `data_dir` (else $ANNSNN_DATA), the project cache (decoded tensors or
    torchvision's files), torchvision download into the cache, offline copies.
    Returns a dict with uint8 ``train_x/test_x`` [N, C, H, W], int64
    ``train_y/test_y``, ``classes`` and ``source``.
    """
    if name not in DATASETS or name == "imagenet":
        raise ValueError(f"'{name}' is not an in-memory dataset")
    cache = Path(CACHE_DIR)
    tried: list[str] = []

    # a. user-given folder wins over everything, including the decoded cache.
    if data_dir is not None:
        d = Path(data_dir).expanduser()
        src = _candidate_in_dir(name, d)
        if src is not None:
            stamp = _source_stamp(src)
            cpath = cache / f"{name}-{stamp[:10]}-decoded.pt"
            data = _load_cache(cpath, stamp)
            if data is not None:
                _say(f"{name}: data_dir {src.description} (decoded cache {cpath})")
                return data
            _say(f"{name}: data_dir {src.description} (decoding once into {cpath})")
            return _decode(name, src, cpath, stamp)
        tried.append(f"data_dir {d} (no {name} in a known layout)")

    # b. project cache: decoded tensors, then torchvision's files, then download.
    cpath = cache / f"{name}-decoded.pt"
    data = _load_cache(cpath, None)
    if data is not None:
        _say(f"{name}: decoded cache {cpath} (from {data.get('source')})")
        return data
    src = _candidate_in_dir(name, cache)
    if src is not None:
        src = _Source(f"project cache {src.path}", src.path, src.reader)
    elif name in _TV_DIRS:
        try:
            _torchvision_download(name, cache)
        except Exception as e:  # offline: fall through to the offline copies
            why = str(e).splitlines()[0][:120] if str(e) else ""
            tried.append(f"torchvision download into {cache} ({type(e).__name__}: {why})")
        else:
            src = _candidate_in_dir(name, cache)
            if src is not None:
                src = _Source(f"torchvision download into {src.path}", src.path, src.reader)
            else:
                tried.append(f"torchvision download into {cache} (finished, but no files found)")
    else:
        tried.append(f"project cache {cache} (no {name}; it has no download)")

    # c. offline copies shipped with the project / the OS.
    if src is None:
        if name == "mnist":
            folder = Path(MNIST_OFFLINE_DIR)
            if _idx_files(folder):
                src = _Source(f"offline copy {folder}", folder, lambda: _read_idx_set(folder))
            else:
                tried.append(f"offline copy {folder} (missing)")
        elif name == "fashion-mnist":
            folder = Path(FASHION_MNIST_OFFLINE_DIR)
            if _idx_files(folder):
                src = _Source(f"offline copy {folder}", folder, lambda: _read_idx_set(folder, FASHION_MNIST_CLASSES))
            else:
                tried.append(f"offline copy {folder} (missing; apt-get install dataset-fashion-mnist)")
        elif name == "cifar10-jpeg":
            tarball = Path(CIFAR10_JPEG_TARBALL)
            if tarball.is_file():
                src = _Source(f"offline copy {tarball}", tarball, lambda: _read_jpeg_tarball(tarball))
            else:
                tried.append(f"offline copy {tarball} (missing)")
        else:
            tried.append("offline copies (none exist for this dataset)")

    if src is None:
        raise _unavailable(name, tried)
    _say(f"{name}: {src.description} (decoding once into {cpath})")
    return _decode(name, src, cpath, None)


def find_imagenet(data_dir: str | os.PathLike | None = None) -> Path:
    """ImageNet is never downloaded: data_dir / $ANNSNN_DATA, else the project cache."""
    tried = []
    for d, what in ((data_dir, "data_dir"), (CACHE_DIR, "project cache")):
        if d is None:
            continue
        src = _candidate_in_dir("imagenet", Path(d).expanduser())
        if src is not None:
            _say(f"imagenet: {what} {src.path}")
            return src.path
        tried.append(f"{what} {d} (no imagenet/{{train,val}})")
    tried.append("torchvision download (not available for ImageNet)")
    tried.append("offline copies (none exist for ImageNet)")
    raise _unavailable("imagenet", tried)


# --------------------------------------------------------------------------
# Datasets and batch-level augmentation
# --------------------------------------------------------------------------


class _one_thread:
    """Run tiny batch ops on one intra-op thread.

    Batch gathers/conversions are well under a millisecond single-threaded; on a
    loaded 2-core machine letting them fan out over OpenMP threads made an epoch
    of Fashion-MNIST take ~10 s instead of ~0.2 s (threads waiting on each other).
    """

    def __enter__(self):
        self.n = torch.get_num_threads()
        if self.n != 1:
            torch.set_num_threads(1)

    def __exit__(self, *exc):
        if self.n != 1:
            torch.set_num_threads(self.n)


class InMemoryImages(Dataset):
    """A view (by index) of uint8 images held in memory.

    ``ds[i]`` gives a float [C, H, W] image in [0, 1] and an int64 label.
    ``__getitems__`` (used by DataLoader when it batches) gathers a whole batch
    as uint8 with one indexing op; :class:`BatchTransform` then augments and
    converts it, which is far cheaper than per-image transforms.
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
        with _one_thread():
            j = self.indices[torch.as_tensor(idx, dtype=torch.int64)]
            return self.images[j], self.labels[j]


class BatchTransform:
    """collate_fn: optional random crop (zero padding) + horizontal flip of a whole
    batch, then uint8 -> float in [0, 1].

    Equivalent to torchvision's RandomCrop(32, padding=4) + RandomHorizontalFlip
    per image, but done as one ``gather`` over the batch (about 1 ms for 128
    CIFAR images instead of tens of ms with PIL).  Uses torch's global RNG, so
    seed_everything and DataLoader worker seeding apply.
    """

    def __init__(self, crop_padding: int = 0, flip: bool = False):
        self.crop_padding = crop_padding
        self.flip = flip

    def __call__(self, batch):
        with _one_thread():
            return self._apply(batch)

    def _apply(self, batch):
        if isinstance(batch, tuple) and len(batch) == 2 and torch.is_tensor(batch[0]):
            x, y = batch
        else:  # list of samples (e.g. the dataset was wrapped in something without __getitems__)
            x = torch.stack([b[0] for b in batch])
            y = torch.as_tensor([int(b[1]) for b in batch], dtype=torch.int64)
        if self.crop_padding or self.flip:
            x = self.crop_flip(x, self.crop_padding, self.flip)
        if x.dtype == torch.uint8:
            x = x.float().div_(255)
        return x, y

    @staticmethod
    def crop_flip(x: torch.Tensor, pad: int, flip: bool) -> torch.Tensor:
        """Per-image random crop of the zero-padded batch and random flip, as one gather."""
        b, c, h, w = x.shape
        if pad:
            x = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        wp = w + 2 * pad
        oy = torch.randint(0, 2 * pad + 1, (b, 1, 1))
        ox = torch.randint(0, 2 * pad + 1, (b, 1, 1))
        cols = torch.arange(w).expand(b, 1, w)
        if flip:
            flipped = torch.rand(b, 1, 1) < 0.5
            cols = torch.where(flipped, (w - 1) - cols, cols)
        rows = torch.arange(h)[None, :, None]
        idx = ((oy + rows) * wp + ox + cols).reshape(b, 1, h * w)  # [b, 1, h*w]
        out = x.reshape(b, c, -1).gather(2, idx.expand(b, c, h * w))
        return out.reshape(b, c, h, w)


class FileImages(Dataset):
    """On-disk images (ImageNet) by index into a scanned sample list, with a per-image transform."""

    def __init__(self, samples: list[tuple[str, int]], indices: torch.Tensor | None, transform):
        self.samples = samples
        self.indices = torch.arange(len(samples)) if indices is None else torch.as_tensor(indices, dtype=torch.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        from torchvision.datasets.folder import default_loader

        path, label = self.samples[int(self.indices[i])]
        return self.transform(default_loader(path)), torch.tensor(label, dtype=torch.int64)


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
    """(train, val) indices into the official train set: a seeded permutation, val first."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = int(round(val_fraction * n))
    return perm[n_val:], perm[:n_val]


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
        if data_dir is None:
            data_dir = os.environ.get(DATA_ENV_VAR) or None
        self.data_dir = data_dir
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
        if self.name == "imagenet":
            find_imagenet(self.data_dir)
        else:
            self._data = load_in_memory(self.name, self.data_dir)

    def setup(self, stage: str | None = None) -> None:
        if self._ready:
            return
        if self.name == "imagenet":
            self._setup_imagenet()
        else:
            if self._data is None:
                self._data = load_in_memory(self.name, self.data_dir)
            self._setup_in_memory(self._data)
        self._ready = True

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
        if self.name in ("cifar10", "cifar100", "cifar10-jpeg"):
            self._train_collate = BatchTransform(crop_padding=4, flip=True)
        else:
            self._train_collate = BatchTransform()
        self._eval_collate = BatchTransform()

    def _setup_imagenet(self) -> None:
        root = find_imagenet(self.data_dir)
        self.source = str(root)
        self.classes, train_samples = _scan_image_folder(root / "train")
        val_classes, test_samples = _scan_image_folder(root / "val")
        if val_classes != self.classes:
            raise ValueError(f"{root}: train/ and val/ have different class folders")
        if len(self.classes) != self.info.num_classes:
            _say(f"imagenet: {len(self.classes)} classes in {root} (expected {self.info.num_classes})")
        self._indices(len(train_samples), len(test_samples))
        train_tf, eval_tf = _imagenet_transforms()
        self.train_set = FileImages(train_samples, self.train_indices, train_tf)
        self.val_set = FileImages(train_samples, self.val_indices, eval_tf)
        self.calib_set = FileImages(train_samples, self.calib_indices, eval_tf)
        self.test_set = FileImages(test_samples, self.test_indices, eval_tf)
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
