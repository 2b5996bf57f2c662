"""Tests for the data layer (lightning_modules.data, .data_decode, .data_sources).

Fake datasets are written in the real formats (IDX .gz, CIFAR pickles, a JPEG
tarball, an ImageFolder tree) into tmp_path, and the sources module's offline
paths and cache are pointed at them, so the fallback chain is tested without
network and without touching the project cache.  Fake images carry their own
index in pixel (0, 0), so splits can be checked from what the loaders actually
yield.  The real copies, where present, are checked against torchvision's own
readers and against fingerprints of what the committed results were trained on.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import socket
import struct
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import lightning_modules.data as D
import lightning_modules.data_decode as R
import lightning_modules.data_sources as S
from conftest import run_if

N_TRAIN, N_TEST = 200, 50


# ----------------------------------------------------------------------------- writers

def write_idx(path: Path, t: torch.Tensor) -> None:
    """IDX unsigned-byte file, gzipped (the format of the MNIST distribution)."""
    header = struct.pack(">HBB", 0, 0x08, t.ndim) + struct.pack(f">{t.ndim}I", *t.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + t.to(torch.uint8).contiguous().numpy().tobytes())


def fake_28(n: int, marker: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose pixel (0,0) is their index, (0,1)=255, (0,2)=0, (0,3)=marker."""
    g = torch.Generator().manual_seed(marker)
    x = torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)
    x[:, 0, 0] = torch.arange(n, dtype=torch.uint8)
    x[:, 0, 1], x[:, 0, 2], x[:, 0, 3] = 255, 0, marker
    return x, torch.arange(n) % 10


def write_idx_set(folder: Path, marker: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        x, y = fake_28(n, marker)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", y)


def class_color(k: int) -> torch.Tensor:
    return torch.tensor([k * 25, 255 - k * 25, 60 + k * 10], dtype=torch.uint8)


def jpeg_bytes(k: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), tuple(class_color(k).tolist())).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def write_jpeg_tarball(path: Path, per_class: tuple[int, int] = (3, 1)) -> None:
    """{train,test}/<class>/NNNN.jpg, one flat colour per class, as in the shared copy."""
    with tarfile.open(path, "w:gz") as tf:
        for split, n in zip(("train", "test"), per_class):
            for k, cls in enumerate(D.CIFAR10_CLASSES):
                data = jpeg_bytes(k)
                for i in range(n):
                    info = tarfile.TarInfo(f"{split}/{cls}/{i:04d}.jpg")
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))


def write_cifar_pickles(root: Path, name: str, n_train: int = 100, n_test: int = 20) -> None:
    """torchvision's python-pickle layout (cifar-10-batches-py / cifar-100-python), with its
    meta file; torchvision also checks md5s, which `fake_cifar_ok` clears."""
    g = torch.Generator().manual_seed(7)
    ncls = 10 if name == "cifar10" else 100
    key = "labels" if name == "cifar10" else "fine_labels"

    def batch(n, offset):
        x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
        x[:, 0, 0, 0] = torch.arange(offset, offset + n, dtype=torch.uint8)
        return {"data": x.reshape(n, -1).numpy(), key: [(offset + i) % ncls for i in range(n)]}

    def dump(p, d):
        with open(p, "wb") as f:
            pickle.dump(d, f)

    folder = root / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    folder.mkdir(parents=True)
    if name == "cifar10":
        per = n_train // 5
        for i in range(5):
            dump(folder / f"data_batch_{i + 1}", batch(per, i * per))
        dump(folder / "test_batch", batch(n_test, 0))
        dump(folder / "batches.meta", {"label_names": list(D.CIFAR10_CLASSES)})
    else:
        dump(folder / "train", batch(n_train, 0))
        dump(folder / "test", batch(n_test, 0))
        dump(folder / "meta", {"fine_label_names": [f"class{i}" for i in range(100)]})


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture
def downloads(monkeypatch):
    """The download step fails as it does offline; records what was attempted."""
    calls = []

    def fail(name, root):
        calls.append(name)
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: <urlopen error [Errno -2] "
                           "Name or service not known>")

    monkeypatch.setattr(S, "_torchvision_download", fail)
    return calls


