"""The dataset registry: each dataset's facts, held once, for every module that needs one.

A config's `dataset.name` names an entry here; a user's own conf/dataset YAML (another root, image size
or class count) names one too (`name: imagefolder`). A new dataset is one entry in DATASETS and one
conf/dataset YAML (docs/adding-a-dataset.md).

This module imports neither torch nor torchvision (config checks and plans ask it): reading the data is
readers.py's (in-memory datasets) and data.py's (image folders, streamed); sizes and file lists that
depend on the data on disk are files.py's, the same code the readers use.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from widen_cli.datasets import files
from widen_cli.errors import UserError

if TYPE_CHECKING:
    from widen_cli.schema import DatasetConfig

TENSOR = "tensor"  # decoded once into uint8 tensors and augmented on the device in whole batches
FOLDER = "folder"  # <root>/train/<class>/* and <root>/val/<class>/*, streamed through a DataLoader
# dataset.augment's names for each layout: tensors are augmented on the device, image folders by torchvision.
AUGMENTATIONS = {TENSOR: ("crop", "flip"), FOLDER: ("resized_crop", "flip")}


@dataclass(frozen=True)
class Dataset:
    name: str
    layout: str  # TENSOR or FOLDER
    channels: int
    side: int | None  # image side as read, before any resize; None: the config's (dataset.image_size)
    classes: int | None  # None: the config's (synthetic) or one per class folder
    train: int | None = None  # the documented training and test split sizes (None: no fixed size)
    test: int | None = None
    # Made from the config alone (no files): (train, test) sizes from the same code that makes the data.
    generated: Callable[[DatasetConfig], tuple[int, int]] | None = None
    expected: tuple[str, ...] = ()  # what must be under the data root (refusals name them)
    reader: str | None = None  # readers.py's function reading both splits (in-memory datasets)
    source: str | None = None  # the torchvision dataset class its files are laid out for
    files: Callable[[], list[str]] | None = None  # the files under the root its reader reads (fingerprint)
    count: Callable[[str], int] | None = None  # its training images, counted from the files under a root
    model: str = "resnet18"  # the model when none is given (the paper's MLPs for MNIST-like data)

    @property
    def augmentations(self) -> tuple[str, ...]:
        return AUGMENTATIONS[self.layout]

    @property
    def holds_out(self) -> bool:
        """Whether dataset.val_fraction (and sweep --select-on val) can hold out part of its training
        split, and dataset.normalize choose its statistics: in-memory data only."""
        return self.layout == TENSOR

    def expected_text(self, root) -> str:
        """What its reader expects under `root`, for messages: `<root>/train_32x32.mat and test_32x32.mat`."""
        return (Path(root) / " and ".join(self.expected)).as_posix()

    def sizes(self, cfg: DatasetConfig) -> tuple[int, int] | None:
        """(train, test) images as read, before dataset.subset and val_fraction: computed for generated
        data, else the documented sizes; None where they depend on files not counted here."""
        if self.generated is not None:
            return self.generated(cfg)
        return None if self.train is None or self.test is None else (self.train, self.test)

    def train_images(self, cfg: DatasetConfig) -> tuple[int | None, bool]:
        """(training images as read, documented): counted from the files when they are there (headers
        and listings only), else the documented size (documented=True, None where there is none)."""
        if self.generated is not None:
            return self.generated(cfg)[0], False
        if cfg.root is not None and self.count is not None:
            try:
                return self.count(cfg.root), False
            except Exception:  # absent or garbled: loading refuses it with its own message
                pass
        return self.train, True


def _synthetic(cfg: DatasetConfig) -> tuple[int, int]:
    return cfg.train_size, cfg.test_size


def _torchvision(name: str, source: str, channels: int, side: int, classes: int, train: int, test: int,
                 expected: tuple[str, ...], files_of, count, model: str = "resnet18") -> Dataset:
    return Dataset(name, TENSOR, channels, side, classes, train, test, expected=expected, reader="torchvision",
                   source=source, files=partial(files_of, source), count=partial(count, source), model=model)


# Ordered as commands list them (kernel-distance's --inputs).
DATASETS = {d.name: d for d in (
    _torchvision("mnist", "MNIST", 1, 28, 10, 60_000, 10_000, ("MNIST/raw",), files.mnist_files, files.mnist_count,
                 model="mlp"),
    Dataset("digits", TENSOR, 1, 8, 10, generated=files.digits_sizes, reader="digits", model="mlp"),
    _torchvision("cifar10", "CIFAR10", 3, 32, 10, 50_000, 10_000, ("cifar-10-batches-py",), files.cifar_files,
                 files.cifar_count),
    _torchvision("cifar100", "CIFAR100", 3, 32, 100, 50_000, 10_000, ("cifar-100-python",), files.cifar_files,
                 files.cifar_count),
    _torchvision("svhn", "SVHN", 3, 32, 10, 73_257, 26_032, ("train_32x32.mat", "test_32x32.mat"), files.svhn_files,
                 files.svhn_count),
    Dataset("synthetic", TENSOR, 3, None, None, generated=_synthetic, reader="synthetic", model="mlp"),
    Dataset("imagenet", FOLDER, 3, None, 1000, 1_281_167, 50_000, expected=("train", "val"), count=files.folder_count),
    Dataset("imagefolder", FOLDER, 3, None, None, expected=("train", "val"), count=files.folder_count),
)}


def get(name: str) -> Dataset:
    """The entry `dataset.name` names; a name without one is refused, listing those there are."""
    if name not in DATASETS:
        raise UserError(f"dataset.name {name!r} names no dataset; valid: {', '.join(DATASETS)}")
    return DATASETS[name]


def names(layout: str | None = None) -> tuple[str, ...]:
    return tuple(n for n, d in DATASETS.items() if layout is None or d.layout == layout)


def default_model(dataset: str) -> str:
    """The model without --model: the entry's, and ResNet-18 for a conf/dataset group of the user's own."""
    entry = DATASETS.get(dataset)
    return entry.model if entry is not None else "resnet18"


@dataclass(frozen=True)
class InputSpec:
    """What a model needs to know about its data."""

    channels: int
    image_size: int
    num_classes: int


def spec_from_config(cfg: DatasetConfig) -> InputSpec:
    """What a model needs to know, from the config alone (no data read): plans and dry runs."""
    num_classes = cfg.num_classes
    if num_classes is None:  # image folders: one class per folder under <root>/train
        train = Path(cfg.root) / "train"
        if not train.is_dir():
            missing = "does not exist" if not Path(cfg.root).exists() else "has no train/ folder"
            raise UserError(f"{cfg.name}: data root {cfg.root} {missing}; expected <root>/train/<class>/* and "
                            f"<root>/val/<class>/* (or set dataset.num_classes to plan without data)")
        num_classes = sum(1 for p in train.iterdir() if p.is_dir())
    return InputSpec(channels=cfg.channels, image_size=cfg.image_size, num_classes=num_classes)
