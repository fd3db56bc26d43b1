"""Model registry and the paper's weight-count rule."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from widen_cli.config import ModelConfig
from widen_cli.models.bottleneck import factorize
from widen_cli.models.mlp import MLP
from widen_cli.models.resnet import ResNet18

# The CIFAR-style stem is used up to this image size, the ImageNet stem above it.
CIFAR_STEM_MAX_SIZE = 64


@dataclass(frozen=True)
class InputSpec:
    """What a model needs to know about its data."""

    channels: int
    image_size: int
    num_classes: int


def resnet_stem(cfg: ModelConfig, spec: InputSpec) -> str:
    if cfg.stem == "auto":
        return "cifar" if spec.image_size <= CIFAR_STEM_MAX_SIZE else "imagenet"
    return cfg.stem


def _mlp(cfg: ModelConfig, width: int, spec: InputSpec, inner: list[int] | None) -> nn.Module:
    widths = inner if inner is not None else [width] * cfg.hidden_layers
    return MLP(spec.channels * spec.image_size**2, widths, spec.num_classes, cfg.activation, cfg.bias,
               cfg.parameterization)


def _resnet18(cfg: ModelConfig, width: int, spec: InputSpec, inner: list[int] | None) -> nn.Module:
    return ResNet18(width, spec.num_classes, spec.channels, resnet_stem(cfg, spec), inner)


BUILDERS = {"mlp": _mlp, "resnet18": _resnet18}


def build_model(cfg: ModelConfig, width: int, spec: InputSpec, inner: list[int] | None = None,
                ranks: dict[str, int] | None = None) -> nn.Module:
    """A model at `width`. `inner`: hidden widths (MLP) or blocks' inner widths (ResNet), for the
    non-linear bottleneck; `ranks`: per-layer ranks of the linear bottleneck (see budget.py)."""
    model = BUILDERS[cfg.name](cfg, width, spec, inner)
    return factorize(model, ranks) if ranks else model


def weight_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The layers whose weights the paper counts (and sparsifies): convolutions and linear maps."""
    return {name: m for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def count_weights(model: nn.Module) -> int:
    """The paper's count: weight tensors of conv and linear layers; no biases, no BatchNorm."""
    return sum(m.weight.numel() for m in weight_layers(model).values())