@pytest.fixture
def offline(tmp_path, monkeypatch, downloads):
    """Fake offline copies (MNIST marker 11, Fashion-MNIST marker 22, JPEG tarball), empty cache."""
    write_idx_set(tmp_path / "shared" / "mnist", marker=11)
    write_idx_set(tmp_path / "fashion", marker=22)
    write_jpeg_tarball(tmp_path / "shared" / "cifar10-jpeg.tar.gz")
    monkeypatch.setattr(S, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(S, "MNIST_OFFLINE_DIR", tmp_path / "shared" / "mnist")
    monkeypatch.setattr(S, "FASHION_MNIST_OFFLINE_DIR", tmp_path / "fashion")
    monkeypatch.setattr(S, "CIFAR10_JPEG_TARBALL", tmp_path / "shared" / "cifar10-jpeg.tar.gz")
    monkeypatch.delenv(D.DATA_ENV_VAR, raising=False)
    return tmp_path


@pytest.fixture
def fake_cifar_ok(monkeypatch):
    """torchvision checks each CIFAR file's md5 against the real dataset's; a fake cannot match."""
    from torchvision.datasets import CIFAR10, CIFAR100

    for cls in (CIFAR10, CIFAR100):
        monkeypatch.setattr(cls, "train_list", [[f, None] for f, _ in cls.train_list])
        monkeypatch.setattr(cls, "test_list", [[f, None] for f, _ in cls.test_list])
        monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": None})


@pytest.fixture
def nothing(tmp_path, monkeypatch, downloads):
    """No data anywhere."""
    monkeypatch.setattr(S, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(S, "MNIST_OFFLINE_DIR", tmp_path / "absent" / "mnist")
    monkeypatch.setattr(S, "FASHION_MNIST_OFFLINE_DIR", tmp_path / "absent" / "fashion")
    monkeypatch.setattr(S, "CIFAR10_JPEG_TARBALL", tmp_path / "absent" / "cifar10-jpeg.tar.gz")
    monkeypatch.delenv(D.DATA_ENV_VAR, raising=False)
    return tmp_path


def ids(x: torch.Tensor) -> list[int]:
    """Recover the fake images' indices from pixel (0, 0)."""
    return (x[:, 0, 0, 0] * 255).round().long().tolist()


def all_batches(loader):
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


def setup_dm(name, **kw):
    dm = D.build_datamodule(name, **kw)
    dm.prepare_data()
    dm.setup("fit")
    return dm


# ----------------------------------------------------------------------------- registry

def test_dataset_infos():
    assert set(D.DATASETS) == {"fashion-mnist", "mnist", "cifar10", "cifar100", "cifar10-jpeg", "imagenet"}
    for name, info in D.DATASETS.items():
        assert info.name == name
        assert len(info.mean) == len(info.std) == info.in_channels
    assert D.DATASETS["cifar10-jpeg"].mean == (0.4913, 0.4821, 0.4465)
    assert D.DATASETS["cifar10-jpeg"].std == (0.2452, 0.2428, 0.2606)
    assert D.DATASETS["imagenet"].image_size == 224 and D.DATASETS["imagenet"].num_classes == 1000
    assert D.DATASETS["cifar100"].num_classes == 100
    with pytest.raises(Exception):
        D.DATASETS["mnist"].num_classes = 3  # frozen


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as e:
        D.build_datamodule("svhn")
    for name in D.DATASETS:
        assert name in str(e.value)


# ----------------------------------------------------------------------------- sources

@pytest.mark.parametrize("name,marker", [("mnist", 11), ("fashion-mnist", 22)])
def test_idx_offline_fallback(offline, downloads, capsys, name, marker):
    dm = setup_dm(name, batch_size=32, val_fraction=0.1)
    assert "offline copy" in capsys.readouterr().out
    assert downloads == [name]  # the download was tried first, and failed
    assert dm.info is D.DATASETS[name]
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 1, 28, 28) and x.dtype == torch.float32
    assert y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert torch.all(x[:, 0, 0, 1] == 1.0) and torch.all(x[:, 0, 0, 2] == 0.0)
    assert torch.allclose(x[:, 0, 0, 3], torch.full((32,), marker / 255))
    assert torch.equal(y, torch.tensor(ids(x)) % 10)  # labels travel with their images
    tx, ty = all_batches(dm.test_dataloader())
    assert tx.shape == (N_TEST, 1, 28, 28) and torch.equal(ty, torch.arange(N_TEST) % 10)


def test_decoded_cache_is_reused(offline, capsys, monkeypatch):
    first = setup_dm("mnist")
    assert (offline / "cache" / "mnist-decoded.pt").is_file()

    def boom(*a):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(R, "read_idx", boom)
    capsys.readouterr()
    second = setup_dm("mnist")
    assert "decoded cache" in capsys.readouterr().out
    assert torch.equal(first._data["train_x"], second._data["train_x"])


def test_cifar10_jpeg_from_tarball(offline, downloads, capsys):
    dm = setup_dm("cifar10-jpeg", batch_size=8, val_fraction=0.2, calib_size=5)
    assert "offline copy" in capsys.readouterr().out
    assert downloads == []  # cifar10-jpeg never downloads
    assert dm.classes == list(D.CIFAR10_CLASSES)
    assert len(dm.train_set) == 24 and len(dm.val_set) == 6 and len(dm.test_set) == 10
    x, y = all_batches(dm.test_dataloader())
    assert x.shape == (10, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    assert torch.equal(y, torch.arange(10))  # alphabetical folders = CIFAR-10 label order
    for img, k in zip(x, y):  # each class's colour survives JPEG and lands on its label
        assert torch.allclose(img.mean((1, 2)) * 255, class_color(int(k)).float(), atol=6)
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 32, 32)


def test_cifar10_jpeg_folder_in_data_dir(offline, tmp_path):
    root = tmp_path / "user" / "cifar10-jpeg"
    with tarfile.open(offline / "shared" / "cifar10-jpeg.tar.gz") as tf:
        tf.extractall(root, filter="data")
    (root / "train" / "airplane" / "0000.jpg").write_bytes(jpeg_bytes(9))  # mark this copy
    dm = setup_dm("cifar10-jpeg", data_dir=tmp_path / "user")
    img, label = dm.train_set.images[0], dm.train_set.labels[0]  # official index 0
    assert int(label) == 0 and img.shape == (3, 32, 32)
    assert torch.allclose(img.float().mean((1, 2)), class_color(9).float(), atol=6)


@pytest.mark.parametrize("name,ncls", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_pickles_from_data_dir(nothing, fake_cifar_ok, name, ncls):
    write_cifar_pickles(nothing / "user", name)
    dm = setup_dm(name, data_dir=nothing / "user", batch_size=16, val_fraction=0.1)
    assert dm.info.num_classes == ncls
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (90, 10, 20)
    x, y = all_batches(dm.val_dataloader())
    assert x.shape == (10, 3, 32, 32) and y.dtype == torch.int64
    assert torch.equal(y, torch.tensor(ids(x)) % ncls)


def test_data_dir_and_env_win_over_everything(offline, downloads, capsys, monkeypatch):
    setup_dm("mnist")  # fills the default decoded cache from the offline copy (marker 11)
    user = offline / "user"
    write_idx_set(user / "mnist", marker=33)
    downloads.clear()
    capsys.readouterr()
    dm = setup_dm("mnist", data_dir=user)
    assert "data_dir" in capsys.readouterr().out
    assert downloads == []
    x, _ = dm.train_set[0]
    assert round(float(x[0, 0, 3]) * 255) == 33

    monkeypatch.setenv(D.DATA_ENV_VAR, str(user))
    x, _ = setup_dm("mnist").train_set[0]
    assert round(float(x[0, 0, 3]) * 255) == 33
    monkeypatch.delenv(D.DATA_ENV_VAR)
    x, _ = setup_dm("mnist").train_set[0]
    assert round(float(x[0, 0, 3]) * 255) == 11  # the default cache was not overwritten


def test_torchvision_layout_in_data_dir_and_cache(nothing, monkeypatch, capsys):
    write_idx_set(nothing / "user" / "FashionMNIST" / "raw", marker=44)
    x, _ = setup_dm("fashion-mnist", data_dir=nothing / "user").train_set[0]
    assert round(float(x[0, 0, 3]) * 255) == 44

    def fake_download(name, root):  # what torchvision leaves behind after a download
        write_idx_set(Path(root) / "MNIST" / "raw", marker=55)

    monkeypatch.setattr(S, "_torchvision_download", fake_download)
    capsys.readouterr()
    x, _ = setup_dm("mnist").train_set[0]
    assert "torchvision download" in capsys.readouterr().out
    assert round(float(x[0, 0, 3]) * 255) == 55


def test_idx_read_in_place_or_from_a_temporary_root(nothing, monkeypatch):
    """Unpacked IDX files in torchvision's layout are read where they are; gzipped ones are
    unpacked into a temporary root in the cache, gone afterwards (the decoded cache stays)."""
    roots = []
    read = R.read_torchvision

    def spy(name, root):
        roots.append(Path(root))
        return read(name, root)

    monkeypatch.setattr(R, "read_torchvision", spy)
    raw = nothing / "plain" / "MNIST" / "raw"
    write_idx_set(raw, marker=66)
    for gz in raw.glob("*.gz"):
        (raw / gz.stem).write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
    x, _ = setup_dm("mnist", data_dir=nothing / "plain").train_set[0]
    assert round(float(x[0, 0, 3]) * 255) == 66 and roots == [nothing / "plain"]

    write_idx_set(nothing / "gz" / "mnist", marker=77)
    x, _ = setup_dm("mnist", data_dir=nothing / "gz").train_set[0]
    assert round(float(x[0, 0, 3]) * 255) == 77
    assert roots[1].parent == S.CACHE_DIR and not roots[1].exists()
    assert all(p.name.endswith("-decoded.pt") for p in S.CACHE_DIR.iterdir())


def test_jpeg_tarball_reads_like_image_folder(tmp_path):
    """The streamed tarball gives ImageFolder's images, labels and order, whatever the member order."""
    from PIL import Image

    tarball = tmp_path / "copy.tar.gz"
    with tarfile.open(tarball, "w:gz") as tf:
        for split, n in (("test", 2), ("train", 3)):
            for k, cls in reversed(list(enumerate(D.CIFAR10_CLASSES))):
                for i in reversed(range(n)):
                    buf = io.BytesIO()
                    Image.new("RGB", (32, 32), (k * 25, i * 80, 30 * n)).save(buf, format="JPEG", quality=95)
                    info = tarfile.TarInfo(f"{split}/{cls}/{i:04d}.jpg")
                    info.size = len(buf.getvalue())
                    tf.addfile(info, io.BytesIO(buf.getvalue()))
    with tarfile.open(tarball) as tf:
        tf.extractall(tmp_path / "tree", filter="data")
    from_tar, from_folder = R.read_jpeg_tarball(tarball), R.read_jpeg_folder(tmp_path / "tree")
    assert from_tar[4] == from_folder[4] == list(D.CIFAR10_CLASSES)
    for a, b in zip(from_tar[:4], from_folder[:4]):
        assert a.dtype == b.dtype and torch.equal(a, b)
    assert torch.equal(from_tar[1], torch.arange(10).repeat_interleave(3))
    assert from_tar[0][:, 1, 0, 0].tolist()[:3] == sorted(from_tar[0][:, 1, 0, 0].tolist()[:3])  # files by name


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10", "cifar100", "cifar10-jpeg", "imagenet"])
def test_nothing_available_names_three_ways(nothing, name):
    (nothing / "empty").mkdir()
    dm = D.build_datamodule(name, data_dir=nothing / "empty")
    with pytest.raises(D.DataUnavailableError) as e:
        dm.prepare_data()
    assert isinstance(e.value, RuntimeError)
    msg = str(e.value)
    assert name in msg
    assert "network" in msg and "torchvision downloads" in msg  # way 1
    assert "apt-get install dataset-fashion-mnist" in msg  # way 2
    assert str(S.MNIST_OFFLINE_DIR) in msg and str(S.CIFAR10_JPEG_TARBALL) in msg
    assert "--data-dir" in msg and D.DATA_ENV_VAR in msg  # way 3
    for layout in ("MNIST/raw", "cifar-10-batches-py", "cifar10-jpeg/{train,test}", "imagenet/{train,val}"):
        assert layout in msg
    assert str(nothing / "empty") in msg  # says what it tried


@pytest.mark.parametrize("name", ["mnist", "cifar10", "imagenet"])
def test_a_data_dir_that_is_not_there_is_an_error(nothing, name, monkeypatch):
    """A typo in --data-dir used to fall through to the default search (and train on the
    data found elsewhere); now it is one line naming the folder, at construction."""
    for bad, why in ((nothing / "no-such", "does not exist"), (nothing / "a-file", "is not a folder")):
        (nothing / "a-file").touch()
        with pytest.raises(D.DataUnavailableError, match=f"^data_dir {bad} {why}$"):
            D.build_datamodule(name, data_dir=bad)
        with pytest.raises(D.DataUnavailableError, match=f"{bad} {why}"):
            S.find_imagenet(bad) if name == "imagenet" else R.load_in_memory(name, bad)
    monkeypatch.setenv(D.DATA_ENV_VAR, str(nothing / "no-such"))
    with pytest.raises(D.DataUnavailableError, match=rf"^\${D.DATA_ENV_VAR} {nothing / 'no-such'} does not exist$"):
        D.build_datamodule(name)


def test_the_missing_data_message_has_a_one_line_form(nothing):
    (nothing / "empty").mkdir()
    with pytest.raises(D.DataUnavailableError) as e:
        D.build_datamodule("cifar100", data_dir=nothing / "empty").prepare_data()
    one = e.value.one_line()
    assert "\n" not in one and one.startswith("No data for dataset 'cifar100'. Tried: ")
    assert "--data-dir DIR" in one and D.DATA_ENV_VAR in one and str(nothing / "empty") in one


def test_imagenet_folder(nothing):
    from PIL import Image

    root = nothing / "user" / "imagenet"
    for split, n in (("train", 6), ("val", 2)):
        for cls in ("n01440764", "n01443537"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (50 + 10 * i, 40), (200, 30, 30)).save(root / split / cls / f"{i}.JPEG")
    dm = setup_dm("imagenet", data_dir=nothing / "user", batch_size=4, val_fraction=0.25, calib_size=3)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set), len(dm.calib_set)) == (9, 3, 4, 3)
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader(), dm.calib_dataloader()):
        x, y = next(iter(loader))
        assert x.shape[1:] == (3, 224, 224) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert 0 <= float(x.min()) and float(x.max()) <= 1
    _, y = all_batches(dm.test_dataloader())
    assert sorted(y.tolist()) == [0, 0, 1, 1]


