"""What a sweep is about to cost, before it starts: multiply-adds per image, and training FLOPs.

Counted on the real model, built on torch's "meta" device (shapes only, no memory, no arithmetic), by
torch's own FlopCounterMode, so every architecture and method is covered without a formula per model
(it counts 2 FLOPs per multiply-add of each matmul and convolution). Sparse members are counted as the
masked dense compute they run (the batched MLP families compute only kept weights, so for them this is
an upper bound). The images are those the run trains on: counted from the files on disk when they are
there (headers and listings only, no image decoded), else the dataset's documented size.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from widen_cli.budget import Member
from widen_cli import datasets
from widen_cli.schema import DatasetConfig, ModelConfig
from widen_cli.methods import method_of
from widen_cli.models import InputSpec, build_model

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

    width = method_of(member).model_width(member)  # structured pruning: the base shapes
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
    width = method_of(member).model_width(member)
    ranks = tuple(sorted(member.ranks.items())) if member.ranks else None
    return width, tuple(member.inner) if member.inner else None, ranks


class Images(NamedTuple):
    count: int | None  # training images per epoch; None: unknown before the data is there
    documented: bool  # the dataset's documented size, not counted on disk


def train_images(ds: DatasetConfig) -> Images:
    """Images trained on in one epoch: the training split (on disk, else documented: the dataset
    registry's), less dataset.subset and the dataset.val_fraction holdout, as data.load_data draws them."""
    size, documented = datasets.get(ds.name).train_images(ds)
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
