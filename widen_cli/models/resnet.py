"""ResNet-18 whose width is the first convolution's output channels; stages at 1:2:4:8 of it.

The block structure and initialisation follow torchvision's ResNet; only the widths are free.
"""
from __future__ import annotations

from torch import nn


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
        inner = list(inner) if inner is not None else [width * m for m in (1, 1, 2, 2, 4, 4, 8, 8)]
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        else:
            self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        stages, in_ch = [], width
        for i, mult in enumerate((1, 2, 4, 8)):
            ch = width * mult
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(in_ch, inner[2 * i], ch, stride),
                                        BasicBlock(ch, inner[2 * i + 1], ch)))
            in_ch = ch
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))