# ----------------------------------------------------------------------------- splits

def test_split_disjoint_sizes_and_seeded(offline):
    dm = setup_dm("mnist", val_fraction=0.1, seed=0, batch_size=64)
    tr = ids(all_batches(dm.train_dataloader())[0])
    va = ids(all_batches(dm.val_dataloader())[0])
    assert len(tr) == 180 and len(va) == 20
    assert set(tr).isdisjoint(va) and set(tr) | set(va) == set(range(N_TRAIN))
    assert va == ids(all_batches(dm.val_dataloader())[0])  # val unshuffled
    assert tr != ids(all_batches(dm.train_dataloader())[0])  # train reshuffled each epoch

    same = setup_dm("mnist", val_fraction=0.1, seed=0)
    other = setup_dm("mnist", val_fraction=0.1, seed=1)
    assert torch.equal(same.val_indices, dm.val_indices)
    assert set(other.val_indices.tolist()) != set(dm.val_indices.tolist())
    assert len(setup_dm("mnist", val_fraction=0.25).val_set) == 50


def test_calib_subset_fixed_and_from_training_part(offline):
    dm = setup_dm("mnist", seed=3, calib_size=50, eval_batch_size=16)
    calib = ids(all_batches(dm.calib_dataloader())[0])
    assert len(calib) == 50 and len(set(calib)) == 50
    assert set(calib) <= set(dm.train_indices.tolist())
    assert set(calib).isdisjoint(dm.val_indices.tolist())
    assert calib == ids(all_batches(dm.calib_dataloader())[0])  # unshuffled
    assert calib == ids(all_batches(setup_dm("mnist", seed=3, calib_size=50).calib_dataloader())[0])
    assert calib != ids(all_batches(setup_dm("mnist", seed=4, calib_size=50).calib_dataloader())[0])
    assert len(setup_dm("mnist", calib_size=10_000).calib_set) == 180  # capped at the training part


