"""Model registry and the paper's weight-count rule.

Each architecture's module builds the model and describes it without building it, so that budget.py
can plan a family from shapes alone:
- `build(cfg, width, spec, inner=None) -> nn.Module`
- `weight_shapes(cfg, width, spec, inner=None)`: name -> weight shape of every conv/linear layer, in
  module order (the last one is the classifier);
- `bottleneck(cfg, width, spec)`: the non-linear bottleneck's layout, (full sizes, weights per unit of
  each size, inner(sizes) -> the `inner` argument of the other two);
- optionally `initialise(cfg, model)`: re-draw the built model's weights (after any factorisation, so
  the linear bottleneck's factors are initialised the same way).
"""
from __future__ import annotations


from torch import nn

from widen_cli.datasets import InputSpec  # the models' input, from the dataset registry (no torch)
from widen_cli.schema import ModelConfig
from widen_cli.models import mlp, resnet
from widen_cli.models.bottleneck import factorize

ARCHITECTURES = {"mlp": mlp, "resnet18": resnet}


def build_model(cfg: ModelConfig, width: int, spec: InputSpec, inner: list[int] | None = None,
                ranks: dict[str, int] | None = None) -> nn.Module:
    """A model at `width`. `inner`: hidden widths (MLP) or blocks' inner widths (ResNet), for the
    non-linear bottleneck; `ranks`: per-layer ranks of the linear bottleneck (see budget.py)."""
    arch = ARCHITECTURES[cfg.name]
    model = arch.build(cfg, width, spec, inner)
    if ranks:
        model = factorize(model, ranks)
    return arch.initialise(cfg, model) if hasattr(arch, "initialise") else model


def weight_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The layers whose weights the paper counts (and sparsifies): convolutions and linear maps."""
    return {name: m for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def count_weights(model: nn.Module) -> int:
    """The paper's count: weight tensors of conv and linear layers; no biases, no BatchNorm."""
    return sum(m.weight.numel() for m in weight_layers(model).values())
