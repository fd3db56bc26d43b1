"""Readers of the in-memory datasets: both splits as uint8 tensors (Split), each in its on-disk format.

The registry (widen_cli/datasets) names one of these for each in-memory dataset (`Dataset.reader`);
image folders stream instead (data.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from widen_cli import datasets
from widen_cli.schema import DatasetConfig
from widen_cli.datasets import files
from widen_cli.errors import UserError


@dataclass
class Split:
    images: torch.Tensor  # uint8, N x C x H x W
    labels: torch.Tensor  # int64, N


def _torchvision_split(cls, root: Path, train: bool, download: bool) -> Split:
    ds = cls(str(root), train=train, download=download)
    images = torch.as_tensor(ds.data)
    if images.ndim == 3:  # MNIST: N x H x W
        images = images.unsqueeze(1)
    elif images.shape[-1] == 3:  # CIFAR: N x H x W x C
        images = images.permute(0, 3, 1, 2)
    return Split(images.contiguous(), torch.as_tensor(ds.targets, dtype=torch.long))


def _svhn_split(cls, root: Path, train: bool, download: bool) -> Split:
    ds = cls(str(root), split="train" if train else "test", download=download)
    return Split(torch.as_tensor(ds.data), torch.as_tensor(ds.labels, dtype=torch.long))


def digits(cfg: DatasetConfig) -> tuple[Split, Split]:
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.as_tensor(data.images * (255 / 16)).round().to(torch.uint8).unsqueeze(1)
    labels = torch.as_tensor(data.target, dtype=torch.long)
    tr, te = files.digits_split()
    return Split(images[tr], labels[tr]), Split(images[te], labels[te])


def synthetic(cfg: DatasetConfig) -> tuple[Split, Split]:
    """A learnable toy problem: each class is a fixed random prototype plus per-sample noise."""
    g = torch.Generator().manual_seed(cfg.data_seed)
    shape = (cfg.channels, cfg.image_size, cfg.image_size)
    prototypes = torch.rand(cfg.num_classes, *shape, generator=g)

    def make(n):
        labels = torch.randint(0, cfg.num_classes, (n,), generator=g)
        x = 0.6 * prototypes[labels] + 0.4 * torch.rand(n, *shape, generator=g)
        return Split((x * 255).round().to(torch.uint8), labels)

    return make(cfg.train_size), make(cfg.test_size)


def torchvision(cfg: DatasetConfig) -> tuple[Split, Split]:
    """MNIST, CIFAR and SVHN in torchvision's layouts under dataset.root (fetched with dataset.download)."""
    from torchvision import datasets as tv

    entry = datasets.get(cfg.name)
    if cfg.root is None:
        raise UserError(f"{cfg.name} needs --data-root (a folder for torchvision's {cfg.name} files)")
    root = Path(cfg.root)
    if not cfg.download and not root.is_dir():
        raise UserError(f"data root {root} does not exist; expected {cfg.name} at {entry.expected_text(root)} "
                        f"(pass --download to fetch it, or --data-root to point at it)")
    cls = getattr(tv, entry.source)
    split = _svhn_split if cls is tv.SVHN else _torchvision_split  # SVHN names its splits and labels its own way
    try:
        return split(cls, root, True, cfg.download), split(cls, root, False, cfg.download)
    except UserError:
        raise
    except Exception as e:  # torchvision reports missing/corrupt files as RuntimeError, unpickling errors, ...
        reason = str(e).strip().splitlines()[0] if str(e).strip() else "the files are not in its format"
        raise UserError(f"could not read {cfg.name} from {entry.expected_text(root)} ({reason}); "
                        f"pass --download to fetch it, or --data-root to point at it") from None


def _resize(split: Split, size: int) -> Split:
    if split.images.shape[-1] == size and split.images.shape[-2] == size:
        return split
    x = F.interpolate(split.images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return Split(x.round().clamp(0, 255).to(torch.uint8), split.labels)


def load_tensors(cfg: DatasetConfig) -> tuple[Split, Split]:
    """Both splits of an in-memory dataset as uint8 tensors at the configured image size."""
    entry = datasets.get(cfg.name)
    if entry.reader is None:
        raise UserError(f"{cfg.name} is read from image folders as it trains, not into memory; in-memory: "
                        f"{', '.join(datasets.names(datasets.TENSOR))}")
    train, test = globals()[entry.reader](cfg)
    return _resize(train, cfg.image_size), _resize(test, cfg.image_size)