def test_test_loader_order_and_subset(offline):
    dm = setup_dm("mnist", eval_batch_size=16)
    assert ids(all_batches(dm.test_dataloader())[0]) == list(range(N_TEST))
    sub = ids(all_batches(setup_dm("mnist", test_subset=10).test_dataloader())[0])
    assert len(sub) == 10 and len(set(sub)) == 10 and sub != list(range(10))
    assert sub == ids(all_batches(setup_dm("mnist", test_subset=10, seed=5).test_dataloader())[0])
    bigger = ids(all_batches(setup_dm("mnist", test_subset=20).test_dataloader())[0])
    assert bigger[:10] == sub  # the first N of one fixed order


@pytest.mark.parametrize("n,frac,seed", [(60_000, 0.1, 0), (60_000, 0.1, 1), (50_000, 0.1, 2),
                                         (1_281_167, 0.01, 0), (200, 0.25, 3), (10, 0.0, 0)])
def test_split_indices_are_the_committed_split(n, frac, seed):
    """random_split must give the split the committed nets were trained on: val is the head
    of randperm(n) from a generator seeded with `seed`, train the rest, in that order."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = int(round(frac * n))
    train, val = D.split_indices(n, frac, seed)
    assert train.dtype == val.dtype == torch.int64
    assert torch.equal(val, perm[:n_val]) and torch.equal(train, perm[n_val:])


# ----------------------------------------------------------------------------- augmentation

def test_cifar_train_augmented_eval_not(nothing, fake_cifar_ok):
    write_cifar_pickles(nothing / "user", "cifar10")
    dm = setup_dm("cifar10", data_dir=nothing / "user", val_fraction=0.2)
    idx = list(range(16))
    train_collate = dm.train_dataloader().collate_fn
    raw = dm.train_set.__getitems__(idx)[0]
    a, ya = train_collate(dm.train_set.__getitems__(idx))
    b, yb = train_collate(dm.train_set.__getitems__(idx))
    assert a.dtype == torch.float32 and a.shape == (16, 3, 32, 32)
    assert torch.equal(ya, yb) and not torch.equal(a, b)  # new crops/flips each epoch
    # each output is a 32x32 window of the zero-padded image, maybe mirrored
    padded = torch.nn.functional.pad(raw, (4, 4, 4, 4)).float() / 255
    for img, p in zip(a, padded):
        windows = [p[:, i:i + 32, j:j + 32] for i in range(9) for j in range(9)]
        assert any(torch.equal(img, w) or torch.equal(img, w.flip(-1)) for w in windows)

    val_collate = dm.val_dataloader().collate_fn
    v1, _ = val_collate(dm.val_set.__getitems__(idx))
    v2, _ = val_collate(dm.val_set.__getitems__(idx))
    assert torch.equal(v1, v2)
    assert torch.equal(v1, dm.val_set.__getitems__(idx)[0].float() / 255)
    e1, e2 = all_batches(dm.val_dataloader()), all_batches(dm.val_dataloader())
    assert torch.equal(e1[0], e2[0]) and torch.equal(e1[1], e2[1])


def test_28x28_sets_not_augmented(offline):
    dm = setup_dm("fashion-mnist")
    idx = list(range(32))
    x, _ = dm.train_dataloader().collate_fn(dm.train_set.__getitems__(idx))
    assert torch.equal(x, torch.stack([dm.train_set[i][0] for i in idx]))


def test_no_global_state_per_batch(tmp_path, monkeypatch, fake_cifar_ok):
    """Batches (gather, crop/flip, to float) and the download step leave the process's intra-op
    thread count and default socket timeout alone: not even set and restored."""
    calls = []
    n_threads, timeout = torch.get_num_threads(), socket.getdefaulttimeout()
    torch.set_num_threads(2)  # conftest runs on one thread; a "set to 1 if not 1" must show
    try:
        monkeypatch.setattr(S, "CACHE_DIR", tmp_path / "cache")
        monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(("threads", n)))
        monkeypatch.setattr(socket, "setdefaulttimeout", lambda t: calls.append(("timeout", t)))
        write_cifar_pickles(tmp_path / "user", "cifar10")
        dm = setup_dm("cifar10", data_dir=tmp_path / "user", batch_size=16)
        for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader(), dm.calib_dataloader()):
            for _ in loader:
                assert (torch.get_num_threads(), socket.getdefaulttimeout()) == (2, timeout)

        seen = []

        class Offline:  # stands in for torchvision's dataset class when offline
            def __init__(self, root, train, download):
                seen.append(socket.getdefaulttimeout())
                raise RuntimeError("offline")

        monkeypatch.setattr(S, "tv_class", lambda name: Offline)
        with pytest.raises(RuntimeError):
            S._torchvision_download("mnist", tmp_path / "cache")
        assert seen == [timeout] and calls == []
    finally:
        monkeypatch.undo()
        torch.set_num_threads(n_threads)


# ----------------------------------------------------------------------------- real data

# sha256 of the decoded uint8 tensors as the readers before torchvision produced them
# (commit f525476), which the committed results were trained on: any change of reader
# must leave every pixel and label as it was.
BEFORE = {
    "mnist": {
        "train_x": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
        "train_y": "e474323ac02fc156161b0bbb1f8c9cfeb327a74bcd9f9680a8385269a24f566c",
        "test_x": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
        "test_y": "2fd8de6bdb8d11780b4b96dc57847bcfe6953f7c32aa48bfcd8237c3b7847243",
        "first100_train_x": "c8d7b3ac57a59fa463cbbcdc21a53485e2990f12ca46d0fef62dd86cadfd67a3",
    },
    "fashion-mnist": {
        "train_x": "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
        "train_y": "e3245b63f7c40d1c8b652835f19744d970c1613b40ddac6bcfc87b9c46e16a0b",
        "test_x": "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
        "test_y": "d51d859896c55775b9e9e219b77ff03bcec1b6ac322f313544dc3f9e7bc94fae",
        "first100_train_x": "9fd5e05238929f78618002dd971c29d7154e418c5e6c5159dcbc48bead93a90f",
    },
    "cifar10-jpeg": {
        "train_x": "f12bc101717acd0df836682c335adf2f0f589f6a84917c61c9d2512d7b4bae09",
        "train_y": "a2084e87c76d1d22ef5ac30a81addb49027565cdc65f0e1b451ae5969d56117e",
        "test_x": "2fb7dfcd1893f37e705d81075b9d9d7245d714b136474baa19c48f02d7a6f670",
        "test_y": "c5575395e636cadcdfe5764ffc8d56f56d234a4dc687096f8fc2d975dd6a5597",
        "first100_train_x": "a23fc1a0fe165932e048e51afca87724ac6af5f4c7d04df05d659ae7be4615ce",
    },
}


def sha256(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


def fingerprints(d: dict) -> dict:
    out = {k: sha256(d[k]) for k in ("train_x", "train_y", "test_x", "test_y")}
    return {**out, "first100_train_x": sha256(d["train_x"][:100])}


@pytest.mark.parametrize("name", [
    pytest.param("mnist", marks=run_if(paths=[S.MNIST_OFFLINE_DIR])),
    pytest.param("fashion-mnist", marks=run_if(fashion_mnist=True)),
])
def test_real_idx_as_torchvision_reads_it_and_as_before(name, tmp_path, monkeypatch, downloads):
    """The offline copies load bit for bit as torchvision's own IDX reader decodes the raw
    files, and as the pre-torchvision readers did."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    monkeypatch.setattr(S, "CACHE_DIR", tmp_path / "cache")
    d = R.load_in_memory(name)
    assert fingerprints(d) == BEFORE[name]
    folder = Path(S.MNIST_OFFLINE_DIR if name == "mnist" else S.FASHION_MNIST_OFFLINE_DIR)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        raw = {}
        for kind in ("images-idx3", "labels-idx1"):
            path = tmp_path / f"{prefix}-{kind}-ubyte"
            path.write_bytes(gzip.decompress((folder / f"{path.name}.gz").read_bytes()))
            raw[kind] = path
        assert torch.equal(d[f"{split}_x"][:100, 0], read_image_file(str(raw["images-idx3"]))[:100])
        assert torch.equal(d[f"{split}_y"][:100], read_label_file(str(raw["labels-idx1"]))[:100])


