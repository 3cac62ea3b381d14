"""Element-wise arithmetic and math, casts and identities."""

from __future__ import annotations

import numpy as np
import torch

from coreml_compile.compiler.ops import Op
from coreml_compile.compiler.ops._helpers import unary


class _Binary(Op):
    """Broadcasting binary op; both operands are cast to the output dtype for Core ML."""

    inputs = ("x", "y")
    # MIL's element-wise ops broadcast at run time: no sizes are baked in.
    dynamic = True
    elementwise = True


def _with_alpha(name: str, torch_fn, sign: str) -> type[Op]:
    """add/sub: ``x {sign} alpha * y``, as torch.add and torch.sub take it."""

    def kernel(x, y, *, alpha):
        return torch_fn(x, y, alpha=alpha) if alpha != 1 else torch_fn(x, y)

    def lower(c, x, y, *, alpha):
        x, y = c.promote(x, y)
        if name == "add" and c.mil_dtype_of(x) == "bool":
            # bool + bool is "or" in torch; MIL's add takes no bools.
            return c.mb.logical_or(x=x, y=y, name=c.name)
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
        if c.mil_dtype_of(x) == "bool":
            # bool * bool is "and" in torch; MIL's mul takes no bools.
            return c.mb.logical_and(x=x, y=y, name=c.name)
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
    dynamic = True
    elementwise = True
    inputs = ("x",)
    attrs = {"min": None, "max": None}

    def kernel(x, *, min, max):
        return torch.clamp(x, min, max)

    def lower(c, x, *, min, max):
        if min is not None and max is not None and c.mil_dtype_of(x).startswith("fp"):
            return c.mb.clip(
                x=x, alpha=c.scalar(min, like=x), beta=c.scalar(max, like=x), name=c.name
            )
        if min is not None and max is not None:  # integers: MIL's clip takes floats only
            low = c.mb.maximum(x=x, y=c.scalar(min, like=x), name=c.name + "_min")
            return c.mb.minimum(x=low, y=c.scalar(max, like=x), name=c.name)
        if min is not None:
            return c.mb.maximum(x=x, y=c.scalar(min, like=x), name=c.name)
        if max is not None:
            return c.mb.minimum(x=x, y=c.scalar(max, like=x), name=c.name)
        return c.mb.identity(x=x, name=c.name)


class Cast(Op):
    """x converted to ``dtype`` (an IR dtype name)."""

    name = "cast"
    dynamic = True
    elementwise = True
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
        from coreml_compile.compiler.mil import NARROW_INTS

        if dtype in NARROW_INTS and target == "int32":
            return _narrow_int(c, x, NARROW_INTS[dtype], signed=not dtype.startswith("u"))
        if target == c.mil_dtype_of(x):
            return c.mb.identity(x=x, name=c.name)
        return c.mb.cast(x=x, dtype=target, name=c.name)


