"""ResNet-18 whose width is the first convolution's output channels; stages at 1:2:4:8 of it.

The block structure follows torchvision's ResNet; only the widths are free. Initialisation
(`model.init`, applied to every layer after the model is built, bottleneck factors included):
- `lecun`: conv and linear weights ~ N(0, 1/fan_in), biases 0: the LeCun parameterisation the paper
  states for its empirical sections (its Section 3);
- `torchvision`: torchvision's resnet: convolutions Kaiming-normal over fan_out (std sqrt(2/fan_out)),
  the classifier left at PyTorch's default; the "standard PyTorch implementation" of its Appendix A,
  and exactly what widen did before `model.init` existed (linear-bottleneck factors at PyTorch's default);
- `pytorch`: every layer at PyTorch's module default (Kaiming-uniform with a=sqrt(5): std 1/sqrt(3 fan_in)).
BatchNorm starts at weight 1, bias 0 under all three.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from widen_cli.models.bottleneck import Factorized

if TYPE_CHECKING:
    from widen_cli.schema import ModelConfig
    from widen_cli.models import InputSpec

BLOCK_MULTS = (1, 1, 2, 2, 4, 4, 8, 8)  # the 8 BasicBlocks' widths in units of `width`: 4 stages of 2
CIFAR_STEM_MAX_SIZE = 64  # the CIFAR-style stem is used up to this image size, the ImageNet stem above it


def blocks(width: int) -> list[tuple[str, int, int, int]]:
    """(name, in channels, out channels, stride) of the 8 BasicBlocks, in module order."""
    out, in_ch = [], width
    for b, mult in enumerate(BLOCK_MULTS):  # a stage's first block halves the resolution (not the first stage's)
        out.append((f"layer{b // 2 + 1}.{b % 2}", in_ch, width * mult, 2 if b > 0 and b % 2 == 0 else 1))
        in_ch = width * mult
    return out


def stem(cfg: ModelConfig, spec: InputSpec) -> str:
    if cfg.stem == "auto":
        return "cifar" if spec.image_size <= CIFAR_STEM_MAX_SIZE else "imagenet"
    return cfg.stem


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, mid_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_ch)
        self.conv2 = nn.Conv2d(mid_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """`stem="cifar"`: 3x3 conv, stride 1, no max-pool (small images); `"imagenet"`: 7x7/2 + max-pool.

    `inner` gives each of the 8 blocks' inner width (between its two convolutions); by default it
    equals the block's width. The non-linear bottleneck shrinks it.
    """

    def __init__(self, width: int, num_classes: int, in_channels: int = 3, stem: str = "cifar",
                 inner: list[int] | None = None):
        super().__init__()
        layout = blocks(width)
        inner = list(inner) if inner is not None else [out for _, _, out, _ in layout]
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        else:
            self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        made = [BasicBlock(i, mid, o, stride) for (_, i, o, stride), mid in zip(layout, inner)]
        self.layer1, self.layer2, self.layer3, self.layer4 = (nn.Sequential(*made[i:i + 2]) for i in range(0, 8, 2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(layout[-1][2], num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def initialise(cfg: ModelConfig, model: nn.Module) -> nn.Module:
    """Re-draw the freshly built model's weights by `cfg.init` (layers are built at PyTorch's defaults)."""
    factors = {id(f) for m in model.modules() if isinstance(m, Factorized) for f in m}
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif cfg.init == "lecun" and isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="linear")  # std 1/sqrt(fan_in)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif cfg.init == "torchvision" and isinstance(m, nn.Conv2d) and id(m) not in factors:
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model


def build(cfg: ModelConfig, width: int, spec: InputSpec, inner: list[int] | None = None) -> nn.Module:
    return ResNet18(width, spec.num_classes, spec.channels, stem(cfg, spec), inner)


def weight_shapes(cfg: ModelConfig, width: int, spec: InputSpec,
                  inner: list[int] | None = None) -> dict[str, tuple[int, ...]]:
    k = 7 if stem(cfg, spec) == "imagenet" else 3
    layout = blocks(width)
    inner = inner if inner is not None else [out for _, _, out, _ in layout]
    shapes = {"conv1": (width, spec.channels, k, k)}
    for (name, in_ch, out_ch, stride), mid in zip(layout, inner):
        shapes[f"{name}.conv1"] = (mid, in_ch, 3, 3)
        shapes[f"{name}.conv2"] = (out_ch, mid, 3, 3)
        if stride != 1 or in_ch != out_ch:
            shapes[f"{name}.downsample.0"] = (out_ch, in_ch, 1, 1)
    shapes["fc"] = (spec.num_classes, layout[-1][2])
    return shapes


def bottleneck(cfg: ModelConfig, width: int, spec: InputSpec):
    """The non-linear bottleneck: each block's inner width shrinks; an inner channel costs 3x3 (in + out).
    Returns (full sizes, weights per unit of each, inner(sizes) -> the blocks' inner widths)."""
    layout = blocks(width)
    return [out for _, _, out, _ in layout], [9 * (i + o) for _, i, o, _ in layout], list