@run_if(paths=[S.CIFAR10_JPEG_TARBALL])
def test_real_cifar10_jpeg_first_images(tmp_path):
    """The first 100 training images of the JPEG copy (airplanes, by file name) decode as
    ImageFolder's own PIL loader decodes them, and as before; tarball and folder agree."""
    from torchvision.datasets.folder import default_loader

    first = {}  # (split, class) -> {file name: bytes}: all train airplanes, one image per other class
    with tarfile.open(S.CIFAR10_JPEG_TARBALL) as tf:
        for m in tf:
            parts = Path(m.name).parts
            if m.isfile() and len(parts) == 3:
                first.setdefault(parts[:2], {})[parts[2]] = tf.extractfile(m).read()
    files = {key: sorted(names)[:100 if key == ("train", "airplane") else 1] for key, names in first.items()}
    with tarfile.open(tmp_path / "part.tar", "w") as tf:
        for (split, cls), names in files.items():
            for fn in names:
                (tmp_path / "tree" / split / cls).mkdir(parents=True, exist_ok=True)
                (tmp_path / "tree" / split / cls / fn).write_bytes(first[split, cls][fn])
                tf.add(tmp_path / "tree" / split / cls / fn, f"{split}/{cls}/{fn}")
    tx, ty, *_ = R.read_jpeg_folder(tmp_path / "tree")
    assert sha256(tx[:100]) == BEFORE["cifar10-jpeg"]["first100_train_x"] and torch.all(ty[:100] == 0)
    for img, fn in zip(tx[:5], files["train", "airplane"]):
        pil = torch.as_tensor(np.array(default_loader(str(tmp_path / "tree" / "train" / "airplane" / fn))))
        assert torch.equal(img, pil.permute(2, 0, 1))
    assert torch.equal(R.read_jpeg_tarball(tmp_path / "part.tar")[0], tx)


