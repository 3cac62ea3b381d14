"""Shared test helpers: tolerances for comparing a package's outputs with torch."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
# The model files import their neighbour seeded.py, as they do when the CLI loads them.
sys.path.insert(0, str(ROOT / "models"))

# Per precision: tolerance relative to the output's magnitude. fp16 keeps 11 significant
# bits (relative step 2^-10 ≈ 1e-3); a few roundings per op chain stay within 8 steps.
RELATIVE_TOLERANCE = {"fp32": 1e-5, "fp16": 8e-3}


def assert_close(
    actual: torch.Tensor, expected: torch.Tensor, precision: str, what: str = ""
) -> None:
    actual = torch.as_tensor(actual)
    expected = torch.as_tensor(expected)
    assert tuple(actual.shape) == tuple(expected.shape), (
        f"{what}: shape {list(actual.shape)} != {list(expected.shape)}"
    )
    if not expected.is_floating_point():
        assert torch.equal(actual.to(expected.dtype), expected), f"{what}: values differ"
        return
    actual = actual.to(torch.float64)
    expected = expected.to(torch.float64)
    scale = max(1.0, expected.abs().max().item())
    err = (actual - expected).abs().max().item()
    bound = RELATIVE_TOLERANCE[precision] * scale
    assert err <= bound, f"{what}: max abs error {err:.3g} > {bound:.3g} ({precision})"
