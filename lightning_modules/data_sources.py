"""Where the benchmark's datasets come from, read into memory once.

Why it looks like this:

* The same code runs on a machine with network, on an offline machine with the
  shared copies, and on a cluster with a shared data folder: data is looked for
  in a fixed order (``data_dir``/``ANNSNN_DATA``, project cache, torchvision
  download, offline copies), one line says which source was used, and when
  none has it one error names the three ways to supply it.
* Reading a copy once found is ``data_readers`` (torchvision does the parsing).
* The decoded uint8 tensors are cached as ``<cache>/<name>-decoded.pt``: the
  60,000 JPEGs of cifar10-jpeg take a while to decode, the tensors a second to load.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from annsnn.datasets import DATASETS

from . import data_readers as R
from .data_dir import DATA_ENV_VAR, DataUnavailableError, check_data_dir

__all__ = ["DataUnavailableError", "check_data_dir", "load_in_memory", "find_imagenet", "DATA_ENV_VAR"]

# Where data lives.  Module-level so tests (and odd machines) can repoint them;
# they are read at call time, never bound as default arguments.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = Path(os.environ.get("ANNSNN_CACHE") or PROJECT_ROOT / ".data")  # tests: a tmp folder
SHARED_DATA_DIR = PROJECT_ROOT.parent / "shared" / "data"
MNIST_OFFLINE_DIR = SHARED_DATA_DIR / "mnist"
FASHION_MNIST_OFFLINE_DIR = Path("/usr/share/datasets/fashion-mnist")
CIFAR10_JPEG_TARBALL = SHARED_DATA_DIR / "cifar10-jpeg.tar.gz"
_CACHE_VERSION = 1


@rank_zero_only
def _say(msg: str) -> None:
    print(f"[data] {msg}", flush=True)


def _torchvision_download(name: str, root: Path) -> None:
    """torchvision's own download (its mirrors and retries) into `root`. No process-wide
    socket timeout around it: an offline machine fails at the name lookup anyway."""
    for train in (True, False):
        R.tv_class(name)(str(root), train=train, download=True)


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
        for folder in (d / R.TORCHVISION[name] / "raw", d / name):
            if R.idx_files(name, folder):
                return _Source(f"{folder}", folder, lambda f=folder: R.read_idx(name, f, Path(CACHE_DIR)))
    elif name in ("cifar10", "cifar100"):
        folder = d / R.tv_class(name).base_folder
        if R.cifar_folder_ok(name, folder):
            return _Source(f"{folder}", folder, lambda: R.read_torchvision(name, d))
    elif name == "cifar10-jpeg":
        folder = d / "cifar10-jpeg"
        if R.jpeg_folder_ok(folder):
            return _Source(f"{folder}", folder, lambda: R.read_jpeg_folder(folder))
    elif name == "imagenet":
        folder = d / "imagenet"
        if (folder / "train").is_dir() and (folder / "val").is_dir():
            return _Source(f"{folder}", folder, lambda: None)
    return None


def _offline_source(name: str, tried: list[str]) -> _Source | None:
    """The copies shipped with the project or the OS (shared/data, the Debian package)."""
    if name in ("mnist", "fashion-mnist"):
        folder = Path(MNIST_OFFLINE_DIR if name == "mnist" else FASHION_MNIST_OFFLINE_DIR)
        if R.idx_files(name, folder):
            return _Source(f"offline copy {folder}", folder, lambda: R.read_idx(name, folder, Path(CACHE_DIR)))
        hint = "" if name == "mnist" else "; apt-get install dataset-fashion-mnist"
        tried.append(f"offline copy {folder} (missing{hint})")
    elif name == "cifar10-jpeg":
        tarball = Path(CIFAR10_JPEG_TARBALL)
        if tarball.is_file():
            return _Source(f"offline copy {tarball}", tarball, lambda: R.read_jpeg_tarball(tarball))
        tried.append(f"offline copy {tarball} (missing)")
    else:
        tried.append("offline copies (none exist for this dataset)")
    return None


def _layouts_help() -> str:
    return (
        "MNIST/raw or mnist/ (IDX files, .gz or not); FashionMNIST/raw or fashion-mnist/; "
        "cifar-10-batches-py/; cifar-100-python/; cifar10-jpeg/{train,test}/<class>/*.jpg; "
        "imagenet/{train,val}/<class>/*.JPEG"
    )


def _unavailable(name: str, tried: list[str]) -> DataUnavailableError:
    can_download = name in R.TORCHVISION
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


# --------------------------------------------------------------------------
# The decoded cache
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------


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
        d = check_data_dir(data_dir)
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
    elif name in R.TORCHVISION:
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
        src = _offline_source(name, tried)
    if src is None:
        raise _unavailable(name, tried)
    _say(f"{name}: {src.description} (decoding once into {cpath})")
    return _decode(name, src, cpath, None)


def find_imagenet(data_dir: str | os.PathLike | None = None) -> Path:
    """ImageNet is never downloaded: data_dir / $ANNSNN_DATA, else the project cache."""
    tried = []
    check_data_dir(data_dir)
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
