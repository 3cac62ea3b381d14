"""A Swin-style hierarchical transformer (Liu et al. 2021), seeded weights.

Windowed self-attention with a learned relative position bias (a table indexed by a
precomputed index buffer); every second block shifts the windows with ``torch.roll`` and
masks attention across the wrap-around seams; windows are partitioned and merged back
with rank-6 views and permutes; patch merging by strided slicing, ``torch.cat``,
LayerNorm and a linear reduction. Small: 64x64 images, 4x4 patches, window 4,
two stages (dim 48 then 96, two blocks each), 3 then 6 heads.
Model file: ``model()``, ``example_inputs()`` = (image,); output: logits (1, 100).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from seeded import image_batch
from torch import Tensor, nn
from zoo_helpers import seeded

IMAGE = 64
PATCH = 4
WINDOW = 4
DIM = 48
DEPTHS = (2, 2)
HEADS = (3, 6)
CLASSES = 100


def window_partition(x: Tensor, ws: int) -> Tensor:
    """(B, H, W, C) -> (B * windows, ws * ws, C)."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)


def window_reverse(windows: Tensor, ws: int, h: int, w: int) -> Tensor:
    """(B * windows, ws * ws, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(-1, h // ws, w // ws, ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


def relative_position_index(ws: int) -> Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij"))
    coords = coords.flatten(1)  # (2, ws*ws)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)
    return relative[..., 0] * (2 * ws - 1) + relative[..., 1]  # (ws*ws, ws*ws)


def shifted_window_mask(h: int, w: int, ws: int, shift: int) -> Tensor:
    """(windows, ws*ws, ws*ws) additive mask: -100 between tokens from different regions."""
    regions = torch.zeros(1, h, w, 1)
    label = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            regions[:, hs, wsl, :] = label
            label += 1
    windows = window_partition(regions, ws).squeeze(-1)  # (windows, ws*ws)
    mask = windows[:, None, :] - windows[:, :, None]
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


class WindowAttention(nn.Module):
    def __init__(self, dim: int, heads: int, ws: int):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.bias_table = nn.Parameter(torch.randn((2 * ws - 1) ** 2, heads) * 0.02)
        self.register_buffer("bias_index", relative_position_index(ws), persistent=False)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        bw, n, c = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.bias_table[self.bias_index.view(-1)].view(n, n, -1).permute(2, 0, 1)
        attn = attn + bias.unsqueeze(0)
        if mask is not None:
            windows = mask.shape[0]
            attn = attn.view(bw // windows, windows, self.heads, n, n) + mask[None, :, None]
            attn = attn.view(-1, self.heads, n, n)
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(bw, n, c))


class SwinBlock(nn.Module):
    def __init__(self, dim: int, heads: int, resolution: int, shift: int):
        super().__init__()
        self.resolution = resolution
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, WINDOW)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        mask = shifted_window_mask(resolution, resolution, WINDOW, shift) if shift else None
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        b, length, c = x.shape
        h = w = self.resolution
        y = self.norm1(x).view(b, h, w, c)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(window_partition(y, WINDOW), self.attn_mask)
        y = window_reverse(y, WINDOW, h, w)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + y.reshape(b, length, c)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    def __init__(self, dim: int, resolution: int):
        super().__init__()
        self.resolution = resolution
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        b, _, c = x.shape
        x = x.view(b, self.resolution, self.resolution, c)
        x0, x1 = x[:, 0::2, 0::2], x[:, 1::2, 0::2]
        x2, x3 = x[:, 0::2, 1::2], x[:, 1::2, 1::2]
        x = torch.cat((x0, x1, x2, x3), dim=-1).view(b, -1, 4 * c)
        return self.reduction(self.norm(x))


class Swin(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, DIM, PATCH, stride=PATCH)
        self.patch_norm = nn.LayerNorm(DIM)
        layers: list[nn.Module] = []
        resolution, dim = IMAGE // PATCH, DIM
        for stage, (depth, heads) in enumerate(zip(DEPTHS, HEADS, strict=True)):
            if stage:
                layers.append(PatchMerging(dim, resolution))
                resolution, dim = resolution // 2, dim * 2
            for i in range(depth):
                layers.append(SwinBlock(dim, heads, resolution, WINDOW // 2 if i % 2 else 0))
        self.layers = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_norm(self.patch_embed(x).flatten(2).transpose(1, 2))
        x = self.norm(self.layers(x))
        return self.head(F.adaptive_avg_pool1d(x.transpose(1, 2), 1).flatten(1))


def model() -> Swin:
    return seeded(Swin, seed=14)


def example_inputs() -> tuple[Tensor]:
    return image_batch(size=IMAGE, seed=14)
