"""The linear bottleneck: every conv/linear weight replaced by a product of two, at a given rank."""
from __future__ import annotations

from torch import nn


class Factorized(nn.Sequential):
    """The two factors that replace one layer (marked, so an initialisation can tell them apart)."""


def factorize(model: nn.Module, ranks: dict[str, int]) -> nn.Module:
    """Replace each named layer by (k x k conv to rank r, then 1 x 1 conv) or (linear to r, then linear).

    No non-linearity in between: at full rank the network expresses the same functions as before.
    """
    for name, rank in ranks.items():
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        layer = getattr(parent, attr)
        if isinstance(layer, nn.Conv2d):
            pair = Factorized(
                nn.Conv2d(layer.in_channels, rank, layer.kernel_size, layer.stride, layer.padding, bias=False),
                nn.Conv2d(rank, layer.out_channels, 1, bias=layer.bias is not None))
        else:
            pair = Factorized(type(layer)(layer.in_features, rank, bias=False),
                                 type(layer)(rank, layer.out_features, bias=layer.bias is not None))
        setattr(parent, attr, pair.to(layer.weight.device))
    return model
