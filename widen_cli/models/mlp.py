"""Fully connected networks: the paper's Figure 4 and Figure 7 models, and their weight shapes."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch.nn.functional as F
from torch import nn

from widen_cli.errors import UserError

if TYPE_CHECKING:
    from widen_cli.schema import ModelConfig
    from widen_cli.models import InputSpec


class NTKLinear(nn.Linear):
    """NTK parameterisation: weights ~ N(0, 1), scaled by 1/sqrt(fan_in) in the forward pass.

    Biases start at zero (the paper's NTK experiments use none).
    """

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x):
        return F.linear(x, self.weight / math.sqrt(self.in_features), self.bias)


class MLP(nn.Module):
    """input (flattened) -> hidden widths -> classes. Layers are `layers.0`, `layers.1`, ...

    Hidden widths may differ per layer (the non-linear bottleneck alternates wide and narrow).
    """

    def __init__(self, input_dim: int, widths: list[int], num_classes: int, activation: str = "relu",
                 bias: bool = True, parameterization: str = "standard"):
        super().__init__()
        linear = NTKLinear if parameterization == "ntk" else nn.Linear
        dims = [input_dim, *widths, num_classes]
        self.layers = nn.ModuleList(linear(a, b, bias=bias) for a, b in zip(dims[:-1], dims[1:]))
        self.relu = activation == "relu"

    def forward(self, x):
        x = x.flatten(1)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if self.relu and i < len(self.layers) - 1:
                x = F.relu(x)
        return x


def input_dim(spec: InputSpec) -> int:
    """The first layer's fan-in: the image, flattened."""
    return spec.channels * spec.image_size ** 2


def _hidden(cfg: ModelConfig, width: int, inner: list[int] | None) -> list[int]:
    return list(inner) if inner is not None else [width] * cfg.hidden_layers


def build(cfg: ModelConfig, width: int, spec: InputSpec, inner: list[int] | None = None) -> nn.Module:
    return MLP(input_dim(spec), _hidden(cfg, width, inner), spec.num_classes, cfg.activation, cfg.bias,
               cfg.parameterization)


def weight_shapes(cfg: ModelConfig, width: int, spec: InputSpec,
                  inner: list[int] | None = None) -> dict[str, tuple[int, ...]]:
    dims = [input_dim(spec), *_hidden(cfg, width, inner), spec.num_classes]
    return {f"layers.{i}": (b, a) for i, (a, b) in enumerate(zip(dims[:-1], dims[1:]))}


def bottleneck(cfg: ModelConfig, width: int, spec: InputSpec):
    """The non-linear bottleneck: hidden layers 1, 3, ... shrink while 0, 2, ... keep `width`.
    Returns (full sizes, weights per unit of each, inner(sizes) -> every hidden width)."""
    if cfg.hidden_layers < 2:
        raise UserError("nonlinear-bottleneck on the MLP needs model.hidden_layers >= 2 "
                        "(wide and narrow layers alternate)")
    narrow = list(range(1, cfg.hidden_layers, 2))
    after = [width if i + 1 < cfg.hidden_layers else spec.num_classes for i in narrow]

    def inner(sizes: list[int]) -> list[int]:
        widths = [width] * cfg.hidden_layers
        for i, size in zip(narrow, sizes):
            widths[i] = size
        return widths

    return [width] * len(narrow), [width + a for a in after], inner
