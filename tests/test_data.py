"""The real loaders in widen_cli/data.py, run on tiny files written in each dataset's on-disk format.

Every dataset is written the way its official archive lays it out (CIFAR pickles, SVHN .mat files,
MNIST IDX files, ImageNet-style class folders), then read back through `load_data`. torchvision
checks the md5 of CIFAR and SVHN files against the official archives; the fixtures point those
expected checksums at the files written here (the product code is not patched).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision import datasets as tvd

from data_files import (TRAIN_FILES, WRITERS, Written, _folder_cfg, patch_cifar_md5, patch_svhn_md5, write_cifar10,
                        write_folders, write_mnist)
from widen_cli.schema import DatasetConfig
from widen_cli.data import IMAGENET_MEAN, IMAGENET_STD, load_data
from widen_cli.errors import UserError

CPU = torch.device("cpu")
TENSOR_DATASETS = ("cifar10", "cifar100", "svhn", "mnist")


# ---------------------------------------------------------------- each on-disk format (written by tests/data_files.py)


@pytest.fixture(params=TENSOR_DATASETS)
def written(request, tmp_path, monkeypatch) -> Written:
    return WRITERS[request.param](tmp_path / "data", monkeypatch)


# ---------------------------------------------------------------- helpers

def collect(loader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


def stats(train_images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (unbiased) std of the written training images, in [0, 1] units."""
    x = torch.as_tensor(train_images, dtype=torch.float64).div(255).transpose(0, 1).flatten(1)
    return x.mean(1).view(1, -1, 1, 1), x.std(1).view(1, -1, 1, 1)


