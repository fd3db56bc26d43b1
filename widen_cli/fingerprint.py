"""A dataset's fingerprint: what tells one dataset's data from another's, so that a run on other data
never reuses (nor is averaged with) the results of a run on these, while the same files copied to
another path still do.

Computed once per command (cli.py), before any run folder is named, into the run's config
(`data_fingerprint`), which the run's identity, and so its folder name, holds:
- in-memory datasets read from a few files (MNIST, CIFAR, SVHN): each file's path under the data root,
  size and SHA-256. They are at most a few hundred MB, which training reads in full anyway; sizes alone
  would not tell Fashion-MNIST written in MNIST's layout from MNIST (its files have MNIST's sizes).
- image folders: the class names and every image's path under the data root and size, from the file
  listing alone: no image is opened (ImageNet's 1.3 million files would take minutes to read).
- data made from the config alone (digits, synthetic): its sample counts and classes, recorded in
  config.yaml; the config, already in the identity, decides it.
Data that is not there has none (None): loading it refuses it later, with its own message.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

from widen_cli import datasets
from widen_cli.schema import DatasetConfig, RunConfig

DIGEST_CHARS = 12


def _digest(data) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:DIGEST_CHARS]


def _files(root: Path, names: list[str]) -> str | None:
    entries = []
    for name in names:
        path = root / name
        try:
            with open(path, "rb") as f:
                sha = hashlib.sha256()
                for block in iter(lambda: f.read(1 << 20), b""):  # (hashlib.file_digest: Python 3.11+)
                    sha.update(block)
                entries.append((name, os.fstat(f.fileno()).st_size, sha.hexdigest()))
        except OSError:  # missing or unreadable: the reader says so when it loads the data
            continue
    if not entries:
        return None
    return f"{len(entries)} files {sum(size for _, size, _ in entries) / 1e6:.1f} MB {_digest(entries)}"


def _folders(root: Path) -> str | None:
    """Class names and (path, size) of every file the ImageFolder of each split lists (the loader's own
    listing, folders.py: the same files it reads; a link it refuses is refused here, before anything
    is written)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes

    from widen_cli.folders import samples as make_dataset

    try:
        classes, index = find_classes(str(root / "train"))
        splits = {}
        for part in ("train", "val"):
            samples = make_dataset(str(root / part), index, IMG_EXTENSIONS)
            splits[part] = [(os.path.relpath(path, root), os.stat(path).st_size) for path, _ in samples]
    except OSError:  # no train/ or val/, no class folder, a class without images: the loader says which
        return None
    counts = "+".join(str(len(files)) for files in splits.values())
    return f"{counts} images {len(classes)} classes {_digest([classes, splits])}"


def _generated(entry: datasets.Dataset, cfg: DatasetConfig) -> str:
    train, test = entry.sizes(cfg)
    classes = cfg.num_classes if entry.classes is None else entry.classes
    return f"{train}+{test} samples {classes} classes"


def _read_files(cfg: DatasetConfig) -> list[str] | None:
    """The files (relative to the data root) that its reader reads; None for folders and generated data."""
    entry = datasets.get(cfg.name)
    if cfg.root is None or entry.files is None:
        return None
    return entry.files()


def of(cfg: DatasetConfig) -> str | None:
    """The fingerprint of the data `cfg` names (see the module's docstring); None where there is none."""
    entry = datasets.get(cfg.name)
    if entry.generated is not None:
        return _generated(entry, cfg)
    if cfg.root is None:
        return None
    if entry.layout == datasets.FOLDER:
        return _folders(Path(cfg.root))
    names = _read_files(cfg)
    return None if names is None else _files(Path(cfg.root), names)


def attach(run: RunConfig, fetch: bool = False) -> RunConfig:
    """`run` with its data's fingerprint. `fetch`: with --download, data not all there yet is downloaded
    first, so that the run is named after the data it will train on."""
    cfg = run.dataset
    names = _read_files(cfg)
    if fetch and cfg.download and names and not all((Path(cfg.root) / n).is_file() for n in names):
        from widen_cli.datasets.readers import load_tensors

        load_tensors(cfg)  # downloads (a failure is the reader's one-line error)
    return replace(run, data_fingerprint=of(cfg))
