"""Comparisons, logical ops, selection (where, masked_fill) and boolean reductions.

Their results are bool tensors inside a program. Core ML has no bool multiarrays at a
program's inputs and outputs: lowering (``lower._io_dtype``) passes bool inputs and
outputs as int32 0/1 arrays, cast to and from bool inside the program.

MIL's comparisons take fp16, fp32 or int32 operands and its logical ops only bools, so
operands are first cast to one common comparable dtype (``_comparable``) or to bool.
"""

from __future__ import annotations

import numpy as np
import torch

from coreml_compile.compiler.ops import Op
from coreml_compile.compiler.ops._helpers import normalize_axes


def _cast(c, var, dtype: str, i: int):
    """``var`` in MIL dtype ``dtype`` (a new constant for a constant)."""
    if c.mil_dtype_of(var) == dtype:
        return var
    if var.val is not None:
        from coreml_compile.compiler.mil import MIL_NUMPY

        return c.mb.const(
            val=np.asarray(var.val).astype(MIL_NUMPY[dtype]), name=f"{c.name}_in{i}_{dtype}"
        )
    return c.mb.cast(x=var, dtype=dtype, name=f"{c.name}_in{i}_{dtype}")


def _comparable(c, *vars):
    """Operands in one dtype MIL compares: the float compute dtype if any is a float,
    else int32 (bools and every integer width)."""
    kinds = [c.mil_dtype_of(v) for v in vars]
    target = c.precision if any(k.startswith("fp") for k in kinds) else "int32"
    return [_cast(c, v, target, i) for i, v in enumerate(vars)]


def _as_bool(c, var, i: int = 0):
    """Truth of ``var`` as torch takes it (nonzero is True), as a MIL bool."""
    if c.mil_dtype_of(var) == "bool":
        return var
    if var.val is not None:
        return c.mb.const(val=np.asarray(var.val) != 0, name=f"{c.name}_in{i}_bool")
    return c.mb.not_equal(x=var, y=c.scalar(0, like=var), name=f"{c.name}_in{i}_bool")


def _comparison(name: str, torch_fn, mil_op: str) -> type[Op]:
    def kernel(x, y):
        return torch_fn(x, y)

    def lower(c, x, y):
        x, y = _comparable(c, x, y)
        return getattr(c.mb, mil_op)(x=x, y=y, name=c.name)

    attrs = {
        "__doc__": f"{name}(x, y): element-wise comparison with broadcasting, a bool tensor",
        "name": name,
        "inputs": ("x", "y"),
        "kernel": kernel,
        "lower": lower,
        "dynamic": True,
        "elementwise": True,
    }
    return type(name.title(), (Op,), attrs)


_comparison("eq", torch.eq, "equal")
_comparison("ne", torch.ne, "not_equal")
_comparison("lt", torch.lt, "less")
_comparison("le", torch.le, "less_equal")
_comparison("gt", torch.gt, "greater")
_comparison("ge", torch.ge, "greater_equal")


def _logical(name: str, torch_fn, mil_op: str) -> type[Op]:
    def kernel(x, y):
        return torch_fn(x, y)

    def lower(c, x, y):
        return getattr(c.mb, mil_op)(x=_as_bool(c, x, 0), y=_as_bool(c, y, 1), name=c.name)

    attrs = {
        "__doc__": f"{name}(x, y): operands taken as truth values (nonzero), a bool tensor",
        "name": name,
        "inputs": ("x", "y"),
        "kernel": kernel,
        "lower": lower,
        "dynamic": True,
        "elementwise": True,
    }
    return type(name.title().replace("_", ""), (Op,), attrs)


_logical("logical_and", torch.logical_and, "logical_and")
_logical("logical_or", torch.logical_or, "logical_or")
_logical("logical_xor", torch.logical_xor, "logical_xor")


class Bucketize(Op):
    """torch.bucketize (and searchsorted into a 1-d sequence): for each x, how many
    ``boundaries`` lie below it (``right``, or searchsorted's ``side="right"``: below or
    at it). One comparison of x against every boundary, counted along a new last axis."""

    name = "bucketize"
    inputs = ("x", "boundaries")
    attrs = {"right": False, "out_int32": False, "side": None}
    dynamic = True

    def kernel(x, boundaries, *, right, out_int32, side):
        right = right or side == "right"
        return torch.bucketize(x, boundaries, out_int32=out_int32, right=right)

    def lower(c, x, boundaries, *, right, out_int32, side):
        right = right or side == "right"
        x, boundaries = _comparable(c, x, boundaries)
        column = c.mb.expand_dims(x=x, axes=[-1], name=c.name + "_column")
        test = c.mb.less_equal if right else c.mb.less
        below = test(x=boundaries, y=column, name=c.name + "_below")
        counts = c.mb.cast(x=below, dtype="int32", name=c.name + "_counts")
        return c.mb.reduce_sum(x=counts, axes=[-1], keep_dims=False, name=c.name)

    def check(node, generation):
        x, boundaries = node.inputs
        if boundaries.type.rank != 1:
            return "bucketize into boundaries that are not one sorted vector"
        if x.type.dtype == "bool" or boundaries.type.dtype == "bool":
            return "bucketize of bool tensors"
        if node.attrs["side"] not in (None, "left", "right"):
            return f"searchsorted side {node.attrs['side']!r}"
        return None


