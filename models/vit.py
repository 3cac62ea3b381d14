"""A Vision Transformer (Dosovitskiy et al. 2020), seeded weights.

Patch embedding by a strided convolution, a class token prepended with ``torch.cat``,
learned position embeddings, pre-norm blocks of ``nn.MultiheadAttention`` (batch first)
and a GELU MLP, then LayerNorm and a linear head on the class token.
Small: 64x64 images, 8x8 patches (64 tokens + class token), 4 layers, dim 128, 4 heads.
Model file: ``model()``, ``example_inputs()`` = (image,); output: logits (1, 100).
"""

from __future__ import annotations

import torch
from seeded import image_batch
from torch import Tensor, nn
from zoo_helpers import seeded

IMAGE = 64
PATCH = 8
DIM = 128
DEPTH = 4
HEADS = 4
CLASSES = 100


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=0.0, batch_first=True)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim),
            nn.GELU(),
            nn.Dropout(0.0),
            nn.Linear(mlp_ratio * dim, dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    def __init__(self):
        super().__init__()
        tokens = (IMAGE // PATCH) ** 2
        self.patch_embed = nn.Conv2d(3, DIM, PATCH, stride=PATCH)
        self.cls_token = nn.Parameter(torch.randn(1, 1, DIM) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, tokens + 1, DIM) * 0.02)
        self.blocks = nn.Sequential(*(Block(DIM, HEADS) for _ in range(DEPTH)))
        self.norm = nn.LayerNorm(DIM, eps=1e-6)
        self.head = nn.Linear(DIM, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, tokens, DIM)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat((cls, x), dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


def model() -> VisionTransformer:
    return seeded(VisionTransformer, seed=13)


def example_inputs() -> tuple[Tensor]:
    return image_batch(size=IMAGE, seed=13)