def check_batches(loader, channels: int, size: int, batch_size: int) -> None:
    n = 0
    for x, y in loader:
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.ndim == 4 and x.shape[1:] == (channels, size, size)
        assert x.shape[0] == y.shape[0] <= batch_size
        assert x.device.type == y.device.type == "cpu"
        n += len(y)
    assert n == loader.num_samples
    assert len(loader) == -(-n // batch_size)


def image_keys(x: torch.Tensor) -> list[bytes]:
    """An order-free identity for each image of a batch (exact up to float rounding)."""
    return sorted(t.numpy().tobytes() for t in (x * 1000).round().to(torch.int32))


# ---------------------------------------------------------------- CIFAR-10/100, SVHN, MNIST

def test_reads_each_format(written):
    cfg = replace(written.cfg, augment=())
    train, test, spec = load_data(cfg, batch_size=16, device=CPU, seed=0)
    c, s = written.train_images.shape[1], written.train_images.shape[-1]
    assert (spec.channels, spec.image_size, spec.num_classes) == (c, s, cfg.num_classes)
    assert train.num_samples == len(written.train_labels)
    assert test.num_samples == len(written.test_labels)
    check_batches(train, c, s, 16)

    # The test loader is in file order: labels and pixels are exactly what was written
    # (SVHN's 10 read as 0), normalised with the training set's per-channel statistics.
    x, y = collect(test)
    assert y.tolist() == written.test_labels.tolist()
    mean, std = stats(written.train_images)
    expected = (torch.as_tensor(written.test_images, dtype=torch.float64) / 255 - mean) / std
    torch.testing.assert_close(x.double(), expected, atol=1e-4, rtol=0)

    # The shuffled training set holds every written sample once.
    x, y = collect(train)
    assert sorted(y.tolist()) == sorted(written.train_labels.tolist())
    expected = (torch.as_tensor(written.train_images, dtype=torch.float64) / 255 - mean) / std
    assert image_keys(x.double()) == image_keys(expected)


def test_training_set_is_normalised(written):
    train, _, _ = load_data(replace(written.cfg, augment=()), batch_size=7, device=CPU, seed=1)
    x, _ = collect(train)
    per_channel = x.double().transpose(0, 1).flatten(1)
    assert per_channel.mean(1).abs().max() < 1e-4
    assert (per_channel.std(1) - 1).abs().max() < 1e-3
    raw = torch.as_tensor(written.train_images, dtype=torch.float64).transpose(0, 1).flatten(1)
    assert raw.mean(1).abs().min() > 10  # the written data was far from zero-mean


def test_subset_is_fixed_across_run_seeds(written):
    cfg = replace(written.cfg, augment=(), subset=7)
    a, test_a, _ = load_data(cfg, batch_size=3, device=CPU, seed=1)
    b, test_b, _ = load_data(cfg, batch_size=3, device=CPU, seed=2)
    assert a.num_samples == b.num_samples == 7
    xa, ya = collect(a)
    xb, yb = collect(b)
    assert len(ya) == len(yb) == 7
    assert image_keys(xa) == image_keys(xb)
    assert sorted(ya.tolist()) == sorted(yb.tolist())
    # ... drawn from the written training set, and the test set is untouched.
    mean, std = stats(written.train_images)
    everything = image_keys((torch.as_tensor(written.train_images, dtype=torch.float64) / 255 - mean) / std)
    assert set(image_keys(xa.double())) <= set(everything)
    assert test_a.num_samples == test_b.num_samples == len(written.test_labels)


def test_subset_larger_than_training_set(written):
    with pytest.raises(UserError, match="subset"):
        load_data(replace(written.cfg, subset=len(written.train_labels) + 1), 8, CPU, 0)


def test_resizes_to_image_size(written):
    cfg = replace(written.cfg, image_size=16, augment=())
    train, test, spec = load_data(cfg, batch_size=8, device=CPU, seed=0)
    assert spec.image_size == 16
    check_batches(train, spec.channels, 16, 8)
    check_batches(test, spec.channels, 16, 1000)


def test_cifar_augmentation_changes_train_batches_not_test(tmp_path, monkeypatch):
    w = write_cifar10(tmp_path, monkeypatch)
    cfg = replace(w.cfg, subset=8)  # augment = crop + flip
    train, test, _ = load_data(cfg, batch_size=8, device=CPU, seed=0)
    mean, std = stats(w.train_images)

    # Every augmented image is a 32x32 window of an original zero-padded by 4, maybe mirrored.
    plain, plain_ys = collect(load_data(replace(cfg, augment=()), 8, CPU, 0)[0])
    originals = (plain.double() * std + mean).float()  # back to [0, 1]
    padded = F.pad(originals, (4,) * 4)
    offsets = [(oy, ox) for oy in range(9) for ox in range(9)]
    windows = torch.stack([padded[:, :, oy:oy + 32, ox:ox + 32] for oy, ox in offsets], 1)  # N x 81 x C x H x W
    candidates = torch.stack([windows, windows.flip(-1)], 2).flatten(3)  # N x 81 x 2 x CHW

    epochs = [collect(train) for _ in range(3)]
    flipped, shifted = [], []
    for x, y in epochs:
        assert x.shape == (8, 3, 32, 32) and sorted(y.tolist()) == sorted(plain_ys.tolist())
        pixels = (x.double() * std + mean).float().flatten(1)
        for img in pixels:
            match = ((candidates - img).abs().amax(-1) < 1e-4).nonzero()  # (original, offset, flip)
            assert len(match) == 1  # random pixels: exactly one window of one original fits
            _, offset, flip = match[0].tolist()
            flipped.append(flip == 1)
            shifted.append(offsets[offset] != (4, 4))
    assert any(flipped) and not all(flipped)  # flips happen, about half the time
    assert sum(shifted) > len(shifted) // 2  # crops move the window (it stays centred 1 time in 81)
    keys = [image_keys(x) for x, _ in epochs]
    assert keys[0] != keys[1] and keys[1] != keys[2]
    assert keys[0] != image_keys(plain)

    # Test batches are neither augmented nor shuffled: identical every time.
    first, second = collect(test), collect(test)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_same_seed_gives_same_training_batches(tmp_path, monkeypatch):
    w = write_cifar10(tmp_path, monkeypatch)
    runs = [collect(load_data(w.cfg, 32, CPU, seed)[0]) for seed in (5, 5, 6)]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    assert not torch.equal(runs[0][0], runs[2][0])


def test_num_classes_inferred_from_all_labels(tmp_path, monkeypatch):
    """With dataset.num_classes unset, the class count covers every label of both splits, whatever
    subset of the training set is used."""
    w = write_cifar10(tmp_path, monkeypatch)
    cfg = replace(w.cfg, num_classes=None, augment=())
    assert load_data(cfg, 8, CPU, 0)[2].num_classes == 10
    for n in (1, 2, 3):
        train, test, spec = load_data(replace(cfg, subset=n), 8, CPU, 0)
        assert spec.num_classes == 10
        assert int(collect(test)[1].max()) < spec.num_classes


def test_num_classes_inferred_when_a_class_is_only_in_the_test_split(tmp_path, monkeypatch):
    w = write_cifar10(tmp_path, monkeypatch, train_classes=9)
    assert w.train_labels.max() == 8 and w.test_labels.max() == 9
    _, test, spec = load_data(replace(w.cfg, num_classes=None), 8, CPU, 0)
    assert spec.num_classes == 10


def test_cifar_checksums_are_still_verified(tmp_path, monkeypatch):
    """Files that do not match the expected md5 are refused (here: torchvision's official checksums)."""
    w = write_cifar10(tmp_path, monkeypatch, patch_md5=False)
    with pytest.raises(UserError) as e:
        load_data(w.cfg, 8, CPU, 0)
    assert str(w.expected_path) in str(e.value) and "--download" in str(e.value)


# ---------------------------------------------------------------- their error paths

@pytest.mark.parametrize("name", TENSOR_DATASETS)
@pytest.mark.parametrize("state", ["missing", "empty"])
def test_missing_or_empty_root(tmp_path, name, state):
    root = tmp_path / "data"
    if state == "empty":
        root.mkdir()
    expected = {"cifar10": root / "cifar-10-batches-py", "cifar100": root / "cifar-100-python",
                "svhn": root / "train_32x32.mat", "mnist": root / "MNIST" / "raw"}[name]
    with pytest.raises(UserError) as e:
        load_data(DatasetConfig(name=name, root=str(root), num_classes=10), 8, CPU, 0)
    msg = str(e.value)
    assert str(expected) in msg and "--download" in msg
    assert "\n" not in msg


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("name", TENSOR_DATASETS)
def test_corrupted_file(tmp_path, monkeypatch, name):
    root = tmp_path / "data"
    w = WRITERS[name](root, monkeypatch)
    if name == "cifar10":
        _truncate(root / "cifar-10-batches-py" / "data_batch_3")
        patch_cifar_md5(monkeypatch, tvd.CIFAR10, root / "cifar-10-batches-py")
    elif name == "cifar100":
        _truncate(root / "cifar-100-python" / "test")
        patch_cifar_md5(monkeypatch, tvd.CIFAR100, root / "cifar-100-python")
    elif name == "svhn":
        (root / "train_32x32.mat").write_bytes(b"this is not a MATLAB file\n" * 40)
        patch_svhn_md5(monkeypatch, root)
    else:
        _truncate(root / "MNIST" / "raw" / "t10k-images-idx3-ubyte")
    with pytest.raises(UserError) as e:
        load_data(w.cfg, 8, CPU, 0)
    msg = str(e.value)
    assert str(w.expected_path) in msg
    assert "--download" in msg and "\n" not in msg


def test_mnist_garbage_header(tmp_path):
    w = write_mnist(tmp_path)
    (tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte").write_bytes(b"\xff" * 64)
    with pytest.raises(UserError) as e:
        load_data(w.cfg, 8, CPU, 0)
    assert str(w.expected_path) in str(e.value) and "--download" in str(e.value)


# ---------------------------------------------------------------- digits and synthetic (no files)

def test_digits():
    from sklearn.datasets import load_digits

    cfg = DatasetConfig(name="digits", num_classes=10, image_size=8)
    train, test, spec = load_data(cfg, batch_size=256, device=CPU, seed=0)
    assert (spec.channels, spec.image_size, spec.num_classes) == (1, 8, 10)
    assert (train.num_samples, test.num_samples) == (1437, 360)
    check_batches(train, 1, 8, 256)
    check_batches(test, 1, 8, 1000)
    (xtr, ytr), (xte, yte) = collect(train), collect(test)
    target = load_digits().target
    assert sorted(ytr.tolist() + yte.tolist()) == sorted(target.tolist())
    assert np.bincount(yte.numpy()).min() >= 35  # stratified
    assert xtr.double().mean().abs() < 1e-4 and abs(xtr.double().std() - 1) < 1e-2
    # The split is fixed: the same test set for any run seed.
    assert torch.equal(collect(load_data(cfg, 256, CPU, 9)[1])[0], xte)


def test_synthetic():
    cfg = DatasetConfig(name="synthetic", num_classes=5, image_size=12, channels=2,
                        train_size=40, test_size=24, data_seed=3)
    train, test, spec = load_data(cfg, batch_size=16, device=CPU, seed=0)
    assert (spec.channels, spec.image_size, spec.num_classes) == (2, 12, 5)
    assert (train.num_samples, test.num_samples) == (40, 24)
    check_batches(train, 2, 12, 16)
    check_batches(test, 2, 12, 1000)
    xte, yte = collect(test)
    assert 0 <= int(yte.min()) and int(yte.max()) < 5
    x, _ = collect(train)
    assert x.double().transpose(0, 1).flatten(1).mean(1).abs().max() < 1e-4
    assert torch.equal(collect(load_data(cfg, 16, CPU, 7)[1])[0], xte)  # data_seed fixes the data
    other = collect(load_data(replace(cfg, data_seed=4), 16, CPU, 0)[1])[0]
    assert not torch.equal(other, xte)


# ---------------------------------------------------------------- image folders


def _colours(x: torch.Tensor) -> list[tuple[int, ...]]:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    pixels = (x * std + mean) * 255
    assert (pixels.amax((2, 3)) - pixels.amin((2, 3))).max() < 1.5  # still one solid colour
    return [tuple(int(v) for v in c) for c in pixels.mean((2, 3)).round()]


def test_image_folders(tmp_path):
    written = write_folders(tmp_path)
    train, test, spec = load_data(_folder_cfg(tmp_path), batch_size=4, device=CPU, seed=0)
    assert (spec.channels, spec.image_size, spec.num_classes) == (3, 32, 2)
    assert (train.num_samples, test.num_samples) == (6, 4)
    check_batches(train, 3, 32, 4)
    check_batches(test, 3, 32, 4)
    x, y = collect(test)  # in folder order: classes sorted, files sorted
    assert y.tolist() == [label for _, label in written["val"]]
    assert _colours(x) == [colour for colour, _ in written["val"]]
    x, y = collect(train)
    assert sorted(zip(_colours(x), y.tolist())) == sorted(written["train"])


def test_image_folder_subset_is_fixed_across_run_seeds(tmp_path):
    written = write_folders(tmp_path)
    seen = []
    for seed in (1, 2):
        train, _, _ = load_data(_folder_cfg(tmp_path, subset=3), batch_size=2, device=CPU, seed=seed)
        assert train.num_samples == 3
        x, y = collect(train)
        seen.append(sorted(zip(_colours(x), y.tolist())))
    assert seen[0] == seen[1] and len(seen[0]) == 3
    assert set(seen[0]) <= set(written["train"])
    with pytest.raises(UserError, match="subset"):
        load_data(_folder_cfg(tmp_path, subset=7), 2, CPU, 0)


def test_image_folder_num_classes_must_match(tmp_path):
    write_folders(tmp_path)
    with pytest.raises(UserError) as e:
        load_data(_folder_cfg(tmp_path, num_classes=1000), 4, CPU, 0)
    assert str(tmp_path / "train") in str(e.value)


@pytest.mark.parametrize("state", ["missing", "empty", "no_val"])
def test_image_folder_missing(tmp_path, state):
    root = tmp_path / "imagenet"
    if state != "missing":
        root.mkdir()
    if state == "no_val":
        write_folders(root, val={})
        (root / "val").rmdir()
    expected = root / ("val" if state == "no_val" else "train")
    with pytest.raises(UserError) as e:
        load_data(_folder_cfg(root), 4, CPU, 0)
    assert str(expected) in str(e.value)


def test_image_folder_class_lists_differ(tmp_path):
    write_folders(tmp_path, val={"ant": 1, "wasp": 1})
    with pytest.raises(UserError) as e:
        load_data(_folder_cfg(tmp_path), 4, CPU, 0)
    msg = str(e.value)
    assert str(tmp_path / "train") in msg and str(tmp_path / "val") in msg
    assert "bee" in msg and "wasp" in msg


@pytest.mark.parametrize("where", ["train", "val"])
def test_image_folder_without_images(tmp_path, where):
    write_folders(tmp_path)
    for cls in TRAIN_FILES:
        for f in (tmp_path / where / cls).iterdir():
            f.unlink()
        (tmp_path / where / cls / "notes.txt").write_text("not an image")
    with pytest.raises(UserError) as e:
        load_data(_folder_cfg(tmp_path), 4, CPU, 0)
    assert str(tmp_path) in str(e.value) and "\n" not in str(e.value)


def test_image_folder_without_class_folders(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    with pytest.raises(UserError) as e:
        load_data(_folder_cfg(tmp_path), 4, CPU, 0)
    assert str(tmp_path / "train") in str(e.value)


# ---------------------------------------------------------------- epochs and DDP shards

def _synthetic_loaders(batch_size: int, seed: int = 0):
    cfg = DatasetConfig(name="synthetic", num_classes=5, image_size=8, channels=3, train_size=41, test_size=13,
                        augment=("crop", "flip"))
    return load_data(cfg, batch_size=batch_size, device=CPU, seed=seed)[:2]


def _epoch(loader, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.set_epoch(epoch)
    return list(loader)


def test_epoch_batches_depend_only_on_seed_and_epoch():
    """A resumed run (a fresh loader at epoch 3) sees exactly what an uninterrupted one sees."""
    train, _ = _synthetic_loaders(8)
    for epoch in (1, 2):
        _epoch(train, epoch)
    after_two = _epoch(train, 3)
    fresh = _epoch(_synthetic_loaders(8)[0], 3)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(after_two, fresh))
    other = _epoch(_synthetic_loaders(8)[0], 4)
    assert not torch.equal(after_two[0][0], other[0][0])
    assert not torch.equal(after_two[0][0], _epoch(_synthetic_loaders(8, seed=1)[0], 3)[0][0])


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_split_every_global_batch(world):
    """Under DDP each rank gets a slice of the single-process batch, with the same augmentation;
    training skips a last batch smaller than the number of ranks, evaluation keeps every sample."""
    train, test = _synthetic_loaders(8)
    whole_train, whole_test = _epoch(train, 2), list(test)
    shards = []
    for rank in range(world):
        train, test = _synthetic_loaders(8)
        train.shard(rank, world)
        test.shard(rank, world)
        shards.append((_epoch(train, 2), list(test)))
    # 41 samples in batches of 8: 5 full batches and one of 1, which only a single process trains on.
    assert len(whole_train) == 6 and all(len(s[0]) == 5 for s in shards)
    for i, (x, y) in enumerate(whole_train[:5]):
        parts = [s[0][i] for s in shards]
        assert all(len(p[1]) >= 8 // world for p in parts)
        assert torch.equal(torch.cat([p[0] for p in parts]), x) and torch.equal(torch.cat([p[1] for p in parts]), y)
    parts = [batch for s in shards for batch in s[1]]
    assert sorted(torch.cat([p[1] for p in parts]).tolist()) == sorted(torch.cat([y for _, y in whole_test]).tolist())
    assert sum(len(p[1]) for p in parts) == 13


def test_image_folder_ranks_read_disjoint_slices(tmp_path):
    from widen_cli.data import EpochBatches

    world, whole = 2, EpochBatches(11, 4, shuffle=True, seed=3)
    whole.set_epoch(5)
    batches = list(whole)
    ranks = [EpochBatches(11, 4, shuffle=True, seed=3) for _ in range(world)]
    for r, b in enumerate(ranks):
        b.shard(r, world)
        b.set_epoch(5)
    got = [list(b) for b in ranks]
    assert [len(g) for g in got] == [3, 3]  # 4 + 4 + 3 samples: every batch splits
    for i, batch in enumerate(batches):
        assert got[0][i] + got[1][i] == batch
    assert sorted(sum(batches, [])) == list(range(11))
    again = EpochBatches(11, 4, shuffle=True, seed=3)
    again.set_epoch(5)
    assert list(again) == batches
    again.set_epoch(6)
    assert list(again) != batches

    # Through a real image-folder loader, each rank's images are its slice of the global batch.
    write_folders(tmp_path)
    cfg = _folder_cfg(tmp_path, augment=())
    full = load_data(cfg, batch_size=4, device=CPU, seed=0)[0]
    full.set_epoch(1)
    labels = [y for _, y in full]
    sharded = []
    for r in range(world):
        loader = load_data(cfg, batch_size=4, device=CPU, seed=0)[0]
        loader.shard(r, world)
        loader.set_epoch(1)
        sharded.append([y for _, y in loader])
    for i, y in enumerate(labels):
        assert torch.equal(torch.cat([sharded[0][i], sharded[1][i]]), y)


# ---------------------------------------------------------------- ImageNet augmentation as published

def write_gradient_jpegs(root: Path, per_class: int = 6) -> None:
    """JPEGs whose brightness rises from left to right: a crop keeps that direction, a mirror reverses it."""
    from PIL import Image

    ramp = np.linspace(0, 255, 96).astype(np.uint8)
    for part in ("train", "val"):
        for cls in ("ant", "bee"):
            (root / part / cls).mkdir(parents=True)
            for k in range(per_class):
                pixels = np.repeat(np.broadcast_to(ramp, (80 + 4 * k, 96))[..., None], 3, axis=2)
                Image.fromarray(np.ascontiguousarray(pixels)).save(root / part / cls / f"img{k}.JPEG", quality=95)


def _mirrored(loader, epochs: int = 4) -> list[bool]:
    """For every training image served: is it mirrored (brightness falling left to right)?"""
    seen = []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for x, _ in loader:
            columns = x[:, 0].mean(1)  # N x width: mean over rows of the red channel
            rising = columns[:, -4:].mean(1) - columns[:, :4].mean(1)
            assert (rising.abs() > 0.5).all()  # every crop keeps a clear left-to-right slope
            seen += (rising < 0).tolist()
    return seen


def test_imagenet_training_applies_no_flip_unless_asked(tmp_path):
    from torchvision import transforms

    from widen_cli import compose

    write_gradient_jpegs(tmp_path)
    for name in ("imagenet", "imagefolder"):  # the shipped configs, composed as `widen train` does
        run = compose.load([f"dataset={name}", "model=resnet18", f"dataset.root='{tmp_path}'", "dataset.workers=0",
                           "dataset.image_size=32", "dataset.num_classes=null"])[1]
        assert run.dataset.augment == ("resized_crop",)
        train, test, _ = load_data(run.dataset, batch_size=6, device=CPU, seed=0)
        steps = train.loader.dataset.transform.transforms
        crop = next(t for t in steps if isinstance(t, transforms.RandomResizedCrop))
        assert crop.scale == (0.2, 1.0) and crop.size == (32, 32)
        assert not any(isinstance(t, transforms.RandomHorizontalFlip) for t in steps)
        assert not any(_mirrored(train))  # 48 random crops, none mirrored
        assert not any(_mirrored(test, epochs=1))

    asked = replace(run.dataset, augment=("resized_crop", "flip"))
    mirrored = _mirrored(load_data(asked, batch_size=6, device=CPU, seed=0)[0])
    assert any(mirrored) and not all(mirrored)  # about half the crops are mirrored
