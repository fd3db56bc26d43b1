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
    """input -> hidden widths -> classes; the input is flattened, the last layer is linear."""

    def __init__(self, input_dim: int, widths: list[int], num_classes: int, activation: str = "relu",
                 bias: bool = True, parameterization: str = "standard"):
        super().__init__()
        linear = NTKLinear if parameterization == "ntk" else nn.Linear
        dims = [input_dim, *widths, num_classes]
        layers: list[nn.Module] = [nn.Flatten()]
        for i, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(linear(fan_in, fan_out, bias=bias))
            if i < len(dims) - 2 and activation == "relu":
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)