@run_if(fashion_mnist=True)
def test_real_fashion_mnist(tmp_path, monkeypatch, downloads):
    monkeypatch.setattr(S, "CACHE_DIR", tmp_path)
    monkeypatch.setattr(S, "FASHION_MNIST_OFFLINE_DIR", Path("/usr/share/datasets/fashion-mnist"))
    monkeypatch.delenv(D.DATA_ENV_VAR, raising=False)
    dm = setup_dm("fashion-mnist", val_fraction=0.1)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (54_000, 6_000, 10_000)
    assert dm.info.num_classes == 10 and dm.classes[0] == "T-shirt/top" and len(dm.classes) == 10
    tx = dm._data["train_x"]
    assert tx.shape == (60_000, 1, 28, 28) and tx.dtype == torch.uint8
    assert torch.equal(dm._data["train_y"].bincount(), torch.full((10,), 6000))
    assert fingerprints(dm._data) == BEFORE["fashion-mnist"]
    x, y = all_batches(dm.test_dataloader())
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0 and set(y.tolist()) == set(range(10))
    mean, std = (tx.float() / 255).mean().item(), (tx.float() / 255).std().item()
    assert abs(mean - dm.info.mean[0]) < 1e-3 and abs(std - dm.info.std[0]) < 1e-3
    t = time.perf_counter()
    n = sum(len(b[0]) for b in dm.train_dataloader())
    print(f"fashion-mnist train epoch at batch 128: {time.perf_counter() - t:.2f} s")
    assert n == 54_000


