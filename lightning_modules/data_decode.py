"""Decoding a found dataset into uint8 tensors, kept in the decoded cache; the ImageNet folders.

Why it looks like this:

* This is the middle of the data path: :func:`load_in_memory` asks ``data_sources``
  once where the data are (a :class:`~.data_sources.Source`), reads that copy and
  hands the tensors to ``data``'s DataModule. A decoded cache that does not load
  costs a second look, without it; nothing else goes back to ``data_sources``.
* Parsing IDX files, CIFAR pickles and image folders is torchvision's job
  (``torchvision.datasets`` with ``download=False``; ``ImageFolder`` for the JPEG
  copy). What is left here is the glue: putting gzipped IDX files where
  torchvision reads them, decoding the JPEGs in one batch, and reading the shared
  JPEG tarball without extracting it. Each reader returns
  ``(train_x, train_y, test_x, test_y, classes)``: uint8 [N, C, H, W], int64 labels.
* The decoded tensors are cached in the file the Source names
  (``<cache>/<name>-decoded.pt``, ``<cache>/<name>-<stamp>-decoded.pt`` for a
  user-given folder): the 60,000 JPEGs of cifar10-jpeg take a while to decode,
  the tensors a second to load.
* The one line per source ("[data] ...") is printed here, where it is known
  whether the decoded cache was used.
"""

from __future__ import annotations

import os
import tarfile
import tempfile
import warnings
from pathlib import Path

import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from annsnn.datasets import CIFAR10_CLASSES, DATASETS

from . import data_sources
from .data_sources import TORCHVISION, Source, find_imagenet

__all__ = ["load_in_memory", "load_imagenet", "find_imagenet", "read_torchvision", "read_idx",
           "read_jpeg_folder", "read_jpeg_tarball"]

_CACHE_VERSION = 1


@rank_zero_only
def _say(msg: str) -> None:
    print(f"[data] {msg}", flush=True)


# --------------------------------------------------------------------------
# Readers: one copy of a dataset -> uint8 tensors
# --------------------------------------------------------------------------


def _tv_class(name: str):
    import torchvision.datasets

    return getattr(torchvision.datasets, TORCHVISION[name])


def _as_tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
    """A torchvision dataset's in-memory arrays as uint8 [N, C, H, W] and int64 labels."""
    x = torch.as_tensor(ds.data)  # MNIST: [N, H, W] tensor; CIFAR: [N, H, W, C] array
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    return x.contiguous(), torch.as_tensor(ds.targets, dtype=torch.int64)


def read_torchvision(name: str, root: Path):
    """Both splits of a dataset torchvision reads from `root` (no download)."""
    train, test = (_tv_class(name)(str(root), train=t, download=False) for t in (True, False))
    return (*_as_tensors(train), *_as_tensors(test), list(train.classes))


def read_idx(name: str, files: tuple[Path, ...], scratch_parent: Path):
    """MNIST/Fashion-MNIST from its four IDX `files` (one folder). torchvision reads only
    unpacked files in ``<root>/<Class>/raw``; other folders are linked or gunzipped into a
    temporary root in `scratch_parent` (removed afterwards: the decoded cache is what is kept)."""
    from torchvision.datasets.utils import extract_archive

    folder = files[0].parent
    raw = Path(TORCHVISION[name]) / "raw"
    if folder.parts[-2:] == raw.parts and all(f.suffix != ".gz" for f in files):
        return read_torchvision(name, folder.parent.parent)
    scratch_parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch_parent, prefix=".prepare-") as tmp:
        root = Path(tmp)
        (root / raw).mkdir(parents=True)
        for f in files:
            if f.suffix == ".gz":
                extract_archive(str(f), str(root / raw))
            else:
                (root / raw / f.name).symlink_to(f.resolve())
        return read_torchvision(name, root)


