"""What each dataset's reader reads, and how many training images that is, without reading the images:
the file lists (fingerprint.py), sizes from file headers and listings (cost estimates), and digits' split.

Imported by the registry, so torch-free: torchvision, scipy and scikit-learn are imported where used.
"""
from __future__ import annotations

import pickle
import struct
from functools import lru_cache
from pathlib import Path


def mnist_files(source: str = "MNIST") -> list[str]:
    """torchvision reads the unpacked IDX files."""
    return [f"{source}/raw/{split}-{kind}" for split in ("train", "t10k")
            for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")]


def mnist_count(source: str, root: str) -> int:
    with open(Path(root) / source / "raw" / "train-images-idx3-ubyte", "rb") as f:
        return struct.unpack(">ii", f.read(8))[1]  # IDX header: magic, then the item count (big-endian int32)


def cifar_files(source: str) -> list[str]:
    from torchvision import datasets

    cls = getattr(datasets, source)
    names = [f for f, _ in (*cls.train_list, *cls.test_list)] + [cls.meta["filename"]]
    return [f"{cls.base_folder}/{f}" for f in names]


def cifar_count(source: str, root: str) -> int:
    from torchvision import datasets

    cls = getattr(datasets, source)
    total = 0
    for file, _ in cls.train_list:
        with open(Path(root) / cls.base_folder / file, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        total += len(batch["labels" if "labels" in batch else "fine_labels"])
    return total


def svhn_files(source: str = "SVHN") -> list[str]:
    from torchvision import datasets

    return [getattr(datasets, source).split_list[split][1] for split in ("train", "test")]


def svhn_count(source: str, root: str) -> int:
    from scipy.io import whosmat  # shapes from the .mat headers, nothing loaded

    shapes = dict((name, shape) for name, shape, _ in whosmat(Path(root) / svhn_files(source)[0]))
    return shapes["X"][-1]  # 32 x 32 x 3 x N


def folder_count(root: str) -> int:
    """The images under <root>/train, from the loader's own listing (folders.py): the files it reads."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes

    from widen_cli.folders import samples

    _, index = find_classes(str(Path(root) / "train"))
    return len(samples(str(Path(root) / "train"), index, IMG_EXTENSIONS))


@lru_cache(maxsize=1)
def digits_split() -> tuple[list[int], list[int]]:
    """scikit-learn's 1,797 digits, split 80/20 once (stratified, fixed seed): (train, test) indices.
    readers.digits reads these samples; its sizes are counted here."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    target = load_digits().target
    train, test = train_test_split(range(len(target)), test_size=0.2, random_state=0, stratify=target)
    return list(train), list(test)


def digits_sizes(cfg=None) -> tuple[int, int]:
    train, test = digits_split()
    return len(train), len(test)
