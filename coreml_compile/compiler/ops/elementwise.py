"""Element-wise arithmetic and math, casts and identities."""

from __future__ import annotations

import torch

from coreml_compile.compiler.ops import Op
from coreml_compile.compiler.ops._helpers import unary


class _Binary(Op):
    """Broadcasting binary op; both operands are cast to the output dtype for Core ML."""

    inputs = ("x", "y")


def _with_alpha(name: str, torch_fn, sign: str) -> type[Op]:
    """add/sub: ``x {sign} alpha * y``, as torch.add and torch.sub take it."""

    def kernel(x, y, *, alpha):
        return torch_fn(x, y, alpha=alpha) if alpha != 1 else torch_fn(x, y)

    def lower(c, x, y, *, alpha):
        x, y = c.promote(x, y)
        if alpha != 1:
            y = c.mb.mul(x=y, y=c.scalar(alpha, like=y), name=c.name + "_alpha")
        return getattr(c.mb, name)(x=x, y=y, name=c.name)

    doc = f"x {sign} alpha * y"
    attrs = {"__doc__": doc, "name": name, "attrs": {"alpha": 1}, "kernel": kernel, "lower": lower}
    return type(name.title(), (_Binary,), attrs)


_with_alpha("add", torch.add, "+")
_with_alpha("sub", torch.sub, "-")


class Mul(_Binary):
    name = "mul"

    def kernel(x, y):
        return torch.mul(x, y)

    def lower(c, x, y):
        x, y = c.promote(x, y)
        return c.mb.mul(x=x, y=y, name=c.name)


class Div(_Binary):
    """x / y; rounding_mode "trunc" or "floor" as in torch.div."""

    name = "div"
    attrs = {"rounding_mode": None}

    def kernel(x, y, *, rounding_mode):
        return torch.div(x, y, rounding_mode=rounding_mode)

    def lower(c, x, y, *, rounding_mode):
        x, y = c.promote(x, y)
        if rounding_mode == "floor":
            return c.mb.floor_div(x=x, y=y, name=c.name)
        if rounding_mode == "trunc":
            q = c.mb.real_div(x=x, y=y, name=c.name + "_q")
            # trunc(q) = sign(q) * floor(|q|)
            return c.mb.mul(
                x=c.mb.sign(x=q, name=c.name + "_sign"),
                y=c.mb.floor(x=c.mb.abs(x=q, name=c.name + "_abs"), name=c.name + "_floor"),
                name=c.name,
            )
        return c.mb.real_div(x=x, y=y, name=c.name)

    def check(node, generation):
        from coreml_compile.compiler import dtypes

        if node.attrs["rounding_mode"] == "trunc" and not dtypes.is_float(node.output.type.dtype):
            return "integer division with rounding_mode='trunc' has no lowering"
        return None


class Pow(_Binary):
    """x ** y (y a tensor or a scalar constant)"""

    name = "pow"

    def kernel(x, y):
        return torch.pow(x, y)

    def lower(c, x, y):
        x, y = c.promote(x, y)
        return c.mb.pow(x=x, y=y, name=c.name)


unary("sqrt", torch.sqrt, lambda c, x: c.mb.sqrt(x=x, name=c.name))
# MIL's rsqrt and log add an epsilon by default; torch's do not, so pass the smallest one
# MIL accepts for rsqrt and keep log's default (1e-45), which is below fp32's subnormals.
unary("rsqrt", torch.rsqrt, lambda c, x: c.mb.rsqrt(x=x, epsilon=c.scalar(1e-45), name=c.name))
unary("exp", torch.exp, lambda c, x: c.mb.exp(x=x, name=c.name))
unary("log", torch.log, lambda c, x: c.mb.log(x=x, name=c.name))
unary("neg", torch.neg, lambda c, x: c.mb.mul(x=x, y=c.scalar(-1, like=x), name=c.name))
unary("abs", torch.abs, lambda c, x: c.mb.abs(x=x, name=c.name))
unary("erf", torch.erf, lambda c, x: c.mb.erf(x=x, name=c.name))


class Clamp(Op):
    """min(max(x, min), max); either bound may be None."""

    name = "clamp"
    inputs = ("x",)
    attrs = {"min": None, "max": None}

    def kernel(x, *, min, max):
        return torch.clamp(x, min, max)

    def lower(c, x, *, min, max):
        if min is not None and max is not None:
            return c.mb.clip(
                x=x, alpha=c.scalar(min, like=x), beta=c.scalar(max, like=x), name=c.name
            )
        if min is not None:
            return c.mb.maximum(x=x, y=c.scalar(min, like=x), name=c.name)
        if max is not None:
            return c.mb.minimum(x=x, y=c.scalar(max, like=x), name=c.name)
        return c.mb.identity(x=x, name=c.name)


class Cast(Op):
    """x converted to ``dtype`` (an IR dtype name)."""

    name = "cast"
    inputs = ("x",)
    attrs = {"dtype": None}

    def kernel(x, *, dtype):
        from coreml_compile.compiler import dtypes

        return x if dtype is None else x.to(dtypes.to_torch(dtype))

    def lower(c, x, *, dtype):
        if dtype is None:
            return c.mb.identity(x=x, name=c.name)
        target = c.mil_dtype(dtype)
        if dtype == "float16" and target != "fp16":
            # An explicit cast to half rounds even when the model computes in fp32.
            half = c.mb.cast(x=x, dtype="fp16", name=c.name + "_half")
            return c.mb.cast(x=half, dtype=target, name=c.name)
        if target == c.mil_dtype_of(x):
            return c.mb.identity(x=x, name=c.name)
        return c.mb.cast(x=x, dtype=target, name=c.name)


class Identity(Op):
    """x itself (clone, contiguous, alias, detach): kept so the frontend only translates."""

    name = "identity"
    inputs = ("x",)

    def kernel(x):
        return x

    def lower(c, x):
        return c.mb.identity(x=x, name=c.name)


class Dropout(Op):
    """Dropout; in inference (train=False) it is the identity."""

    name = "dropout"
    inputs = ("x",)
    attrs = {"p": 0.5, "train": False}

    def kernel(x, *, p, train):
        return torch.dropout(x, p, train)

    def lower(c, x, *, p, train):
        return c.mb.identity(x=x, name=c.name)

    def check(node, generation):
        return "dropout in training mode" if node.attrs["train"] else None
