"""Triangular parts of a batch of matrices: triu and tril.

MIL's ``band_part`` keeps a band around the diagonal of the last two dims (``lower``
sub-diagonals and ``upper`` super-diagonals, -1 for all), so it is a triangle only when
the kept side reaches the diagonal: triu with ``diagonal <= 0``, tril with
``diagonal >= 0``. The other offsets keep the complement of such a band, chosen with a
``select`` on a band of ones rather than subtracting it from ``x``: a causal mask is
``triu`` of a tensor of -inf, and -inf - -inf is nan. Nothing reads a static size, so
both work on dynamic shapes.
"""

from __future__ import annotations

import torch

from coreml_compile.compiler.ops import Op


def _select_band(c, x, lower: int, upper: int, *, inside: bool):
    """``x`` inside (or outside) the band (``lower``, ``upper``), zero elsewhere."""
    ones = c.mb.fill(shape=c.mb.shape(x=x, name=c.name + "_shape"), value=c.scalar(1.0))
    band = c.mb.band_part(x=ones, lower=lower, upper=upper, name=c.name + "_band")
    test = c.mb.not_equal if inside else c.mb.equal
    cond = test(x=band, y=c.scalar(0.0), name=c.name + "_keep")
    zero = False if c.mil_dtype_of(x) == "bool" else c.scalar(0, like=x)
    return c.mb.select(cond=cond, a=x, b=zero, name=c.name)


def _triangle(c, x, *, keep_above: bool, diagonal: int):
    if keep_above:  # keep j - i >= k
        inside = diagonal <= 0
        lower, upper = (-diagonal, -1) if inside else (-1, diagonal - 1)
    else:  # keep j - i <= k
        inside = diagonal >= 0
        lower, upper = (-1, diagonal) if inside else (-(diagonal + 1), -1)
    if inside and c.mil_dtype_of(x) in ("fp16", "fp32", "int32"):
        return c.mb.band_part(x=x, lower=lower, upper=upper, name=c.name)
    # band_part takes numbers only, and keeps the near-diagonal side: the other offsets
    # keep what lies outside the complementary band.
    return _select_band(c, x, lower, upper, inside=inside)


def _record(name: str, torch_fn, keep_above: bool, side: str) -> type[Op]:
    def kernel(x, *, diagonal):
        return torch_fn(x, diagonal)

    def lower(c, x, *, diagonal):
        return _triangle(c, x, keep_above=keep_above, diagonal=diagonal)

    attrs = {
        "__doc__": f"The {side} triangle of the last two dims: x[..., i, j] where "
        f"j - i {'>=' if keep_above else '<='} diagonal, else 0",
        "name": name,
        "dynamic": True,
        "inputs": ("x",),
        "attrs": {"diagonal": 0},
        "kernel": kernel,
        "lower": lower,
    }
    return type(name.title(), (Op,), attrs)


Triu = _record("triu", torch.triu, keep_above=True, side="upper")
Tril = _record("tril", torch.tril, keep_above=False, side="lower")