class LogicalNot(Op):
    """not x (x taken as a truth value), a bool tensor"""

    name = "logical_not"
    dynamic = True
    elementwise = True
    inputs = ("x",)

    def kernel(x):
        return torch.logical_not(x)

    def lower(c, x):
        return c.mb.logical_not(x=_as_bool(c, x), name=c.name)


class Where(Op):
    """x where cond, else y (torch.where; operands promoted to the output dtype)"""

    name = "where"
    dynamic = True
    elementwise = True
    inputs = ("cond", "x", "y")

    def kernel(cond, x, y):
        return torch.where(cond, x, y)

    def lower(c, cond, x, y):
        x, y = c.promote(x, y)
        cond = _as_bool(c, cond)
        if _widens(cond, x, y):
            # MIL's select types its result by a and b alone: where cond is the larger,
            # x is first broadcast to it (times ones: exact, keeps -0, inf and nan).
            everywhere = c.mb.logical_or(x=cond, y=True, name=c.name + "_everywhere")
            dtype = c.mil_dtype_of(x)
            if dtype == "bool":
                x = c.mb.logical_and(x=x, y=everywhere, name=c.name + "_x_wide")
            else:
                ones = c.mb.cast(x=everywhere, dtype=dtype, name=c.name + "_ones")
                x = c.mb.mul(x=x, y=ones, name=c.name + "_x_wide")
        return c.mb.select(cond=cond, a=x, b=y, name=c.name)


def _widens(cond, a, b) -> bool:
    """True if cond has an axis, or a size above 1, that neither a nor b has."""
    for i in range(1, cond.rank + 1):
        if cond.shape[-i] == 1:
            continue
        if all(v.rank < i or v.shape[-i] == 1 for v in (a, b)):
            return True
    return False


class MaskedFill(Op):
    """x with ``value`` where ``mask`` is True (value: a scalar, or a 0-dim tensor)"""

    name = "masked_fill"
    dynamic = True
    elementwise = True
    inputs = ("x", "mask", "value")

    def kernel(x, mask, value):
        return torch.masked_fill(x, mask, value)

    def lower(c, x, mask, value):
        (value,) = c.promote(value)
        return c.mb.select(cond=_as_bool(c, mask), a=value, b=x, name=c.name)

    def check(node, generation):
        if node.inputs[2].type.rank != 0:
            return "masked_fill needs a 0-dim value"
        return None


def _truth_reduction(name: str, torch_fn, mil_op: str) -> type[Op]:
    """all / any over ``dim`` (every axis when None or empty)."""

    def kernel(x, *, dim, keepdim):
        if dim is None or (isinstance(dim, list | tuple) and not dim):
            if keepdim:
                return torch_fn(x, dim=tuple(range(x.dim())), keepdim=True)
            return torch_fn(x)
        return torch_fn(
            x, dim=tuple(dim) if isinstance(dim, list | tuple) else dim, keepdim=keepdim
        )

    def lower(c, x, *, dim, keepdim):
        truth = c.mb.cast(x=_as_bool(c, x), dtype="int32", name=c.name + "_int")
        axes = normalize_axes(dim, x.rank) if x.rank else []
        want = c.mil_dtype(c.node.output.type.dtype)
        reduced_name = c.name if want == "int32" else c.name + "_reduced"
        if axes:
            reduced = getattr(c.mb, mil_op)(
                x=truth, axes=axes, keep_dims=keepdim, name=reduced_name
            )
        else:
            reduced = c.mb.identity(x=truth, name=reduced_name)
        if want == "int32":
            return reduced
        return c.mb.cast(x=reduced, dtype=want, name=c.name)

    attrs = {
        "__doc__": f"{name}(x) over ``dim``: truth values reduced as int32 {mil_op}, a bool "
        "tensor (uint8 for uint8 x, as in torch)",
        "name": name,
        "inputs": ("x",),
        "attrs": {"dim": None, "keepdim": False},
        "kernel": kernel,
        "lower": lower,
        "dynamic": True,
    }
    return type(name.title(), (Op,), attrs)


_truth_reduction("all", torch.all, "reduce_min")
_truth_reduction("any", torch.any, "reduce_max")


class Isnan(Op):
    """x != x: True where x is NaN (False for every integer)"""

    name = "isnan"
    dynamic = True
    elementwise = True
    inputs = ("x",)

    def kernel(x):
        return torch.isnan(x)

    def lower(c, x):
        if not c.mil_dtype_of(x).startswith("fp"):
            return _all_false(c, x)
        return c.mb.not_equal(x=x, y=x, name=c.name)


def _all_false(c, x):
    """False in x's shape (isinf and isnan of integers): a constant when the shape is
    static; x != x, false for every integer, when it is known only at run time."""
    if c.node.inputs[0].type.is_static:
        return c.mb.const(val=np.zeros(x.shape, dtype=bool), name=c.name)
    return c.mb.not_equal(x=x, y=x, name=c.name)


class Isinf(Op):
    """|x| == inf (False for every integer)"""

    name = "isinf"
    dynamic = True
    elementwise = True
    inputs = ("x",)

    def kernel(x):
        return torch.isinf(x)

    def lower(c, x):
        if not c.mil_dtype_of(x).startswith("fp"):
            return _all_false(c, x)
        magnitude = c.mb.abs(x=x, name=c.name + "_abs")
        return c.mb.equal(x=magnitude, y=c.scalar(float("inf"), like=x), name=c.name)
