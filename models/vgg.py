"""VGG-11/13/16/19, with and without batch norm (Simonyan & Zisserman 2014), seeded weights.

Model file: ``model()`` is VGG-16; ``vgg11`` ... ``vgg19`` and ``vgg11_bn`` ... ``vgg19_bn``
name the others (``coreml-compile models/vgg.py:vgg11_bn``).
"""

from __future__ import annotations

from seeded import image_batch, randomize
from torch import Tensor, nn

# Channels per conv layer; "M" is a 2x2 max pool.
CONFIGS = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M"]
    + [512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    def __init__(self, config: list, batch_norm: bool, num_classes: int = 1000):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            layers.append(nn.Conv2d(channels, item, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(item))
            layers.append(nn.ReLU(inplace=True))
            channels = item
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(True),
            nn.Dropout(),
            nn.Linear(4096, 4096),
            nn.ReLU(True),
            nn.Dropout(),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(x.flatten(1))


def _vgg(depth: int, batch_norm: bool) -> VGG:
    return randomize(VGG(CONFIGS[depth], batch_norm), seed=depth + 100 * batch_norm)


def vgg11() -> VGG:
    return _vgg(11, False)


def vgg13() -> VGG:
    return _vgg(13, False)


def vgg16() -> VGG:
    return _vgg(16, False)


def vgg19() -> VGG:
    return _vgg(19, False)


def vgg11_bn() -> VGG:
    return _vgg(11, True)


def vgg13_bn() -> VGG:
    return _vgg(13, True)


def vgg16_bn() -> VGG:
    return _vgg(16, True)


def vgg19_bn() -> VGG:
    return _vgg(19, True)


model = vgg16


def example_inputs() -> tuple:
    return image_batch()
