"""Static random masks: drawn once from the seed, applied after every optimiser step.

Re-masking the weights after each step keeps masked weights exactly zero whatever the optimiser
does (momentum, weight decay): the gradients need no separate masking.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from widen_cli import results
from widen_cli.shapes import Member
from widen_cli.models import weight_layers


def draw_masks(member: Member, seed: int) -> dict[str, torch.Tensor]:
    """One bool mask per layer with exactly `member.kept[name]` ones, uniform over the allowed positions.

    `within: all`: positions uniform over every entry of the tensor. `io`: whole k x k kernels, uniform
    over the (output, input) pairs; the count's remainder (fewer than k*k weights) is kept in one more
    kernel, at random positions within it, so the layer keeps exactly its count.
    Drawn on the CPU from `seed`, so every device and every process gets the same masks.
    """
    g = torch.Generator().manual_seed(seed)
    masks = {}
    for name, shape in member.layers.items():
        kernel = math.prod(shape[2:]) if member.within == "io" else 1
        whole, part = divmod(member.kept[name], kernel)
        slots = torch.randperm(math.prod(shape) // kernel, generator=g)
        mask = torch.zeros(len(slots), kernel, dtype=torch.bool)
        mask[slots[:whole]] = True
        if part:
            mask[slots[whole], torch.randperm(kernel, generator=g)[:part]] = True
        masks[name] = mask.view(shape)
    return masks


class Masks:
    """Masks bound to a model's weight tensors, applied in one fused call."""

    def __init__(self, model: nn.Module, masks: dict[str, torch.Tensor]):
        layers = weight_layers(model)
        self.names = list(masks)
        self.weights = [layers[n].weight for n in self.names]
        # Same device, dtype and memory layout (e.g. channels_last) as the weight: one cheap multiply.
        self.masks = [torch.empty_like(w).copy_(masks[n]) for n, w in zip(self.names, self.weights)]

    @torch.no_grad()
    def apply_(self) -> None:
        torch._foreach_mul_(self.weights, self.masks)

    @torch.no_grad()
    def rescale_init_(self) -> None:
        """Scale each layer's initial weights by 1/sqrt(kept fraction), restoring the pre-activation
        variance that the removed fan-in took away."""
        for w, m in zip(self.weights, self.masks):
            w.mul_(1 / math.sqrt(m.mean().item()))

    def state(self) -> dict[str, torch.Tensor]:
        return {n: m.bool().cpu() for n, m in zip(self.names, self.masks)}

    def save(self, path: Path) -> None:
        results.atomic_write(path, lambda tmp: torch.save(self.state(), tmp))


def sparsify(model: nn.Module, member: Member, seed: int, rescale_init: bool = True) -> Masks:
    """Draw the member's masks, zero the masked weights and (optionally) rescale the initialisation."""
    masks = Masks(model, draw_masks(member, seed))
    if rescale_init:
        masks.rescale_init_()
    masks.apply_()
    return masks
