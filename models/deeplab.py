"""A DeepLabV3-style segmentation model (Chen et al. 2017), seeded weights, batch-norm
statistics from data.

A small residual backbone to output stride 8 whose last stage trades stride for dilation,
then atrous spatial pyramid pooling: a 1x1 branch, three 3x3 atrous branches (rates 2, 4,
6) and an image-pooling branch (global average pool, 1x1 conv, ``F.interpolate`` back),
concatenated and projected; the logits are upsampled to the input size with
``F.interpolate`` (bilinear, align_corners=False), as torchvision's DeepLabHead does.
Small: 96x96 RGB in, 21 classes.
Model file: ``model()``, ``example_inputs()`` = (image,); output: logits (1, 21, 96, 96).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from seeded import image_batch
from torch import Tensor, nn
from zoo_helpers import fill_batch_norm_statistics, seeded

IMAGE = 96
CLASSES = 21
ASPP_RATES = (2, 4, 6)
ASPP_CHANNELS = 64


def conv_bn_relu(inp: int, out: int, kernel: int = 3, stride: int = 1, dilation: int = 1):
    padding = dilation * (kernel - 1) // 2
    return nn.Sequential(
        nn.Conv2d(inp, out, kernel, stride, padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    def __init__(self, inp: int, out: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv1 = conv_bn_relu(inp, out, 3, stride, dilation)
        self.conv2 = nn.Conv2d(out, out, 3, 1, dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.shortcut = (
            nn.Sequential(nn.Conv2d(inp, out, 1, stride, bias=False), nn.BatchNorm2d(out))
            if stride != 1 or inp != out
            else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn2(self.conv2(self.conv1(x))) + self.shortcut(x))


class ASPPPooling(nn.Sequential):
    def __init__(self, inp: int, out: int):
        super().__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(inp, out, 1, bias=False),
            nn.BatchNorm2d(out),
            nn.ReLU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        for module in self:
            x = module(x)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    def __init__(self, inp: int, rates: tuple[int, ...], out: int = ASPP_CHANNELS):
        super().__init__()
        branches = [conv_bn_relu(inp, out, 1)]
        branches += [conv_bn_relu(inp, out, 3, dilation=rate) for rate in rates]
        branches.append(ASPPPooling(inp, out))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(conv_bn_relu(len(branches) * out, out, 1), nn.Dropout(0.5))

    def forward(self, x: Tensor) -> Tensor:
        return self.project(torch.cat([conv(x) for conv in self.convs], dim=1))


class DeepLabV3(nn.Module):
    def __init__(self, classes: int = CLASSES):
        super().__init__()
        self.backbone = nn.Sequential(
            conv_bn_relu(3, 32, 3, 2),  # /2
            ResidualBlock(32, 32),
            ResidualBlock(32, 64, stride=2),  # /4
            ResidualBlock(64, 96, stride=2),  # /8
            ResidualBlock(96, 128, dilation=2),  # stays /8: dilation instead of stride
            ResidualBlock(128, 128, dilation=2),
        )
        self.head = nn.Sequential(
            ASPP(128, ASPP_RATES),
            conv_bn_relu(ASPP_CHANNELS, ASPP_CHANNELS),
            nn.Conv2d(ASPP_CHANNELS, classes, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        x = self.head(self.backbone(x))
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def model() -> DeepLabV3:
    return fill_batch_norm_statistics(seeded(DeepLabV3, seed=17), (4, 3, IMAGE, IMAGE), seed=17)


def example_inputs() -> tuple[Tensor]:
    return image_batch(size=IMAGE, seed=17)