@run_if(paths=[S.SHARED_DATA_DIR / "mnist"])
def test_real_mnist_offline_copy(tmp_path, monkeypatch, downloads):
    monkeypatch.setattr(S, "CACHE_DIR", tmp_path)
    monkeypatch.delenv(D.DATA_ENV_VAR, raising=False)
    dm = setup_dm("mnist")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (54_000, 6_000, 10_000)
    tx = dm._data["train_x"].float() / 255
    assert abs(tx.mean().item() - 0.1307) < 1e-3 and abs(tx.std().item() - 0.3081) < 1e-3
    assert fingerprints(dm._data) == BEFORE["mnist"]


@pytest.mark.slow
@run_if(paths=[S.CIFAR10_JPEG_TARBALL])
def test_real_cifar10_jpeg(tmp_path, monkeypatch, downloads):
    monkeypatch.setattr(S, "CACHE_DIR", tmp_path)
    monkeypatch.delenv(D.DATA_ENV_VAR, raising=False)
    dm = setup_dm("cifar10-jpeg")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (45_000, 5_000, 10_000)
    assert torch.equal(dm._data["test_y"].bincount(), torch.full((10,), 1000))
    assert fingerprints(dm._data) == BEFORE["cifar10-jpeg"]
    tx = dm._data["train_x"].float() / 255
    assert torch.allclose(tx.mean((0, 2, 3)), torch.tensor(dm.info.mean), atol=1e-3)
    assert torch.allclose(tx.std((0, 2, 3)), torch.tensor(dm.info.std), atol=1e-3)


# ----------------------------------------------------------------------------- Lightning

def test_lightning_fit_and_test_use_the_datamodule(offline):
    import lightning as L

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10))
            self.seen = {"train": 0, "val": 0, "test": 0}

        def _step(self, batch, kind):
            x, y = batch
            assert x.dtype == torch.float32 and x.shape[1:] == (1, 28, 28) and y.dtype == torch.int64
            self.seen[kind] += len(x)
            return torch.nn.functional.cross_entropy(self.net(x), y)

        def training_step(self, batch, i):
            return self._step(batch, "train")

        def validation_step(self, batch, i):
            self._step(batch, "val")

        def test_step(self, batch, i):
            self._step(batch, "test")

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = D.build_datamodule("mnist", batch_size=64, test_subset=30)
    model = Tiny()
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm, verbose=False)
    assert model.seen == {"train": 180, "val": 20, "test": 30}


