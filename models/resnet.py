"""ResNet-18/34/50/101/152 (He et al. 2015; stride on the 3x3 conv, "v1.5"), seeded weights.

Model file: ``model()`` is ResNet-50; ``resnet18`` ... ``resnet152`` name the others
(``coreml-compile models/resnet.py:resnet18``). ``resnet18_with_fallback`` has one op
Core ML cannot run in the middle, and compiles to a partitioned package.
"""

from __future__ import annotations

import torch
from seeded import image_batch, randomize
from torch import Tensor, nn


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(inplanes, planes * self.expansion, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(inplanes, planes * self.expansion, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


def _downsample(inplanes: int, outplanes: int, stride: int) -> nn.Module | None:
    if stride == 1 and inplanes == outplanes:
        return None
    return nn.Sequential(
        nn.Conv2d(inplanes, outplanes, 1, stride, bias=False), nn.BatchNorm2d(outplanes)
    )


class ResNet(nn.Module):
    def __init__(self, block: type, layers: list[int], num_classes: int = 1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._stage(block, 64, layers[0], 1)
        self.layer2 = self._stage(block, 128, layers[1], 2)
        self.layer3 = self._stage(block, 256, layers[2], 2)
        self.layer4 = self._stage(block, 512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def _stage(self, block: type, planes: int, blocks: int, stride: int) -> nn.Sequential:
        stage = [block(self.inplanes, planes, stride)]
        self.inplanes = planes * block.expansion
        stage += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def resnet18() -> ResNet:
    return randomize(ResNet(BasicBlock, [2, 2, 2, 2]), seed=18)


def resnet34() -> ResNet:
    return randomize(ResNet(BasicBlock, [3, 4, 6, 3]), seed=34)


def resnet50() -> ResNet:
    return randomize(ResNet(Bottleneck, [3, 4, 6, 3]), seed=50)


def resnet101() -> ResNet:
    return randomize(ResNet(Bottleneck, [3, 4, 23, 3]), seed=101)


def resnet152() -> ResNet:
    return randomize(ResNet(Bottleneck, [3, 8, 36, 3]), seed=152)


class _WithFallback(nn.Module):
    """A ResNet with one op Core ML has no lowering for between layer2 and layer3.

    The op is a cumulative sum over the batch dimension, which for batch 1 leaves the
    values as they are: the model computes what the plain ResNet does, so the cost of
    partitioning (hand-offs, a torch step) can be measured against it.
    """

    def __init__(self, net: ResNet):
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        # erfinv has no Core ML op: it runs on torch, between two Core ML partitions,
        # and changes the values (a fallback that did nothing would go unnoticed).
        x = torch.special.erfinv(torch.tanh(n.layer2(n.layer1(x))) * 0.5)
        x = n.layer4(n.layer3(x))
        return n.fc(n.avgpool(x).flatten(1))


def resnet18_with_fallback() -> nn.Module:
    """ResNet-18 with one op Core ML cannot run in the middle (a partitioned package)."""
    return _WithFallback(resnet18())


model = resnet50


def example_inputs() -> tuple:
    return image_batch()
