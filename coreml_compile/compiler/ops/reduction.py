"""Reductions over several axes, with keepdim."""

from __future__ import annotations

import torch

from coreml_compile.compiler.ops import Op
from coreml_compile.compiler.ops._helpers import normalize_axes


def _reduction(name: str, torch_fn, mil_op: str) -> type[Op]:
    def kernel(x, *, dim, keepdim):
        axes = normalize_axes(dim, x.dim())
        return torch_fn(x, axes, keepdim) if axes else x

    def lower(c, x, *, dim, keepdim):
        axes = normalize_axes(dim, x.rank)
        return getattr(c.mb, mil_op)(x=x, axes=axes, keep_dims=keepdim, name=c.name)

    return type(
        name.title(),
        (Op,),
        {
            "__doc__": f"{name} over ``dim`` (all axes when empty), keeping them if ``keepdim``",
            "name": name,
            "inputs": ("x",),
            "attrs": {"dim": None, "keepdim": False},
            "kernel": kernel,
            "lower": lower,
        },
    )


_reduction("sum", torch.sum, "reduce_sum")
_reduction("mean", torch.mean, "reduce_mean")
_reduction("amax", torch.amax, "reduce_max")
_reduction("amin", torch.amin, "reduce_min")
