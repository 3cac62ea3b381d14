"""Shared by the zoo's model files: seeded construction and batch-norm statistics from data.

Not a model file (no ``model()``): ``coreml-compile`` and benchmarks/coverage.py skip it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from seeded import randomize
from torch import nn


def seeded(factory: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Build ``factory()`` under ``seed`` (without touching the caller's RNG), then
    give its convolutions, linears and batch norms seeded weights (``seeded.randomize``)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = factory()
    return randomize(model, seed)


def fill_batch_norm_statistics(
    model: nn.Module, shape: tuple[int, ...], seed: int = 0, steps: int = 3
) -> nn.Module:
    """Running statistics of every batch norm from ``steps`` forward passes on seeded
    random data of ``shape`` (train-mode batch norms, cumulative average), so the
    normalisations normalise and activations keep their scale through the network."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    generator = torch.Generator().manual_seed(seed)
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    with torch.no_grad():
        for _ in range(steps):
            model(torch.randn(*shape, generator=generator))
    for bn in norms:
        bn.momentum = 0.1
    return model.eval()


def token_batch(vocab: int, length: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """Seeded random token ids of shape (batch, length)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, length), generator=generator)
