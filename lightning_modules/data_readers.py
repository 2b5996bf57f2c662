"""Reading one copy of a dataset into uint8 tensors, with torchvision doing the parsing.

Why: parsing IDX files, CIFAR pickles and image folders is torchvision's job
(``torchvision.datasets`` with ``download=False``; ``ImageFolder`` for the JPEG
copy). What is left here is the glue: putting gzipped IDX files where
torchvision reads them, decoding the JPEGs in one batch, and reading the shared
JPEG tarball without extracting it. Each reader returns
``(train_x, train_y, test_x, test_y, classes)``: uint8 [N, C, H, W], int64 labels.
"""

from __future__ import annotations

import tarfile
import tempfile
import warnings
from pathlib import Path

import torch

from annsnn.datasets import CIFAR10_CLASSES

# The datasets torchvision reads and downloads, by their torchvision class name.
TORCHVISION = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10", "cifar100": "CIFAR100"}


def tv_class(name: str):
    import torchvision.datasets

    return getattr(torchvision.datasets, TORCHVISION[name])


def _as_tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
    """A torchvision dataset's in-memory arrays as uint8 [N, C, H, W] and int64 labels."""
    x = torch.as_tensor(ds.data)  # MNIST: [N, H, W] tensor; CIFAR: [N, H, W, C] array
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    return x.contiguous(), torch.as_tensor(ds.targets, dtype=torch.int64)


def read_torchvision(name: str, root: Path):
    """Both splits of a dataset torchvision reads from `root` (no download)."""
    train, test = (tv_class(name)(str(root), train=t, download=False) for t in (True, False))
    return (*_as_tensors(train), *_as_tensors(test), list(train.classes))


def idx_files(name: str, folder: Path) -> list[Path] | None:
    """The four IDX files torchvision's reader wants, found in `folder` plain or gzipped (plain preferred)."""
    found = []
    for url, _ in tv_class(name).resources:
        stem = Path(url).stem  # train-images-idx3-ubyte.gz -> train-images-idx3-ubyte
        cands = [p for p in (folder / stem, folder / f"{stem}.gz") if p.is_file()]
        if not cands:
            return None
        found.append(cands[0])
    return found


def read_idx(name: str, folder: Path, scratch_parent: Path):
    """MNIST/Fashion-MNIST from IDX files. torchvision reads only unpacked files in
    ``<root>/<Class>/raw``; other folders are linked or gunzipped into a temporary root
    in `scratch_parent` (removed afterwards: the decoded cache is what is kept)."""
    from torchvision.datasets.utils import extract_archive

    files = idx_files(name, folder)
    raw = Path(tv_class(name).__name__) / "raw"
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


def cifar_folder_ok(name: str, folder: Path) -> bool:
    """`folder` is torchvision's ``cifar-10-batches-py``/``cifar-100-python`` with all its files."""
    cls = tv_class(name)
    files = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    return folder.name == cls.base_folder and all((folder / f).is_file() for f in files)


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


def jpeg_folder_ok(root: Path) -> bool:
    return (root / "train").is_dir() and (root / "test").is_dir()


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
