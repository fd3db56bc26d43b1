"""What a sweep is about to cost, before it starts: multiply-adds per image, and training FLOPs.

Counted on the real model, built on torch's "meta" device (shapes only, no memory, no arithmetic), by
torch's own FlopCounterMode, so every architecture and method is covered without a formula per model
(it counts 2 FLOPs per multiply-add of each matmul and convolution). Sparse members are counted as the
masked dense compute they run (the batched MLP families compute only kept weights, so for them this is
an upper bound). The images are those the run trains on: counted from the files on disk when they are
there (headers and listings only, no image decoded), else the dataset's documented size.
"""
from __future__ import annotations

import pickle
import struct
from pathlib import Path
from typing import NamedTuple

import torch

from widen_cli.budget import Member
from widen_cli.config import FOLDER_DATASETS, DatasetConfig, ModelConfig
from widen_cli.models import InputSpec, build_model

# Documented training images per epoch: what the estimate assumes when the files are not there (yet).
TRAIN_IMAGES = {"cifar10": 50_000, "cifar100": 50_000, "svhn": 73_257, "mnist": 60_000, "digits": 1_437,
                "imagenet": 1_281_167}
TRAIN_FLOPS_PER_MAC = 6  # forward 2 FLOPs per multiply-add; backward about twice the forward
CPU_WARN_FLOPS = 1e15  # ~a day or more on a few CPU cores


class Trace(NamedTuple):
    """What one forward pass of a member's model on the meta device shows, per image."""
    macs: int  # multiply-adds
    params: int  # the model's parameters (not per image)
    kept: int  # every leaf layer's output: the activations kept for the backward pass
    largest: int  # the largest of those outputs (evaluation holds one at a time)


_TRACES: dict[tuple, Trace] = {}  # trace's cache: a sweep, and memory.py's estimate, trace each member once


def trace(cfg: ModelConfig, spec: InputSpec, member: Member) -> Trace:
    """`member`'s (dense-equivalent) model, traced once per distinct member (member_key) in this process:
    its compute for this module and its activations for memory.py, from the same pass."""
    key = (cfg, spec, member_key(member))
    if key not in _TRACES:
        _TRACES[key] = _trace(cfg, spec, member)
    return _TRACES[key]


def _trace(cfg: ModelConfig, spec: InputSpec, member: Member) -> Trace:
    from torch.utils.flop_counter import FlopCounterMode

    width = member.base_width if member.variant == "structured" else member.width  # pruned to the base shapes
    with torch.device("meta"):
        model = build_model(cfg, width, spec, inner=member.inner, ranks=member.ranks)
    sizes = []

    def count(_layer, _inputs, out):
        if isinstance(out, torch.Tensor):
            sizes.append(out.numel())

    for layer in model.modules():
        if not list(layer.children()):  # leaf modules: each output is one stored activation
            layer.register_forward_hook(count)
    # eval: batch norm takes a batch of one however small the last feature map (multiply-adds are the same)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.empty(1, spec.channels, spec.image_size, spec.image_size, device="meta"))
    return Trace(counter.get_total_flops() // 2, sum(p.numel() for p in model.parameters()), sum(sizes),
                 max(sizes, default=0))


def forward_macs(cfg: ModelConfig, spec: InputSpec, member: Member) -> int:
    """Multiply-adds of one image's forward pass through `member`'s (dense-equivalent) model."""
    return trace(cfg, spec, member).macs


def member_key(member: Member) -> tuple:
    """What decides a member's forward cost (its seed, learning rate and sparsity pattern do not)."""
    width = member.base_width if member.variant == "structured" else member.width
    ranks = tuple(sorted(member.ranks.items())) if member.ranks else None
    return width, tuple(member.inner) if member.inner else None, ranks


class Images(NamedTuple):
    count: int | None  # training images per epoch; None: unknown before the data is there
    documented: bool  # the dataset's documented size, not counted on disk


def _idx_count(path: Path) -> int:
    with open(path, "rb") as f:  # IDX header: magic, then the item count (big-endian int32)
        return struct.unpack(">ii", f.read(8))[1]


def _cifar_count(root: Path, name: str) -> int:
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    total = 0
    for file, _ in cls.train_list:
        with open(root / cls.base_folder / file, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        total += len(batch["labels" if "labels" in batch else "fine_labels"])
    return total


def _svhn_count(root: Path) -> int:
    from scipy.io import whosmat  # shapes from the .mat headers, nothing loaded

    shapes = dict((name, shape) for name, shape, _ in whosmat(root / "train_32x32.mat"))
    return shapes["X"][-1]  # 32 x 32 x 3 x N


def _folder_count(root: Path) -> int:
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes

    from widen_cli.folders import samples

    _, index = find_classes(str(root / "train"))  # the loader's own listing: the files it reads
    return len(samples(str(root / "train"), index, IMG_EXTENSIONS))


def _on_disk(ds: DatasetConfig) -> int | None:
    """The training split's size as its files say, None when they are not there or not readable."""
    if ds.root is None:
        return None
    root = Path(ds.root)
    try:
        if ds.name == "mnist":
            return _idx_count(root / "MNIST" / "raw" / "train-images-idx3-ubyte")
        if ds.name in ("cifar10", "cifar100"):
            return _cifar_count(root, ds.name)
        if ds.name == "svhn":
            return _svhn_count(root)
        if ds.name in FOLDER_DATASETS:
            return _folder_count(root)
    except Exception:  # absent or garbled: training refuses it with its own message; here the documented size
        return None
    return None


def train_images(ds: DatasetConfig) -> Images:
    """Images trained on in one epoch: the training split (on disk, else documented), less dataset.subset
    and the dataset.val_fraction holdout, as data.load_data draws them."""
    if ds.name == "synthetic":
        size, documented = ds.train_size, False
    elif ds.name == "digits":
        size, documented = TRAIN_IMAGES["digits"], False  # made from scikit-learn's bundled data: always this
    else:
        size = _on_disk(ds)
        documented = size is None
        if documented:
            size = TRAIN_IMAGES.get(ds.name)
    if size is None:
        return Images(None, True)
    if ds.subset is not None:
        size = min(ds.subset, size)
    if ds.val_fraction:
        size -= round(size * ds.val_fraction)  # data.holdout's count
    return Images(size, documented)


def training_flops(macs: int, images: int, epochs: int) -> float:
    return float(TRAIN_FLOPS_PER_MAC) * macs * images * epochs


PREFIXES = ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1, ""))


def flops_text(flops: float) -> str:
    """Engineering notation with an SI prefix, 3 significant digits, one unit for every size:
    '199 MFLOP', '16.9 TFLOP', '1 EFLOP'."""
    rounded = float(f"{flops:.3g}")  # so that 999.6e15 reads 1 EFLOP, not 1,000 PFLOP
    for scale, prefix in PREFIXES:
        if rounded >= scale:
            value = rounded / scale
            return f"{value:.3g} {prefix}FLOP" if value < 1000 else f"{value:,.0f} {prefix}FLOP"  # beyond exa
    return f"{rounded:.3g} FLOP"
