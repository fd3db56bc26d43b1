"""Datasets served as batches on the training device (which dataset is what: the registry, datasets/).

In-memory datasets (CIFAR-10/100, SVHN, MNIST, digits, synthetic) are small: decoded once into a uint8
tensor (datasets/readers.py) and augmented on the device in whole batches (no per-image PIL work).
Image folders stream through a multi-worker DataLoader with the paper's transforms.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from widen_cli import datasets, images
from widen_cli.schema import DatasetConfig
from widen_cli.datasets.readers import Split, load_tensors
from widen_cli.errors import UserError
from widen_cli.hardware import available_cpus
from widen_cli.datasets import InputSpec

# Fixed seed for `dataset.subset`: every run (any seed, any width) sees the same N samples.
SUBSET_SEED = 0
EVAL_BATCH = 1000
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def epoch_seed(seed: int, epoch: int) -> int:
    """The data-order seed of one epoch: a function of (run seed, epoch) only, so a resumed run and
    every DDP rank draw exactly the batches an uninterrupted single-process run draws."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0])


class Shard:
    """Which part of each global batch this process trains on (DDP); (0, 1) is the whole batch."""

    rank: int = 0
    world: int = 1

    def shard(self, rank: int, world: int) -> None:
        self.rank, self.world = rank, world

    def part(self, batch_len: int, training: bool) -> slice | None:
        """This rank's contiguous slice of a global batch, or None to skip it. Training skips a last
        batch smaller than the number of ranks (every rank must take part in every step)."""
        if self.world == 1:
            return slice(None)
        if training and batch_len < self.world:
            return None
        bounds = [batch_len * r // self.world for r in range(self.world + 1)]
        lo, hi = bounds[self.rank], bounds[self.rank + 1]
        return slice(lo, hi) if hi > lo else None


class TensorLoader(Shard):
    """Batches from an in-memory uint8 dataset, normalised and (for training) augmented on the device."""

    def __init__(self, split: Split, mean: torch.Tensor, std: torch.Tensor, batch_size: int,
                 device: torch.device, augment: tuple[str, ...] = (), shuffle: bool = False, seed: int = 0):
        self.images = split.images.to(device)
        self.labels = split.labels.to(device)
        # (x / 255 - mean) / std as one multiply-add on the batch: x * scale + shift. mean and std are
        # per channel [C] or per pixel [C, H, W].
        shape = (1, -1, 1, 1) if mean.ndim == 1 else (1, *mean.shape)
        self.scale = (1 / (255 * std)).to(device).view(shape)
        self.shift = (-mean / std).to(device).view(shape)
        self.batch_size, self.augment, self.shuffle, self.seed = batch_size, augment, shuffle, seed
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.val: TensorLoader | None = None  # the training split's held-out part (dataset.val_fraction)

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's order and augmentation from (seed, epoch) alone."""
        self.generator.manual_seed(epoch_seed(self.seed, epoch))

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    def reseeded(self, seed: int) -> "TensorLoader":
        """The same data (not copied) with the batch order and augmentation of another seed."""
        other = copy.copy(self)
        other.seed = seed
        other.generator = torch.Generator(device=self.labels.device).manual_seed(seed)
        return other

    def __iter__(self):
        n = len(self.labels)
        device = self.labels.device
        order = torch.randperm(n, generator=self.generator, device=device) if self.shuffle else None
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size] if order is not None else slice(start, start + self.batch_size)
            part = self.part(min(self.batch_size, n - start), training=self.shuffle)
            if part is None:
                continue
            # The whole global batch is augmented (cheap, on the device) so the random draws are the
            # single-process run's; each rank then keeps its slice.
            x = self.images[idx]  # still uint8: cropping and flipping move a byte per pixel
            if "crop" in self.augment:
                x = random_crop(x, 4, self.generator)  # pads with 0 (black), as torchvision pads the image
            if "flip" in self.augment:
                x = random_flip(x, self.generator)
            yield torch.addcmul(self.shift, x[part].float(), self.scale), self.labels[idx][part]


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """torchvision's RandomCrop(size, padding) for a whole batch: zero-pad, then a random window each."""
    b, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    oy = torch.randint(0, 2 * padding + 1, (b, 1), generator=generator, device=x.device)
    ox = torch.randint(0, 2 * padding + 1, (b, 1), generator=generator, device=x.device)
    rows = (oy + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (ox + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    chans = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


# ---------------------------------------------------------------- files on disk; in-memory splits (datasets/readers.py)

def require(cfg: DatasetConfig) -> None:
    """Refuse a dataset whose files are not where the config says, naming what is expected; reading
    them is load_data's. `sweep-width` asks this before it writes any member folder."""
    entry = datasets.get(cfg.name)
    if entry.generated is not None or cfg.download:
        return
    if cfg.root is None:
        raise UserError(f"{cfg.name} needs --data-root (where its files lie)")
    root = Path(cfg.root)
    missing = [root / p for p in entry.expected if not (root / p).exists()]
    if missing:
        raise UserError(f"{cfg.name}: {', '.join(map(str, missing))} not found (data root {root}); "
                        f"pass --download to fetch it, or --data-root to point at it")


def _subset(split: Split, n: int | None) -> Split:
    if n is None:
        return split
    if n > len(split.labels):
        raise UserError(f"dataset.subset={n} but the training set has only {len(split.labels)} samples")
    idx = torch.randperm(len(split.labels), generator=torch.Generator().manual_seed(SUBSET_SEED))[:n]
    return Split(split.images[idx], split.labels[idx])


def holdout(split: Split, fraction: float | None, data_seed: int) -> tuple[Split, Split | None]:
    """(the part trained on, the held-out validation part): a fixed random `fraction` of the training
    split, drawn from dataset.data_seed alone, so every run (any seed, lr or width) holds out the same
    examples and never trains on them."""
    if not fraction:
        return split, None
    n = len(split.labels)
    n_val = round(n * fraction)
    if not 0 < n_val < n:
        raise UserError(f"dataset.val_fraction={fraction} of {n} training samples leaves no validation or no "
                        f"training sample")
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(data_seed))
    val, train = idx[:n_val].sort().values, idx[n_val:].sort().values
    return Split(split.images[train], split.labels[train]), Split(split.images[val], split.labels[val])


def pixel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel mean and std [C, H, W] of uint8 images, in [0, 1] units. A pixel that never varies
    (std 0, e.g. a border that is always black) gets std 1: it becomes 0 (its mean) in every image."""
    x = images.double() / 255
    mean, std = x.mean(0), x.std(0)  # unbiased, as channel_stats
    return mean.float(), torch.where(std > 1e-6, std, torch.ones_like(std)).float()


def channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images, in [0, 1] units (computed on the training split).

    From each channel's histogram of the 256 values: exact, and no float copy of the dataset.
    """
    values = torch.arange(256, dtype=torch.float64)
    means, stds = [], []
    for c in range(images.shape[1]):
        counts = torch.bincount(images[:, c].flatten(), minlength=256).double()
        n = counts.sum()
        mean = (counts * values).sum() / n
        means.append(mean)
        stds.append(((counts * (values - mean) ** 2).sum() / (n - 1)).sqrt())  # unbiased, as Tensor.std
    return (torch.stack(means) / 255).float(), (torch.stack(stds) / 255).clamp_min(1e-6).float()


# ---------------------------------------------------------------- image folders (ImageNet and others)

class EpochBatches(Shard):
    """Batch sampler over an image folder: the order of each epoch is drawn from (seed, epoch), and
    under DDP each rank reads only its slice of every global batch (no image is decoded twice)."""

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int = 0):
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def __iter__(self):
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(self.n, generator=g) if self.shuffle else torch.arange(self.n)
        for start in range(0, self.n, self.batch_size):
            batch = order[start:start + self.batch_size]
            part = self.part(len(batch), training=self.shuffle)
            if part is not None:
                yield batch[part].tolist()


