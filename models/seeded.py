"""Seeded random weights for the project's models, so tests never download anything.

Convolutions get He-normal weights (so activations keep their scale through deep nets),
and batch norms random but well-conditioned statistics, so a model is not the identity
around its norms and numerical checks have something to find.
"""

from __future__ import annotations

import torch
from torch import nn


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.out_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
                m.weight.normal_(0.0, (2.0 / fan_out) ** 0.5, generator=generator)
                if m.bias is not None:
                    m.bias.normal_(0.0, 0.01, generator=generator)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.0, generator=generator)
                m.bias.normal_(0.0, 0.05, generator=generator)
                m.running_mean.normal_(0.0, 0.05, generator=generator)
                m.running_var.uniform_(0.8, 1.2, generator=generator)
            elif isinstance(m, nn.Linear):
                bound = (1.0 / m.in_features) ** 0.5
                m.weight.uniform_(-bound, bound, generator=generator)
                if m.bias is not None:
                    m.bias.uniform_(-bound, bound, generator=generator)
    return model.eval()


def image_batch(batch: int = 1, size: int = 224, seed: int = 0) -> tuple[torch.Tensor]:
    """A seeded random image batch of shape (batch, 3, size, size)."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 3, size, size, generator=generator),)
