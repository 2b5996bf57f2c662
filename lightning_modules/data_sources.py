"""Where a dataset is: the search order, the layouts it is recognised in, the one error when it is nowhere.

Why it looks like this:

* The same code runs on a machine with network, on an offline machine with the
  shared copies, and on a cluster with a shared data folder: data is looked for
  in a fixed order (``data_dir``/$ANNSNN_DATA, project cache, torchvision
  download, offline copies), and when none has it one error names the three ways
  to supply it.
* Finding goes by file names (and torchvision's download); nothing is read here.
  :func:`find` returns a :class:`Source` -- what was found, in which layout, and
  the file its decoded tensors are (or will be) kept in -- and ``data_decode``
  reads it. So this module calls nothing of ``data_decode`` or ``data`` and
  imports neither torch nor Lightning (torchvision only inside functions).
* A dataset in a format already known here is one :data:`LAYOUTS` entry.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from .data_dir import DATA_ENV_VAR, DataUnavailableError, check_data_dir

__all__ = ["DataUnavailableError", "check_data_dir", "find", "find_imagenet", "DATA_ENV_VAR", "Source",
           "LAYOUTS", "TORCHVISION"]

# Where data lives.  Module-level so tests (and odd machines) can repoint them;
# they are read at call time, never bound as default arguments.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = Path(os.environ.get("ANNSNN_CACHE") or PROJECT_ROOT / ".data")  # tests: a tmp folder
SHARED_DATA_DIR = PROJECT_ROOT.parent / "shared" / "data"
MNIST_OFFLINE_DIR = SHARED_DATA_DIR / "mnist"
FASHION_MNIST_OFFLINE_DIR = Path("/usr/share/datasets/fashion-mnist")
CIFAR10_JPEG_TARBALL = SHARED_DATA_DIR / "cifar10-jpeg.tar.gz"


@dataclass(frozen=True)
class Layout:
    """How a dataset is laid out in a folder (``data_dir`` or the project cache)."""

    format: str  # "idx": <Class>/raw/ or <name>/ IDX files; "cifar": torchvision's pickle folder;
    #              "jpeg": <name>/{train,test}/<class>/*.jpg; "imagenet": <name>/{train,val}/<class>/
    torchvision: str | None  # the torchvision.datasets class that reads (and downloads) it
    help: str  # the layout, as the missing-data message names it


LAYOUTS: dict[str, Layout] = {
    "mnist": Layout("idx", "MNIST", "MNIST/raw or mnist/ (IDX files, .gz or not)"),
    "fashion-mnist": Layout("idx", "FashionMNIST", "FashionMNIST/raw or fashion-mnist/"),
    "cifar10": Layout("cifar", "CIFAR10", "cifar-10-batches-py/"),
    "cifar100": Layout("cifar", "CIFAR100", "cifar-100-python/"),
    "cifar10-jpeg": Layout("jpeg", None, "cifar10-jpeg/{train,test}/<class>/*.jpg"),
    "imagenet": Layout("imagenet", None, "imagenet/{train,val}/<class>/*.JPEG"),
}

# The datasets torchvision reads and downloads, by their torchvision class name.
TORCHVISION = {name: lay.torchvision for name, lay in LAYOUTS.items() if lay.torchvision}


def tv_class(name: str):
    import torchvision.datasets

    return getattr(torchvision.datasets, TORCHVISION[name])


@dataclass(frozen=True)
class Source:
    """A place a dataset can be read from, found without reading it."""

    name: str
    kind: str  # how to read it: "idx", "cifar", "jpeg-folder", "jpeg-tarball", "imagenet", "decoded"
    path: Path  # the folder, tarball or decoded file
    description: str  # where it came from, as the decoded cache records it
    line: str  # where it is, as the one printed line says it
    cache_file: Path | None = None  # where its decoded tensors are (to be) kept
    stamp: str | None = None  # contents of a user-given source: its decoded cache is valid only for these
    files: tuple[Path, ...] = ()  # "idx": the four IDX files, in torchvision's order


# --------------------------------------------------------------------------
# Layout probes, by file name
# --------------------------------------------------------------------------


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


def cifar_folder_ok(name: str, folder: Path) -> bool:
    """`folder` is torchvision's ``cifar-10-batches-py``/``cifar-100-python`` with all its files."""
    cls = tv_class(name)
    files = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    return folder.name == cls.base_folder and all((folder / f).is_file() for f in files)


def jpeg_folder_ok(root: Path) -> bool:
    return (root / "train").is_dir() and (root / "test").is_dir()


def imagenet_folder_ok(root: Path) -> bool:
    return (root / "train").is_dir() and (root / "val").is_dir()


def _in_dir(name: str, d: Path) -> tuple[str, Path, tuple[Path, ...]] | None:
    """(kind, path, files) of `name` in its layout under `d`, or None."""
    fmt = LAYOUTS[name].format
    if fmt == "idx":
        for folder in (d / TORCHVISION[name] / "raw", d / name):
            files = idx_files(name, folder)
            if files:
                return "idx", folder, tuple(files)
    elif fmt == "cifar":
        folder = d / tv_class(name).base_folder
        if cifar_folder_ok(name, folder):
            return "cifar", folder, ()
    elif fmt == "jpeg":
        if jpeg_folder_ok(d / name):
            return "jpeg-folder", d / name, ()
    elif fmt == "imagenet":
        if imagenet_folder_ok(d / name):
            return "imagenet", d / name, ()
    return None


