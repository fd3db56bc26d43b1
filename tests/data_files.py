"""Tiny datasets written in each one's real on-disk format (CIFAR pickles, SVHN .mat files, MNIST IDX
files, ImageNet-style class folders), for the tests that read them back through the real loaders.
torchvision checks the md5 of CIFAR and SVHN files against the official archives; the writers point
those expected checksums at the files written here (the product code is not patched)."""
from __future__ import annotations

import hashlib
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torchvision import datasets as tvd

from widen_cli.schema import DatasetConfig


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


class _Py2Str(bytes):
    """A Python 2 `str`: the official CIFAR pickles were written by Python 2, so their keys and
    names load as `str` with encoding='latin1' (what torchvision uses) and as b'...' with 'bytes'."""


class _Py2Pickler(pickle._Pickler):
    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2str(self, obj):
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + bytes(obj))
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + bytes(obj))
        self.memoize(obj)

    dispatch[_Py2Str] = _save_py2str


def _py2_pickle(path: Path, obj) -> None:
    def conv(o):
        if isinstance(o, str):
            return _Py2Str(o.encode("latin1"))
        if isinstance(o, dict):
            return {conv(k): conv(v) for k, v in o.items()}
        if isinstance(o, list):
            return [conv(v) for v in o]
        return o

    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(conv(obj))


def _images(rng, n: int, channels: int, size: int) -> np.ndarray:
    """uint8 N x C x H x W with a different brightness per channel, so normalisation has work to do."""
    offsets = np.array([30, 90, 150][:channels]).reshape(1, channels, 1, 1)
    return (offsets + rng.integers(0, 100, size=(n, channels, size, size))).astype(np.uint8)


@dataclass
class Written:
    """What a fixture wrote: uint8 N x C x H x W images and int labels, as the loader should see them."""
    cfg: DatasetConfig
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    expected_path: Path  # the path error messages should name


def write_cifar10(root: Path, monkeypatch, per_batch: int = 20, n_test: int = 10, seed: int = 0,
                  patch_md5: bool = True, train_classes: int = 10) -> Written:
    rng = np.random.default_rng(seed)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    train_x, train_y = [], []
    for b in range(1, 6):
        x = _images(rng, per_batch, 3, 32)
        y = rng.integers(0, train_classes, per_batch)
        y[:10] = np.arange(10) % train_classes  # every class in every batch
        _py2_pickle(base / f"data_batch_{b}", {
            "batch_label": f"training batch {b} of 5", "labels": [int(v) for v in y],
            "data": x.reshape(per_batch, 3072), "filenames": [f"img_{b}_{i}.png" for i in range(per_batch)],
        })
        train_x.append(x)
        train_y.append(y)
    test_x, test_y = _images(rng, n_test, 3, 32), rng.integers(0, 10, n_test)
    test_y[0] = 9
    _py2_pickle(base / "test_batch", {
        "batch_label": "testing batch 1 of 1", "labels": [int(v) for v in test_y],
        "data": test_x.reshape(n_test, 3072), "filenames": [f"test_{i}.png" for i in range(n_test)],
    })
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _py2_pickle(base / "batches.meta", {"num_cases_per_batch": per_batch, "label_names": names, "num_vis": 3072})
    if patch_md5:
        patch_cifar_md5(monkeypatch, tvd.CIFAR10, base)
    cfg = DatasetConfig(name="cifar10", root=str(root), num_classes=10, image_size=32, augment=("crop", "flip"))
    return Written(cfg, np.concatenate(train_x), np.concatenate(train_y), test_x, test_y, base)


