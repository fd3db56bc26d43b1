"""What a sweep is about to cost, before it starts: multiply-adds per image, and training FLOPs.

Counted on the real model, built on torch's "meta" device (shapes only, no memory, no arithmetic), so
every architecture and method is covered without a formula per model: each conv or linear layer costs
its weight count times its output positions. Sparse members are counted as the masked dense compute
they run (the batched MLP families compute only kept weights, so for them this is an upper bound).
"""
from __future__ import annotations

import torch

from widen_cli.budget import Member
from widen_cli.config import DatasetConfig, ModelConfig
from widen_cli.models import InputSpec, build_model, weight_layers

# Training images per epoch, for the datasets whose size the config does not say.
TRAIN_IMAGES = {"cifar10": 50_000, "cifar100": 50_000, "svhn": 73_257, "mnist": 60_000, "digits": 1_437,
                "imagenet": 1_281_167}
TRAIN_FLOPS_PER_MAC = 6  # forward 2 FLOPs per multiply-add; backward about twice the forward
CPU_WARN_FLOPS = 1e15  # ~a day or more on a few CPU cores


def forward_macs(cfg: ModelConfig, spec: InputSpec, member: Member) -> int:
    """Multiply-adds of one image's forward pass through `member`'s (dense-equivalent) model."""
    width = member.base_width if member.variant == "structured" else member.width  # pruned to the base shapes
    with torch.device("meta"):
        model = build_model(cfg, width, spec, inner=member.inner, ranks=member.ranks)
    macs = 0

    def count(layer, _inputs, out):
        nonlocal macs
        macs += layer.weight.numel() * (out.shape[-2] * out.shape[-1] if out.dim() == 4 else 1)

    for layer in weight_layers(model).values():
        layer.register_forward_hook(count)
    with torch.no_grad():
        model(torch.empty(1, spec.channels, spec.image_size, spec.image_size, device="meta"))
    return macs


def train_images(ds: DatasetConfig) -> int | None:
    """Images in one training epoch (None when only the data on disk could tell: image folders)."""
    size = ds.train_size if ds.name == "synthetic" else TRAIN_IMAGES.get(ds.name)
    return size if ds.subset is None or size is None else min(ds.subset, size)


def training_flops(macs: int, images: int, epochs: int) -> float:
    return float(TRAIN_FLOPS_PER_MAC) * macs * images * epochs


def flops_text(flops: float) -> str:
    for unit, scale in (("EFLOP", 1e18), ("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9)):
        if flops >= scale:
            value = flops / scale
            return f"{value:.3g} {unit}" if value < 100 else f"{value:,.0f} {unit}"  # no 1e+03
    return f"{flops:.3g} FLOP"