def _offline_source(name: str, tried: list[str]) -> tuple[str, Path, tuple[Path, ...]] | None:
    """The copies shipped with the project or the OS (shared/data, the Debian package)."""
    if name in ("mnist", "fashion-mnist"):
        folder = Path(MNIST_OFFLINE_DIR if name == "mnist" else FASHION_MNIST_OFFLINE_DIR)
        files = idx_files(name, folder)
        if files:
            return "idx", folder, tuple(files)
        hint = "" if name == "mnist" else "; apt-get install dataset-fashion-mnist"
        tried.append(f"offline copy {folder} (missing{hint})")
    elif name == "cifar10-jpeg":
        tarball = Path(CIFAR10_JPEG_TARBALL)
        if tarball.is_file():
            return "jpeg-tarball", tarball, ()
        tried.append(f"offline copy {tarball} (missing)")
    else:
        tried.append("offline copies (none exist for this dataset)")
    return None


def _torchvision_download(name: str, root: Path) -> None:
    """torchvision's own download (its mirrors and retries) into `root`. No process-wide
    socket timeout around it: an offline machine fails at the name lookup anyway."""
    for train in (True, False):
        tv_class(name)(str(root), train=train, download=True)


def _stamp(path: Path) -> str:
    """Identifies a user-given source's contents, so its decoded cache is reused
    only while the files are unchanged."""
    h = hashlib.sha1(str(path.resolve()).encode())
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for fn in sorted(filenames):
            st = os.stat(os.path.join(dirpath, fn))
            h.update(f"{dirpath}/{fn}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def _unavailable(name: str, tried: list[str]) -> DataUnavailableError:
    can_download = name in TORCHVISION
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
        "layouts: " + "; ".join(lay.help for lay in LAYOUTS.values()) + ".",
    ]
    return DataUnavailableError("\n".join(lines))


# --------------------------------------------------------------------------
# The search
# --------------------------------------------------------------------------


def find(name: str, data_dir: str | os.PathLike | None = None, decoded: bool = True) -> Source:
    """Where `name` is, in this order: `data_dir`, the project cache (decoded tensors, then
    torchvision's files), torchvision's download into the cache, the offline copies.

    `data_dir` is the folder the user gave (the caller resolves $ANNSNN_DATA); a folder that
    is not there is an error. ``decoded=False`` skips the project cache's decoded tensors (for a
    second look when that file did not load). ImageNet is never downloaded and has no offline
    copy. Raises DataUnavailableError, naming what was tried, when nothing has it.
    """
    if name not in LAYOUTS:
        raise ValueError(f"unknown dataset '{name}'; valid names: {', '.join(sorted(LAYOUTS))}")
    d = check_data_dir(data_dir)
    if name == "imagenet":
        return _find_imagenet(data_dir)
    cache = Path(CACHE_DIR)
    tried: list[str] = []

    # a. user-given folder wins over everything, including the decoded cache.
    if d is not None:
        found = _in_dir(name, d)
        if found is not None:
            kind, path, files = found
            stamp = _stamp(path)
            return Source(name, kind, path, f"{path}", f"data_dir {path}",
                          cache / f"{name}-{stamp[:10]}-decoded.pt", stamp, files)
        # a folder the user gave is used or refused, never skipped: falling back to another
        # copy would train on data from somewhere else while the manifest named this folder
        raise _unavailable(name, [f"data_dir {d} (no {name} in a known layout)"])

    # b. project cache: decoded tensors, then torchvision's files, then download.
    cpath = cache / f"{name}-decoded.pt"
    if decoded and cpath.is_file():
        return Source(name, "decoded", cpath, f"decoded cache {cpath}", f"decoded cache {cpath}", cpath)
    found, where = _in_dir(name, cache), "project cache"
    if found is None and name in TORCHVISION:
        try:
            _torchvision_download(name, cache)
        except Exception as e:  # offline: fall through to the offline copies
            why = str(e).splitlines()[0][:120] if str(e) else ""
            tried.append(f"torchvision download into {cache} ({type(e).__name__}: {why})")
        else:
            found, where = _in_dir(name, cache), "torchvision download into"
            if found is None:
                tried.append(f"torchvision download into {cache} (finished, but no files found)")
    elif found is None:
        tried.append(f"project cache {cache} (no {name}; it has no download)")

    # c. offline copies shipped with the project / the OS.
    if found is None:
        found, where = _offline_source(name, tried), "offline copy"
    if found is None:
        raise _unavailable(name, tried)
    kind, path, files = found
    return Source(name, kind, path, f"{where} {path}", f"{where} {path}", cpath, None, files)


def _find_imagenet(data_dir: str | os.PathLike | None) -> Source:
    tried = []
    for d, what in ((data_dir, "data_dir"), (CACHE_DIR, "project cache")):
        if d is None:
            continue
        found = _in_dir("imagenet", Path(d).expanduser())
        if found is not None:
            path = found[1]
            return Source("imagenet", "imagenet", path, f"{path}", f"{what} {path}")
        tried.append(f"{what} {d} (no imagenet/{{train,val}})")
        if what == "data_dir":   # used or refused, never skipped (as for the other datasets)
            break
    tried.append("torchvision download (not available for ImageNet)")
    tried.append("offline copies (none exist for ImageNet)")
    raise _unavailable("imagenet", tried)


def find_imagenet(data_dir: str | os.PathLike | None = None) -> Path:
    """The ImageNet folder (``{train,val}/<class>/``): data_dir, else the project cache; never downloaded."""
    return find("imagenet", data_dir).path