def write_cifar100(root: Path, monkeypatch, n_train: int = 40, n_test: int = 10, seed: int = 1) -> Written:
    rng = np.random.default_rng(seed)
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    splits = {}
    for name, n in (("train", n_train), ("test", n_test)):
        x = _images(rng, n, 3, 32)
        fine = rng.integers(0, 100, n)
        if name == "train":
            fine[:2] = (0, 99)
        _py2_pickle(base / name, {
            "filenames": [f"{name}_{i}.png" for i in range(n)], "batch_label": f"{name} batch",
            "fine_labels": [int(v) for v in fine], "coarse_labels": [int(v) // 5 for v in fine],
            "data": x.reshape(n, 3072),
        })
        splits[name] = (x, fine)
    _py2_pickle(base / "meta", {"fine_label_names": [f"fine{i}" for i in range(100)],
                                "coarse_label_names": [f"coarse{i}" for i in range(20)]})
    patch_cifar_md5(monkeypatch, tvd.CIFAR100, base)
    cfg = DatasetConfig(name="cifar100", root=str(root), num_classes=100, image_size=32, augment=("crop", "flip"))
    return Written(cfg, *splits["train"], *splits["test"], base)


def patch_cifar_md5(monkeypatch, cls, base: Path) -> None:
    """Point torchvision's expected checksums at the files in `base` (torchvision still verifies them)."""
    monkeypatch.setattr(cls, "train_list", [[f, md5(base / f)] for f, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[f, md5(base / f)] for f, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5(base / cls.meta["filename"])})


def patch_svhn_md5(monkeypatch, root: Path) -> None:
    split_list = {k: list(v) for k, v in tvd.SVHN.split_list.items()}
    for split in ("train", "test"):
        path = root / split_list[split][1]
        if path.exists():
            split_list[split][2] = md5(path)
    monkeypatch.setattr(tvd.SVHN, "split_list", split_list)


def write_svhn(root: Path, monkeypatch, n_train: int = 30, n_test: int = 10, seed: int = 2) -> Written:
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    splits = {}
    for name, n in (("train", n_train), ("test", n_test)):
        x = _images(rng, n, 3, 32)  # N x C x H x W
        y = rng.integers(1, 11, n)  # SVHN labels: 1..10, where 10 is the digit 0
        y[:2] = (10, 1)
        # The .mat layout: X is H x W x C x N (uint8), y is N x 1.
        savemat(root / f"{name}_32x32.mat", {"X": np.ascontiguousarray(x.transpose(2, 3, 1, 0)),
                                              "y": y.reshape(n, 1).astype(np.uint8)})
        splits[name] = (x, np.where(y == 10, 0, y))
    patch_svhn_md5(monkeypatch, root)
    cfg = DatasetConfig(name="svhn", root=str(root), num_classes=10, image_size=32, augment=("crop",))
    return Written(cfg, *splits["train"], *splits["test"], root / "train_32x32.mat")


def write_mnist(root: Path, monkeypatch=None, n_train: int = 30, n_test: int = 10, seed: int = 3) -> Written:
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    splits = {}
    for prefix, name, n in (("train", "train", n_train), ("t10k", "test", n_test)):
        x = _images(rng, n, 1, 28)
        y = rng.integers(0, 10, n)
        y[:2] = (0, 9)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">iiii", 2051, n, 28, 28) + x.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">ii", 2049, n) + y.astype(np.uint8).tobytes())
        splits[name] = (x, y)
    cfg = DatasetConfig(name="mnist", root=str(root), num_classes=10, image_size=28)
    return Written(cfg, *splits["train"], *splits["test"], raw)


WRITERS = {"cifar10": write_cifar10, "cifar100": write_cifar100, "svhn": write_svhn, "mnist": write_mnist}


# ---------------------------------------------------------------- image folders

TRAIN_FILES = {"ant": 3, "bee": 3}
VAL_FILES = {"ant": 2, "bee": 2}


def _colour(i: int) -> tuple[int, int, int]:
    return (20 + 23 * i, 220 - 17 * i, (60 + 41 * i) % 256)


def write_folders(root: Path, train=TRAIN_FILES, val=VAL_FILES) -> dict[str, list]:
    """Solid-colour PNGs of varied sizes; the colour identifies each image through any crop or flip."""
    from PIL import Image

    written, i = {}, 0
    for part, counts in (("train", train), ("val", val)):
        written[part] = []
        (root / part).mkdir(parents=True, exist_ok=True)
        for label, (cls, n) in enumerate(sorted(counts.items())):
            (root / part / cls).mkdir(exist_ok=True)
            for k in range(n):
                Image.new("RGB", (40 + 3 * k, 36 + 5 * i % 11), _colour(i)).save(root / part / cls / f"img{k}.png")
                written[part].append((_colour(i), label))
                i += 1
    return written


def _folder_cfg(root: Path, **kw) -> DatasetConfig:
    return DatasetConfig(**{"name": "imagefolder", "root": str(root), "image_size": 32, "num_classes": None,
                            "augment": ("resized_crop", "flip"), "workers": 0, **kw})
