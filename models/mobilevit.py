"""A MobileViT-style hybrid CNN / transformer (Mehta & Rastegari 2021), seeded weights,
batch-norm statistics from data.

MobileNetV2 inverted residuals (SiLU) for local features, and MobileViT blocks: a local
3x3 + 1x1 convolution, unfolding into 2x2 patches with reshape / transpose, a pre-norm
transformer over the patches (``F.scaled_dot_product_attention``, SiLU MLP), folding back,
a 1x1 projection, ``torch.cat`` with the block's input and a 3x3 fusion convolution.
Small (about MobileViT-XXS widths): 64x64 RGB in, 100 classes.
Model file: ``model()``, ``example_inputs()`` = (image,); output: logits (1, 100).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from seeded import image_batch
from torch import Tensor, nn
from zoo_helpers import fill_batch_norm_statistics, seeded

IMAGE = 64
PATCH = 2
CLASSES = 100


def conv_bn(inp: int, out: int, kernel: int = 3, stride: int = 1, groups: int = 1, act=True):
    layers = [
        nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out),
    ]
    if act:
        layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class MV2Block(nn.Module):
    def __init__(self, inp: int, out: int, stride: int = 1, expansion: int = 2):
        super().__init__()
        hidden = inp * expansion
        self.use_residual = stride == 1 and inp == out
        self.conv = nn.Sequential(
            conv_bn(inp, hidden, 1),
            conv_bn(hidden, hidden, 3, stride, groups=hidden),
            conv_bn(hidden, out, 1, act=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        *lead, n, d = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k, v = (t.reshape(-1, n, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(*lead, n, d))


class TransformerLayer(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.SiLU(), nn.Linear(mlp_dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MobileViTBlock(nn.Module):
    def __init__(self, channels: int, dim: int, depth: int, heads: int = 4):
        super().__init__()
        self.local = nn.Sequential(conv_bn(channels, channels, 3), nn.Conv2d(channels, dim, 1))
        self.transformer = nn.Sequential(
            *(TransformerLayer(dim, heads, 2 * dim) for _ in range(depth)), nn.LayerNorm(dim)
        )
        self.project = conv_bn(dim, channels, 1)
        self.fuse = conv_bn(2 * channels, channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        y = self.local(x)
        b, d, h, w = y.shape
        ph = pw = PATCH
        # Unfold: (B, D, H, W) -> (B, ph*pw, patches, D), each pixel position of a patch
        # attending across all patches.
        y = y.reshape(b, d, h // ph, ph, w // pw, pw).permute(0, 3, 5, 2, 4, 1)
        y = y.reshape(b, ph * pw, (h // ph) * (w // pw), d)
        y = self.transformer(y)
        # Fold back.
        y = y.reshape(b, ph, pw, h // ph, w // pw, d).permute(0, 5, 3, 1, 4, 2)
        y = self.project(y.reshape(b, d, h, w))
        return self.fuse(torch.cat((x, y), dim=1))


class MobileViT(nn.Module):
    def __init__(self, classes: int = CLASSES):
        super().__init__()
        self.stem = conv_bn(3, 16, 3, 2)  # 32x32
        self.stages = nn.Sequential(
            MV2Block(16, 16),
            MV2Block(16, 24, stride=2),  # 16x16
            MV2Block(24, 24),
            MV2Block(24, 48, stride=2),  # 8x8
            MobileViTBlock(48, 64, depth=2),
            MV2Block(48, 64, stride=2),  # 4x4
            MobileViTBlock(64, 80, depth=2),
        )
        self.conv_out = conv_bn(64, 256, 1)
        self.classifier = nn.Linear(256, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_out(self.stages(self.stem(x)))
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


def model() -> MobileViT:
    net = seeded(MobileViT, seed=19)
    return fill_batch_norm_statistics(net, (4, 3, IMAGE, IMAGE), seed=19)


def example_inputs() -> tuple[Tensor]:
    return image_batch(size=IMAGE, seed=19)
