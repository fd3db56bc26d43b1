"""Fully connected networks: the paper's Figure 4 and Figure 7 models."""
from __future__ import annotations

import math

import torch.nn.functional as F
from torch import nn


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