# ----------------------------------------------------------------------------- the data path

def entries(drive) -> tuple[dict, list]:
    """Run `drive` under sys.setprofile and count the entries into the three data modules.

    An edge is a call of a function of data.py, data_decode.py or data_sources.py whose caller
    -- the nearest enclosing frame in one of those three files, library frames (torch,
    Lightning, torchvision, the standard library) seen through -- is in another of them, or
    "outside" when there is none. Entries into a module: its edges from the other two, plus one
    for all its edges from outside (the runner using the DataModule: build, prepare_data, setup,
    train_dataloader, and the DataLoader's calls of the dataset and collate_fn on its behalf).
    Returns ({module: entries}, [(caller, callee, function), ...]).
    """
    files = {m.__file__: m.__name__.rsplit(".", 1)[1] for m in (D, R, S)}
    edges = []

    def profile(frame, event, arg):
        if event != "call" or frame.f_code.co_filename not in files:
            return
        callee = files[frame.f_code.co_filename]
        f = frame.f_back
        while f is not None and f.f_code.co_filename not in files:
            f = f.f_back
        caller = "outside" if f is None else files[f.f_code.co_filename]
        if caller != callee:
            edges.append((caller, callee, frame.f_code.co_name))

    sys.setprofile(profile)
    try:
        drive()
    finally:
        sys.setprofile(None)
    count = dict.fromkeys(files.values(), 0)
    for caller, callee, _ in edges:
        count[callee] += caller != "outside"
    for callee in {callee for caller, callee, _ in edges if caller == "outside"}:
        count[callee] += 1
    return count, edges


def first_batch(name, **kw):
    """What bench/run/runner.py's datamodule does, then the first training batch."""
    def drive():
        dm = D.build_datamodule(name, **kw)
        dm.prepare_data()
        dm.setup("fit")
        next(iter(dm.train_dataloader()))
    return drive


def write_imagenet(root: Path) -> None:
    from PIL import Image

    for split, n in (("train", 6), ("val", 2)):
        for cls in ("n01440764", "n01443537"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (50 + 10 * i, 40), (200, 30, 30)).save(root / split / cls / f"{i}.JPEG")


@pytest.mark.parametrize("case", ["offline copy", "decoded cache", "data_dir", "data_dir decoded", "imagenet",
                                  "corrupt decoded cache"])
def test_one_straight_data_path(offline, case):
    """From constructing the datamodule to its first training batch, the DataModule calls only
    the decode module, which calls the sources module once (a decoded cache that does not load
    costs that second look); each of the three modules is entered once."""
    kw, name = {}, "mnist"
    if case in ("decoded cache", "corrupt decoded cache"):
        first_batch("mnist")()
    if case == "corrupt decoded cache":
        (offline / "cache" / "mnist-decoded.pt").write_bytes(b"not a torch file")
    if case.startswith("data_dir"):
        write_idx_set(offline / "user" / "mnist", marker=33)
        kw = {"data_dir": offline / "user"}
    if case == "data_dir decoded":
        first_batch("mnist", **kw)()
    if case == "imagenet":
        write_imagenet(offline / "user" / "imagenet")
        name, kw = "imagenet", {"data_dir": offline / "user", "batch_size": 4, "calib_size": 3}
    count, edges = entries(first_batch(name, **kw))
    expected = {"data": 1, "data_decode": 1, "data_sources": 2 if case == "corrupt decoded cache" else 1}
    assert count == expected, edges
    assert {e[:2] for e in edges} == {("outside", "data"), ("data", "data_decode"), ("data_decode", "data_sources")}


def test_the_entry_count_sees_a_detour(offline):
    """The measurement itself: a driver that also asks the sources module directly, and a
    decoded cache that does not load, each show up as one more entry."""
    def detour():
        first_batch("mnist")()
        S.find("mnist")
    count, edges = entries(detour)
    assert count == {"data": 1, "data_decode": 1, "data_sources": 2}
    assert ("outside", "data_sources", "find") in edges


def test_sources_and_the_data_dir_check_import_without_torch():
    """The command line checks --data-dir with the data stack's own check before a run starts."""
    import subprocess

    code = ("import sys, lightning_modules.data_sources, lightning_modules.data_dir; "
            "print(sorted(m for m in ('torch', 'lightning', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"


def test_the_data_modules_import_no_private_names():
    import ast

    for path in sorted((Path(__file__).resolve().parents[1] / "lightning_modules").glob("data*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or node.module.startswith("lightning_modules")):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from {node.module}"


def test_every_dataset_has_a_layout():
    assert set(S.LAYOUTS) == set(D.DATASETS)