def _narrow_int(c, x, bits: int, signed: bool):
    """x cast to a narrow integer before iOS17: int32 holding the values the narrow type
    would (torch wraps integers around it; floats are truncated first, as torch does)."""
    span = 2**bits
    whole = (
        x if c.mil_dtype_of(x) == "int32" else c.mb.cast(x=x, dtype="int32", name=c.name + "_int")
    )
    if not signed:
        return c.mb.mod(x=whole, y=np.int32(span), name=c.name)
    shifted = c.mb.add(x=whole, y=np.int32(span // 2), name=c.name + "_shifted")
    wrapped = c.mb.mod(x=shifted, y=np.int32(span), name=c.name + "_wrapped")
    return c.mb.sub(x=wrapped, y=np.int32(span // 2), name=c.name)


class Identity(Op):
    """x itself (clone, contiguous, alias, detach): kept so the frontend only translates."""

    name = "identity"
    dynamic = True
    elementwise = True
    inputs = ("x",)

    def kernel(x):
        return x

    def lower(c, x):
        return c.mb.identity(x=x, name=c.name)


class Dropout(Op):
    """Dropout; in inference (train=False) it is the identity."""

    name = "dropout"
    dynamic = True
    elementwise = True
    inputs = ("x",)
    attrs = {"p": 0.5, "train": False}

    def kernel(x, *, p, train):
        return torch.dropout(x, p, train)

    def nondeterministic(node):
        return bool(node.attrs["train"])

    def lower(c, x, *, p, train):
        return c.mb.identity(x=x, name=c.name)

    def check(node, generation):
        return "dropout in training mode" if node.attrs["train"] else None


# -- math: trigonometry, logarithms, rounding, remainders (Core ML coverage, part A) ----


def _float_unary(name: str, torch_fn, build, doc: str = "") -> type[Op]:
    """A one-input float op; integer inputs are cast to the (float) output dtype first."""

    def lower(c, x):
        (x,) = c.promote(x)
        return build(c, x)

    return unary(name, torch_fn, lower, doc=doc or f"{name}(x); integers compute as floats")


def _mil_unary(mil_op: str):
    return lambda c, x: getattr(c.mb, mil_op)(x=x, name=c.name)


for _name in ("sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "atanh"):
    _float_unary(_name, getattr(torch, _name), _mil_unary(_name))
_float_unary("exp2", torch.exp2, _mil_unary("exp2"))


def _asinh(c, x):
    # sign(x) * log(|x| + sqrt(x^2 + 1)): odd by construction, no cancellation for x < 0.
    n = c.name
    ax = c.mb.abs(x=x, name=n + "_abs")
    root = c.mb.sqrt(
        x=c.mb.add(x=c.mb.mul(x=x, y=x, name=n + "_sq"), y=c.scalar(1, like=x), name=n + "_sq1"),
        name=n + "_root",
    )
    log = c.mb.log(x=c.mb.add(x=ax, y=root, name=n + "_sum"), name=n + "_log")
    return c.mb.mul(x=c.mb.sign(x=x, name=n + "_sign"), y=log, name=n)


def _acosh(c, x):
    # log(x + sqrt((x - 1)(x + 1))): the product form keeps precision near x = 1.
    n = c.name
    one = c.scalar(1, like=x)
    prod = c.mb.mul(
        x=c.mb.sub(x=x, y=one, name=n + "_xm1"),
        y=c.mb.add(x=x, y=one, name=n + "_xp1"),
        name=n + "_prod",
    )
    root = c.mb.sqrt(x=prod, name=n + "_root")
    return c.mb.log(x=c.mb.add(x=x, y=root, name=n + "_sum"), name=n)


_float_unary("asinh", torch.asinh, _asinh, doc="asinh(x) = sign(x) log(|x| + sqrt(x^2 + 1))")
_float_unary("acosh", torch.acosh, _acosh, doc="acosh(x) = log(x + sqrt((x - 1)(x + 1)))")
_float_unary(
    "log1p",
    torch.log1p,
    lambda c, x: c.mb.log(x=c.mb.add(x=x, y=c.scalar(1, like=x), name=c.name + "_1p"), name=c.name),
    doc="log(1 + x); MIL has no log1p (exact to the float's step at 1, not relative for tiny x)",
)
_float_unary(
    "expm1",
    torch.expm1,
    lambda c, x: c.mb.sub(
        x=c.mb.exp(x=x, name=c.name + "_exp"), y=c.scalar(1, like=x), name=c.name
    ),
    doc="exp(x) - 1; MIL has no expm1",
)
_float_unary(
    "erfc",
    torch.erfc,
    lambda c, x: c.mb.sub(
        x=c.scalar(1, like=x), y=c.mb.erf(x=x, name=c.name + "_erf"), name=c.name
    ),
    doc="1 - erf(x); MIL has no erfc (exact to the float's step at 1, not relative for large x)",
)


def _log_base(base: float):
    return lambda c, x: c.mb.mul(
        x=c.mb.log(x=x, name=c.name + "_ln"), y=c.scalar(1.0 / np.log(base), like=x), name=c.name
    )


_float_unary("log2", torch.log2, _log_base(2.0), doc="log(x) / log(2)")
_float_unary("log10", torch.log10, _log_base(10.0), doc="log(x) / log(10)")
# real_div, not MIL's inverse: inverse adds an epsilon (1e-4 by default) to x.
_float_unary(
    "reciprocal",
    torch.reciprocal,
    lambda c, x: c.mb.real_div(x=c.scalar(1, like=x), y=x, name=c.name),
    doc="1 / x",
)
unary("sign", torch.sign, lambda c, x: c.mb.sign(x=x, name=c.name))
unary("square", torch.square, lambda c, x: c.mb.square(x=x, name=c.name))


def _rounding(mil_op: str | None):
    """floor/ceil/round/trunc: identities on integers; trunc is sign(x) * floor(|x|)."""

    def lower(c, x):
        if not c.mil_dtype_of(x).startswith("fp"):
            return c.mb.identity(x=x, name=c.name)
        if mil_op is not None:
            return getattr(c.mb, mil_op)(x=x, name=c.name)
        return c.mb.mul(
            x=c.mb.sign(x=x, name=c.name + "_sign"),
            y=c.mb.floor(x=c.mb.abs(x=x, name=c.name + "_abs"), name=c.name + "_floor"),
            name=c.name,
        )

    return lower


unary("floor", torch.floor, _rounding("floor"))
unary("ceil", torch.ceil, _rounding("ceil"))


class Round(Op):
    """round half to even (MIL's round does too); ``decimals`` rounds to that many
    decimal places as torch does: ``round(x * 10**d) / 10**d`` (``d < 0``:
    ``round(x / 10**-d) * 10**-d``)."""

    name = "round"
    inputs = ("x",)
    attrs = {"decimals": 0}
    # Element-wise: the MIL ops read no sizes.
    dynamic = True
    elementwise = True

    def kernel(x, *, decimals):
        # round.decimals has no integer kernel in torch; plain round is the identity there.
        return torch.round(x) if decimals == 0 else torch.round(x, decimals=decimals)

    def lower(c, x, *, decimals):
        if decimals == 0 or not c.mil_dtype_of(x).startswith("fp"):
            return _rounding("round")(c, x)
        n, mb = c.name, c.mb
        half = c.mil_dtype_of(x) == "fp16"
        if half:
            # torch scales half tensors in fp32 too, and 10**5 is already beyond fp16.
            x = mb.cast(x=x, dtype="fp32", name=n + "_fp32")
        scale = np.float32(10.0 ** abs(decimals))
        # The same operations as torch, in the same order, so ties round alike.
        if decimals > 0:
            scaled = mb.mul(x=x, y=scale, name=n + "_scaled")
            rounded = mb.round(x=scaled, name=n + "_rounded")
            out = mb.real_div(x=rounded, y=scale, name=n if not half else n + "_unscaled")
        else:
            scaled = mb.real_div(x=x, y=scale, name=n + "_scaled")
            rounded = mb.round(x=scaled, name=n + "_rounded")
            out = mb.mul(x=rounded, y=scale, name=n if not half else n + "_unscaled")
        return mb.cast(x=out, dtype="fp16", name=n) if half else out


unary("trunc", torch.trunc, _rounding(None), doc="round toward zero: sign(x) * floor(|x|)")


class Atan2(_Binary):
    """atan2(x, y): the angle of the point (y, x), in (-pi, pi]; atan2(0, 0) = 0.

    MIL has no atan2: atan(x / y), plus pi (times the sign of x) where y < 0.
    """

    name = "atan2"

    def kernel(x, y):
        return torch.atan2(x, y)

    def lower(c, x, y):
        x, y = c.promote(x, y)
        n, mb = c.name, c.mb
        zero = c.scalar(0, like=x)
        base = mb.atan(x=mb.real_div(x=x, y=y, name=n + "_q"), name=n + "_atan")
        half_turn = mb.select(
            cond=mb.greater_equal(x=x, y=zero, name=n + "_upper"),
            a=c.scalar(np.pi, like=x),
            b=c.scalar(-np.pi, like=x),
            name=n + "_pi",
        )
        turned = mb.add(x=base, y=half_turn, name=n + "_turned")
        left = mb.less(x=y, y=zero, name=n + "_left")
        angle = mb.select(cond=left, a=turned, b=base, name=n + "_angle")
        # 0 / 0 is NaN: the origin's angle is 0, as in torch.
        origin = mb.logical_and(
            x=mb.equal(x=x, y=zero, name=n + "_x0"),
            y=mb.equal(x=y, y=zero, name=n + "_y0"),
            name=n + "_origin",
        )
        return mb.select(cond=origin, a=zero, b=angle, name=n)


class Hypot(_Binary):
    """sqrt(x^2 + y^2), as big * sqrt(1 + (small / big)^2) with big = max(|x|, |y|).

    MIL has no hypot, and the plain form squares its inputs: in fp16 anything above 256
    would overflow to inf.
    """

    name = "hypot"

    def kernel(x, y):
        return torch.hypot(x, y)

    def lower(c, x, y):
        x, y = c.promote(x, y)
        n, mb = c.name, c.mb
        ax, ay = mb.abs(x=x, name=n + "_absx"), mb.abs(x=y, name=n + "_absy")
        big = mb.maximum(x=ax, y=ay, name=n + "_big")
        small = mb.minimum(x=ax, y=ay, name=n + "_small")
        # Equal magnitudes have ratio 1; saying so keeps 0/0 and inf/inf from giving NaN.
        ratio = mb.select(
            cond=mb.equal(x=small, y=big, name=n + "_same"),
            a=c.scalar(1, like=x),
            b=mb.real_div(x=small, y=big, name=n + "_q"),
            name=n + "_ratio",
        )
        one_plus = mb.add(
            x=mb.mul(x=ratio, y=ratio, name=n + "_sq"), y=c.scalar(1, like=x), name=n + "_1p"
        )
        return mb.mul(x=big, y=mb.sqrt(x=one_plus, name=n + "_root"), name=n)


class Remainder(_Binary):
    """x - floor(x / y) * y: the sign of y (Python's %), MIL's mod"""

    name = "remainder"

    def kernel(x, y):
        return torch.remainder(x, y)

    def lower(c, x, y):
        x, y = c.promote(x, y)
        return c.mb.mod(x=x, y=y, name=c.name)


class Fmod(_Binary):
    """x - trunc(x / y) * y: the sign of x (C's fmod), as sign(x) * mod(|x|, |y|)"""

    name = "fmod"

    def kernel(x, y):
        return torch.fmod(x, y)

    def lower(c, x, y):
        x, y = c.promote(x, y)
        n = c.name
        magnitude = c.mb.mod(
            x=c.mb.abs(x=x, name=n + "_absx"), y=c.mb.abs(x=y, name=n + "_absy"), name=n + "_mod"
        )
        return c.mb.mul(x=c.mb.sign(x=x, name=n + "_sign"), y=magnitude, name=n)


def _extremum(name: str, torch_fn) -> type[Op]:
    def kernel(x, y):
        return torch_fn(x, y)

    def lower(c, x, y):
        x, y = c.promote(x, y)
        return getattr(c.mb, name)(x=x, y=y, name=c.name)

    def check(node, generation):
        if node.output.type.dtype == "bool":
            return f"{name} of bool tensors has no lowering"
        return None

    doc = f"element-wise {name} of x and y, with broadcasting"
    attrs = {"__doc__": doc, "name": name, "kernel": kernel, "lower": lower, "check": check}
    return type(name.title(), (_Binary,), attrs)


_extremum("minimum", torch.minimum)
_extremum("maximum", torch.maximum)


class ClampTensor(Op):
    """min(max(x, min), max) with tensor bounds (broadcast); either may be absent."""

    name = "clamp_tensor"
    dynamic = True
    elementwise = True
    inputs = ("x", "min?", "max?")

    def kernel(x, min, max):
        return torch.clamp(x, min, max)

    def lower(c, x, min, max):
        present = [v for v in (x, min, max) if v is not None]
        promoted = iter(c.promote(*present))
        x = next(promoted)
        lo = next(promoted) if min is not None else None
        hi = next(promoted) if max is not None else None
        if lo is not None:
            x = c.mb.maximum(x=x, y=lo, name=c.name if hi is None else c.name + "_lo")
        if hi is not None:
            x = c.mb.minimum(x=x, y=hi, name=c.name)
        if lo is None and hi is None:
            x = c.mb.identity(x=x, name=c.name)
        return x
