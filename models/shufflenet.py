"""A ShuffleNetV2 (Ma et al. 2018), seeded weights, batch-norm statistics from data.

Blocks split channels with ``torch.chunk``, run one half through 1x1 / depthwise 3x3 /
1x1 convolutions, concatenate and shuffle channels with ``view`` / ``transpose`` /
``view`` (torchvision's ``channel_shuffle``); downsampling blocks run both halves.
Small: 64x64 RGB in, stage widths 48 / 96 / 192, 1024-channel conv5, 100 classes.
Model file: ``model()``, ``example_inputs()`` = (image,); output: logits (1, 100).
"""

from __future__ import annotations

import torch
from seeded import image_batch
from torch import Tensor, nn
from zoo_helpers import fill_batch_norm_statistics, seeded

IMAGE = 64
STAGE_REPEATS = (2, 3, 2)
STAGE_CHANNELS = (24, 48, 96, 192, 512)
CLASSES = 100


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    b, c, h, w = x.size()
    x = x.view(b, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(b, -1, h, w)


def depthwise(channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, stride, 1, groups=channels, bias=False),
        nn.BatchNorm2d(channels),
    )


def pointwise(inp: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, out, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU(True))


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, out: int, stride: int):
        super().__init__()
        self.stride = stride
        half = out // 2
        if stride > 1:
            self.branch1 = nn.Sequential(depthwise(inp, stride), pointwise(inp, half))
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            pointwise(inp if stride > 1 else half, half),
            depthwise(half, stride),
            pointwise(half, half),
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    def __init__(self, classes: int = CLASSES):
        super().__init__()
        channels = STAGE_CHANNELS[0]
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, channels, 3, 2, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(True)
        )
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages: list[nn.Module] = []
        for repeats, out in zip(STAGE_REPEATS, STAGE_CHANNELS[1:4], strict=True):
            blocks = [InvertedResidual(channels, out, 2)]
            blocks += [InvertedResidual(out, out, 1) for _ in range(repeats - 1)]
            stages.append(nn.Sequential(*blocks))
            channels = out
        self.stages = nn.Sequential(*stages)
        self.conv5 = pointwise(channels, STAGE_CHANNELS[-1])
        self.fc = nn.Linear(STAGE_CHANNELS[-1], classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stages(self.maxpool(self.conv1(x)))
        x = self.conv5(x).mean([2, 3])  # global pool
        return self.fc(x)


def model() -> ShuffleNetV2:
    net = seeded(ShuffleNetV2, seed=18)
    return fill_batch_norm_statistics(net, (4, 3, IMAGE, IMAGE), seed=18)


def example_inputs() -> tuple[Tensor]:
    return image_batch(size=IMAGE, seed=18)
