"""A UNet (Ronneberger et al. 2015) for segmentation, seeded weights, batch-norm statistics
from data.

Encoder of (conv-BN-ReLU) x2 blocks and 2x2 max pooling; decoder upsampling by
``nn.Upsample`` (bilinear, align_corners=True) on the deeper levels and by a transposed
convolution on the last, ``F.pad`` to the skip's size and ``torch.cat`` skip connections,
as in the widely used PyTorch UNet. Small: 64x64 RGB in, 16 base channels, 3 downsamplings,
2 classes out at full resolution.
Model file: ``model()``, ``example_inputs()`` = (image,); output: logits (1, 2, 64, 64).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from seeded import image_batch
from torch import Tensor, nn
from zoo_helpers import fill_batch_norm_statistics, seeded

IMAGE = 64
BASE = 16
CLASSES = 2


class DoubleConv(nn.Sequential):
    def __init__(self, inp: int, out: int, mid: int | None = None):
        mid = mid or out
        super().__init__(
            nn.Conv2d(inp, mid, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, out, 3, padding=1, bias=False),
            nn.BatchNorm2d(out),
            nn.ReLU(inplace=True),
        )


class Down(nn.Sequential):
    def __init__(self, inp: int, out: int):
        super().__init__(nn.MaxPool2d(2), DoubleConv(inp, out))


class Up(nn.Module):
    def __init__(self, inp: int, out: int, bilinear: bool):
        super().__init__()
        if bilinear:
            self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
            self.conv = DoubleConv(inp, out, inp // 2)
        else:
            self.up = nn.ConvTranspose2d(inp, inp // 2, 2, stride=2)
            self.conv = DoubleConv(inp, out)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = self.up(x)
        dy, dx = skip.shape[2] - x.shape[2], skip.shape[3] - x.shape[3]
        x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    def __init__(self, channels: int = 3, classes: int = CLASSES, base: int = BASE):
        super().__init__()
        self.inc = DoubleConv(channels, base)
        self.down1 = Down(base, 2 * base)
        self.down2 = Down(2 * base, 4 * base)
        self.down3 = Down(4 * base, 4 * base)  # bilinear: the bottom keeps its width
        self.up1 = Up(8 * base, 2 * base, bilinear=True)
        self.up2 = Up(4 * base, 2 * base, bilinear=True)
        self.up3 = Up(2 * base, base, bilinear=False)
        self.outc = nn.Conv2d(base, classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x = self.up1(x4, x3)
        x = self.up2(x, x2)
        x = self.up3(x, x1)
        return self.outc(x)


def model() -> UNet:
    return fill_batch_norm_statistics(seeded(UNet, seed=15), (4, 3, IMAGE, IMAGE), seed=15)


def example_inputs() -> tuple[Tensor]:
    return image_batch(size=IMAGE, seed=15)
