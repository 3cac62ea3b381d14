"""Factories: tensors made from attributes alone (full, arange) or from another tensor's
shape only (full_like).

Their values never depend on the inputs' data, so constant folding turns them into
constants (``full_like`` is ``shape_only``); what survives to lowering (at -O0, or a
result too large to fold) is lowered as a MIL constant, or as MIL's ``fill`` when large.
"""

from __future__ import annotations

import numpy as np
import torch

from coreml_compile.compiler import dtypes
from coreml_compile.compiler.ops import Op


def _lower_as_constant(c, *inputs, **attrs):
    """The node's value, computed by its kernel, as one MIL constant."""
    from coreml_compile.compiler.mil import MIL_NUMPY
    from coreml_compile.compiler.ops import get_record

    node = c.node
    metas = [torch.empty(v.type.shape, dtype=dtypes.to_torch(v.type.dtype)) for v in node.inputs]
    (value,) = get_record(node.op).run(metas, attrs)
    mil = c.mil_dtype(node.output.type.dtype)
    array = value.numpy()
    if (
        mil == "int32"
        and array.size
        and (array.max() > np.iinfo(np.int32).max or array.min() < np.iinfo(np.int32).min)
    ):
        raise ValueError(f"{node.name}: values do not fit in int32")
    with np.errstate(over="ignore"):
        return c.mb.const(val=array.astype(MIL_NUMPY[mil]), name=c.name)


# Larger filled tensors are built by MIL's fill at run time instead of stored.
_STORED = 4096


def _lower_filled(c, *inputs, fill_value, **attrs):
    """A constant, or for a large or dynamic tensor, MIL's fill of the node's shape."""
    out = c.node.output.type
    if out.is_static and out.numel() <= _STORED:
        return _lower_as_constant(c, *inputs, fill_value=fill_value, **attrs)
    return _fill_output_shape(c, fill_value, c.name)


def _fill_output_shape(c, value: float | int, name: str):
    """MIL's fill of the node's output shape (dynamic sizes read at run time) with
    ``value`` in the output's dtype."""
    from coreml_compile.compiler.mil import MIL_NUMPY

    shape = c.sizes(c.node.output.type.shape)
    if isinstance(shape, list):
        shape = np.asarray(shape, dtype=np.int32)
    filled = MIL_NUMPY[c.mil_dtype(c.node.output.type.dtype)](value)
    return c.mb.fill(shape=shape, value=filled, name=name)


def _lower_arange(c, *, start, end, step, dtype):
    """A constant, or for a dynamic length, MIL's range_1d computed at run time."""
    out = c.node.output.type
    if out.is_static:
        return _lower_as_constant(c, start=start, end=end, step=step, dtype=dtype)
    from coreml_compile.compiler.mil import MIL_NUMPY

    mil = c.mil_dtype(out.dtype)
    if mil != "int32" or any(isinstance(v, float) for v in (start, end, step)):
        raise ValueError("a dynamic-length arange must count in integers")
    bounds = [c.size(v) for v in (start, end, step)]
    bounds = [b if not isinstance(b, int) else MIL_NUMPY["int32"](b) for b in bounds]
    return c.mb.range_1d(start=bounds[0], end=bounds[1], step=bounds[2], name=c.name)


def _dtype(dtype):
    return None if dtype is None else dtypes.to_torch(dtype)


class Full(Op):
    """A tensor of ``size`` filled with ``fill_value`` (zeros, ones, scalar_tensor: size [])"""

    name = "full"
    dynamic = True
    attrs = {"size": [], "fill_value": 0.0, "dtype": None}

    def kernel(*, size, fill_value, dtype):
        return torch.full(list(size), fill_value, dtype=_dtype(dtype))

    lower = _lower_filled


class FullLike(Op):
    """A tensor of x's shape filled with ``fill_value`` (zeros_like, ones_like); x's data is
    not read."""

    name = "full_like"
    dynamic = True
    inputs = ("x",)
    attrs = {"fill_value": 0.0, "dtype": None}
    shape_only = True

    def kernel(x, *, fill_value, dtype):
        return torch.full_like(x, fill_value, dtype=_dtype(dtype))

    lower = _lower_filled


class Fill(Op):
    """torch.fill: x's shape filled with ``value``, a scalar or a 0-d tensor (what an
    in-place ``mask[a:b] = count`` becomes once functionalised)."""

    name = "fill"
    dynamic = True
    inputs = ("x", "value")

    def kernel(x, value):
        return torch.fill(x, value)

    def lower(c, x, value):
        if value.val is not None:
            return _fill_output_shape(c, np.asarray(value.val).item(), c.name)
        out = c.mil_dtype(c.node.output.type.dtype)
        if c.mil_dtype_of(value) != out:
            value = c.mb.cast(x=value, dtype=out, name=c.name + "_value")
        zeros = _fill_output_shape(c, 0, c.name + "_zeros")
        return c.mb.add(x=zeros, y=value, name=c.name)


class Arange(Op):
    """[start, start + step, ...) below ``end`` (above it for a negative step)"""

    name = "arange"
    dynamic = True
    attrs = {"start": 0, "end": 0, "step": 1, "dtype": None}

    def kernel(*, start, end, step, dtype):
        return torch.arange(start, end, step, dtype=_dtype(dtype))

    lower = _lower_arange