class FolderLoader:
    """A DataLoader over an ImageFolder, moving each batch to the device; `skipped`: the unreadable files
    left out (dataset.skip_bad_images)."""

    def __init__(self, loader, device: torch.device, skipped: list[str] = ()):
        self.loader, self.device, self.skipped = loader, device, list(skipped)

    def set_epoch(self, epoch: int) -> None:
        self.loader.batch_sampler.set_epoch(epoch)

    def shard(self, rank: int, world: int) -> None:
        self.loader.batch_sampler.shard(rank, world)

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def num_samples(self) -> int:
        return len(self.loader.dataset)

    def __iter__(self):
        try:
            for x, y in self.loader:
                yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        except images.BadImage as e:
            raise UserError(f"{images.message(e)}; remove or replace it, or pass --skip-bad-images "
                            f"(dataset.skip_bad_images=true) to leave out unreadable images") from None


def _image_folders(cfg: DatasetConfig, batch_size: int, device: torch.device, seed: int):
    from torch.utils.data import DataLoader, Subset
    from torchvision import transforms

    from widen_cli.folders import ImageFolder  # links handled safely (no loops, nothing out of the root)

    root = Path(cfg.root)
    workers = available_cpus() if cfg.workers is None else cfg.workers  # PyTorch warns above the CPUs we may use
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise UserError(f"dataset.workers must be an integer >= 0 or null (the CPUs this process may use), "
                        f"got {cfg.workers!r}")
    for part in ("train", "val"):
        if not (root / part).is_dir():
            raise UserError(f"{cfg.name}: expected class folders under {root / part} "
                            f"(layout <root>/train/<class>/*, <root>/val/<class>/*)")
    size = cfg.image_size
    normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    test_tf = [transforms.Resize(round(size * 256 / 224)), transforms.CenterCrop(size)]
    train_tf = [transforms.RandomResizedCrop(size, scale=(0.2, 1.0))] if "resized_crop" in cfg.augment else test_tf
    if "flip" in cfg.augment:
        train_tf = [*train_tf, transforms.RandomHorizontalFlip()]
    try:
        train = ImageFolder(root / "train", transforms.Compose([*train_tf, transforms.ToTensor(), normalize]),
                            loader=images.read_rgb)
        test = ImageFolder(root / "val", transforms.Compose([*test_tf, transforms.ToTensor(), normalize]),
                           loader=images.read_rgb)
    except (FileNotFoundError, OSError) as e:
        raise UserError(f"{cfg.name}: could not read images under {root}: {str(e).splitlines()[0]}") from None
    if train.classes != test.classes:
        only_train = sorted(set(train.classes) - set(test.classes))[:5]
        only_val = sorted(set(test.classes) - set(train.classes))[:5]
        raise UserError(f"{cfg.name}: class folders differ between {root / 'train'} and {root / 'val'} "
                        f"(only in train: {only_train}, only in val: {only_val})")
    skipped = images.skip_unreadable(root, (train, test), max(workers, 1)) if cfg.skip_bad_images else []
    if cfg.num_classes is not None and cfg.num_classes != len(train.classes):
        raise UserError(f"{cfg.name}: dataset.num_classes={cfg.num_classes} but {root / 'train'} has "
                        f"{len(train.classes)} class folders")
    if cfg.subset is not None:
        if cfg.subset > len(train):
            raise UserError(f"dataset.subset={cfg.subset} but {root / 'train'} has only {len(train)} images")
        idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(SUBSET_SEED))[:cfg.subset]
        train = Subset(train, idx.tolist())
    common = dict(num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    train_dl = DataLoader(train, batch_sampler=EpochBatches(len(train), batch_size, shuffle=True, seed=seed),
                          generator=torch.Generator().manual_seed(seed), **common)
    test_batch = EVAL_BATCH if device.type == "cuda" else batch_size
    test_dl = DataLoader(test, batch_sampler=EpochBatches(len(test), test_batch, shuffle=False), **common)
    spec = InputSpec(channels=3, image_size=size, num_classes=len(test.classes))
    return FolderLoader(train_dl, device, skipped), FolderLoader(test_dl, device, skipped), spec


# ---------------------------------------------------------------- entry point

def load_data(cfg: DatasetConfig, batch_size: int, device: torch.device, seed: int):
    """(train loader, test loader, InputSpec) for a dataset config; data errors become UserError."""
    if datasets.get(cfg.name).layout == datasets.FOLDER:
        return _image_folders(cfg, batch_size, device, seed)
    train, test = load_tensors(cfg)
    mean, std = channel_stats(train.images)  # full training split, before any subset
    # Class count from every label of both splits, before any subset (a subset may miss classes).
    labels = int(torch.cat([train.labels, test.labels]).max()) + 1
    if cfg.num_classes is not None and cfg.num_classes < labels:
        raise UserError(f"{cfg.name}: dataset.num_classes={cfg.num_classes} but its labels go up to {labels - 1} "
                        f"({labels} classes)")
    num_classes = cfg.num_classes or labels
    train, val = holdout(_subset(train, cfg.subset), cfg.val_fraction, cfg.data_seed)
    if cfg.normalize == "per-pixel":  # the paper's Figure 7: over the images trained on only
        mean, std = pixel_stats(train.images)
    spec = InputSpec(channels=train.images.shape[1], image_size=cfg.image_size, num_classes=num_classes)
    loader = TensorLoader(train, mean, std, batch_size, device, cfg.augment, shuffle=True, seed=seed)
    if val is not None:
        loader.val = TensorLoader(val, mean, std, EVAL_BATCH, device)
    return loader, TensorLoader(test, mean, std, EVAL_BATCH, device), spec