def _bytes(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _file_bytes(path: str) -> torch.Tensor:
    return _bytes(Path(path).read_bytes())


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


def _check_cifar10_classes(classes: list[str], where) -> None:
    if tuple(classes) != CIFAR10_CLASSES:
        raise ValueError(
            f"{where}: class folders {list(classes)} are not the CIFAR-10 classes "
            f"{list(CIFAR10_CLASSES)} (their alphabetical order is the label order)"
        )


def read_jpeg_folder(root: Path):
    """Decode a {train,test}/<class>/*.jpg tree; ImageFolder lists it (classes
    alphabetical, which for CIFAR-10 is its label order; files sorted by name)."""
    from torchvision.datasets import ImageFolder

    out = []
    for split in ("train", "test"):
        ds = ImageFolder(str(root / split), loader=_file_bytes)
        _check_cifar10_classes(ds.classes, root / split)
        datas = [ds[i][0] for i in range(len(ds))]
        out += [_decode_images(datas, 32, [p for p, _ in ds.samples]), torch.as_tensor(ds.targets)]
    return (*out, list(CIFAR10_CLASSES))


def read_jpeg_tarball(tarball: Path):
    """The same images, labels and order as `read_jpeg_folder` on the extracted tree, read
    straight from the archive: extracting its 60,000 small files first took 15 s on an idle
    machine and minutes on a busy one, streaming them 3 s."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    items: dict[str, list] = {"train": [], "test": []}
    with tarfile.open(tarball) as tf:
        for m in tf:
            parts = Path(m.name).parts
            if m.isfile() and len(parts) >= 3 and parts[-3] in items and parts[-1].lower().endswith(IMG_EXTENSIONS):
                items[parts[-3]].append((parts[-2], parts[-1], _bytes(tf.extractfile(m).read())))
    out = []
    for split, entries in items.items():
        entries.sort(key=lambda e: e[:2])  # ImageFolder's order: class folder, then file name
        classes = sorted({cls for cls, _, _ in entries})
        _check_cifar10_classes(classes, f"{tarball}:{split}/")
        names = [f"{tarball}:{split}/{cls}/{fn}" for cls, fn, _ in entries]
        labels = torch.tensor([classes.index(cls) for cls, _, _ in entries], dtype=torch.int64)
        out += [_decode_images([e[2] for e in entries], 32, names), labels]
    return (*out, list(CIFAR10_CLASSES))


# The reader of each kind of Source (looked up by name when called, so tests can replace one).
READERS = {
    "idx": lambda src: read_idx(src.name, src.files, src.cache_file.parent),
    "cifar": lambda src: read_torchvision(src.name, src.path.parent),
    "jpeg-folder": lambda src: read_jpeg_folder(src.path),
    "jpeg-tarball": lambda src: read_jpeg_tarball(src.path),
}


# --------------------------------------------------------------------------
# The decoded cache
# --------------------------------------------------------------------------


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


def _decode(src: Source) -> dict:
    tx, ty, vx, vy, classes = READERS[src.kind](src)
    d = {
        "version": _CACHE_VERSION, "name": src.name, "source": src.description,
        "stamp": src.stamp, "classes": list(classes),
        "train_x": tx, "train_y": ty, "test_x": vx, "test_y": vy,
    }
    try:
        _save_cache(src.cache_file, d)
    except OSError as e:  # read-only project folder: still usable, just slower next time
        _say(f"could not write decoded cache {src.cache_file}: {e}")
    return d


# --------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------


def load_in_memory(name: str, data_dir: str | os.PathLike | None = None) -> dict:
    """Find, decode (or load the decoded cache of) a small dataset.

    Order: `data_dir` (the DataModule passes $ANNSNN_DATA here), the project cache
    (decoded tensors or torchvision's files), torchvision download into the cache,
    offline copies (see ``data_sources.find``). Returns a dict with uint8
    ``train_x/test_x`` [N, C, H, W], int64 ``train_y/test_y``, ``classes`` and ``source``.
    """
    if name not in DATASETS or name == "imagenet":
        raise ValueError(f"'{name}' is not an in-memory dataset")
    src = data_sources.find(name, data_dir)
    if src.kind == "decoded":
        data = _load_cache(src.cache_file, None)
        if data is not None:
            _say(f"{name}: decoded cache {src.cache_file} (from {data.get('source')})")
            return data
        src = data_sources.find(name, data_dir, decoded=False)  # it did not load: look again without it
    elif src.stamp is not None:
        data = _load_cache(src.cache_file, src.stamp)
        if data is not None:
            _say(f"{name}: {src.line} (decoded cache {src.cache_file})")
            return data
    _say(f"{name}: {src.line} (decoding once into {src.cache_file})")
    return _decode(src)


def load_imagenet(data_dir: str | os.PathLike | None, train_transform, eval_transform) -> dict:
    """The ImageNet folders (found in data_dir, else the project cache; never downloaded) as
    ImageFolder datasets: ``train`` with `train_transform`, ``train_eval`` (the same images for
    val/calib) and ``test`` (val/) with `eval_transform`; plus ``classes`` and ``source``."""
    from torchvision.datasets import ImageFolder

    src = data_sources.find("imagenet", data_dir)
    _say(f"imagenet: {src.line}")
    root = src.path
    train = ImageFolder(str(root / "train"), transform=train_transform)
    train_eval = ImageFolder(str(root / "train"), transform=eval_transform)  # val/calib: unaugmented
    test = ImageFolder(str(root / "val"), transform=eval_transform)
    if test.classes != train.classes:
        raise ValueError(f"{root}: train/ and val/ have different class folders")
    expected = DATASETS["imagenet"].num_classes
    if len(train.classes) != expected:
        _say(f"imagenet: {len(train.classes)} classes in {root} (expected {expected})")
    return {"source": src.description, "classes": train.classes, "train": train, "train_eval": train_eval,
            "test": test}
