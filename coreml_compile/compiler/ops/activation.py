"""Activations and softmax."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from coreml_compile.compiler.ops import Op
from coreml_compile.compiler.ops._helpers import unary

unary("relu", torch.relu, lambda c, x: c.mb.relu(x=x, name=c.name))
unary("sigmoid", torch.sigmoid, lambda c, x: c.mb.sigmoid(x=x, name=c.name))
unary("tanh", torch.tanh, lambda c, x: c.mb.tanh(x=x, name=c.name))
unary("silu", F.silu, lambda c, x: c.mb.silu(x=x, name=c.name))
unary(
    "hardsigmoid",
    F.hardsigmoid,
    lambda c, x: c.mb.sigmoid_hard(
        x=x, alpha=c.scalar(1.0 / 6, like=x), beta=c.scalar(0.5, like=x), name=c.name
    ),
    doc="relu6(x + 3) / 6, which is MIL's sigmoid_hard with alpha 1/6, beta 1/2",
)
unary(
    "hardswish",
    F.hardswish,
    lambda c, x: c.mb.mul(
        x=x,
        y=c.mb.sigmoid_hard(
            x=x, alpha=c.scalar(1.0 / 6, like=x), beta=c.scalar(0.5, like=x), name=c.name + "_gate"
        ),
        name=c.name,
    ),
    doc="x * hardsigmoid(x); MIL has no single op for it",
)
unary(
    "gelu",
    lambda x, *, approximate: F.gelu(x, approximate=approximate),
    lambda c, x, *, approximate: c.mb.gelu(
        x=x, mode="TANH_APPROXIMATION" if approximate == "tanh" else "EXACT", name=c.name
    ),
    attrs={"approximate": "none"},
)
unary(
    "hardtanh",
    lambda x, *, min_val, max_val: F.hardtanh(x, min_val, max_val),
    lambda c, x, *, min_val, max_val: c.mb.clip(
        x=x, alpha=c.scalar(min_val), beta=c.scalar(max_val), name=c.name
    ),
    attrs={"min_val": -1.0, "max_val": 1.0},
    doc="clamp to [min_val, max_val]; relu6 is hardtanh(0, 6)",
)
unary(
    "leaky_relu",
    lambda x, *, negative_slope: F.leaky_relu(x, negative_slope),
    lambda c, x, *, negative_slope: c.mb.leaky_relu(
        x=x, alpha=c.scalar(negative_slope), name=c.name
    ),
    attrs={"negative_slope": 0.01},
)


class Elu(Op):
    """scale * (x if x > 0 else alpha * (exp(input_scale * x) - 1))"""

    name = "elu"
    dynamic = True
    elementwise = True
    inputs = ("x",)
    attrs = {"alpha": 1.0, "scale": 1.0, "input_scale": 1.0}

    def kernel(x, *, alpha, scale, input_scale):
        return torch.ops.aten.elu(x, alpha, scale, input_scale)

    def lower(c, x, *, alpha, scale, input_scale):
        if scale == 1.0 and input_scale == 1.0:
            return c.mb.elu(x=x, alpha=c.scalar(alpha), name=c.name)
        # celu (input_scale 1/alpha) and selu (scale): MIL's elu of input_scale * x is the
        # negative branch (input_scale > 0 keeps the sign), x itself the positive one.
        n = c.name
        scaled = x
        if input_scale != 1.0:
            scaled = c.mb.mul(x=x, y=c.scalar(input_scale, like=x), name=n + "_in")
        negative = c.mb.elu(x=scaled, alpha=c.scalar(alpha), name=n + "_elu")
        if input_scale != 1.0:
            positive = c.mb.greater(x=x, y=c.scalar(0, like=x), name=n + "_pos")
            negative = c.mb.select(
                cond=positive, a=x, b=negative, name=n if scale == 1.0 else n + "_sel"
            )
        if scale == 1.0:
            return negative
        return c.mb.mul(x=negative, y=c.scalar(scale, like=x), name=n)

    def check(node, generation):
        if node.attrs["input_scale"] <= 0:
            return "elu with input_scale <= 0 has no lowering"
        return None


class Softmax(Op):
    name = "softmax"
    dynamic = True
    inputs = ("x",)
    attrs = {"dim": -1}

    def kernel(x, *, dim):
        return torch.softmax(x, dim)

    def lower(c, x, *, dim):
        return c.mb.softmax(x=x, axis=dim, name=c.name)


class LogSoftmax(Op):
    """x - logsumexp(x), which stays finite where log(softmax(x)) would underflow."""

    name = "log_softmax"
    dynamic = True
    inputs = ("x",)
    attrs = {"dim": -1}

    def kernel(x, *, dim):
        return torch.log_softmax(x, dim)

    def lower(c, x, *, dim):
        lse = c.mb.reduce_log_sum_exp(x=x, axes=[dim], keep_dims=True, name=c.name + "_lse")
        return c.mb.sub(x=x, y=lse, name=c.name)


# -- Core ML coverage, part A: masked softmax and more activations ----------------------


class SafeSoftmax(Op):
    """softmax that gives 0 for rows (along ``dim``) that are all -inf (torch >= 2.5's
    attention softmax). Lowered as softmax, then 0 where the row's max is -inf."""

    name = "safe_softmax"
    dynamic = True
    inputs = ("x",)
    attrs = {"dim": -1}

    def kernel(x, *, dim):
        return torch.ops.aten._safe_softmax(x, dim)

    def lower(c, x, *, dim):
        n = c.name
        soft = c.mb.softmax(x=x, axis=dim, name=n + "_soft")
        row_max = c.mb.reduce_max(x=x, axes=[dim], keep_dims=True, name=n + "_max")
        masked = c.mb.equal(x=row_max, y=c.scalar(float("-inf"), like=x), name=n + "_masked")
        return c.mb.select(cond=masked, a=c.scalar(0, like=x), b=soft, name=n)


class Softplus(Op):
    """log(1 + exp(beta * x)) / beta, and x itself where beta * x > threshold"""

    name = "softplus"
    dynamic = True
    elementwise = True
    inputs = ("x",)
    attrs = {"beta": 1.0, "threshold": 20.0}

    def kernel(x, *, beta, threshold):
        return F.softplus(x, beta, threshold)

    def lower(c, x, *, beta, threshold):
        n = c.name
        scaled = x if beta == 1 else c.mb.mul(x=x, y=c.scalar(beta, like=x), name=n + "_beta")
        soft = c.mb.softplus(x=scaled, name=n + "_soft")
        if beta != 1:
            soft = c.mb.mul(x=soft, y=c.scalar(1.0 / beta, like=x), name=n + "_unscaled")
        linear = c.mb.greater(x=scaled, y=c.scalar(threshold, like=x), name=n + "_linear")
        return c.mb.select(cond=linear, a=x, b=soft, name=n)


unary(
    "mish",
    F.mish,
    lambda c, x: c.mb.mul(
        x=x,
        y=c.mb.tanh(x=c.mb.softplus(x=x, name=c.name + "_soft"), name=c.name + "_tanh"),
        name=c.name,
    ),
    doc="x * tanh(softplus(x)); MIL has no mish",
)
unary(
    "log_sigmoid",
    F.logsigmoid,
    lambda c, x: c.mb.mul(
        x=c.mb.softplus(
            x=c.mb.mul(x=x, y=c.scalar(-1, like=x), name=c.name + "_neg"), name=c.name + "_soft"
        ),
        y=c.scalar(-1, like=x),
        name=c.name,
    ),
    doc="log(sigmoid(x)) = -softplus(-x), finite where sigmoid underflows",
)


class Glu(Op):
    """a * sigmoid(b), where a and b are the two halves of x along ``dim``"""

    name = "glu"
    dynamic = True
    inputs = ("x",)
    attrs = {"dim": -1}

    def kernel(x, *, dim):
        return F.glu(x, dim)

    def lower(c, x, *, dim):
        a, b = c.mb.split(x=x, num_splits=2, axis=dim, name=c.name + "_halves")
        return c.mb.mul(x=a, y=c.mb.sigmoid(x=b, name=c.name + "_gate"), name=c.name)

    def check(node, generation):
        x = node.inputs[0].type
        if not isinstance(x.shape[node.attrs["dim"] % x.rank], int):
            return "glu along a dynamic dimension"
        return None


class Prelu(Op):
    """x where x >= 0, else weight * x; weight has 1 or C (= x.shape[1]) elements.

    A constant weight on a rank-3 to 5 input is MIL's prelu; otherwise a select.
    """

    name = "prelu"
    dynamic = True
    inputs = ("x", "weight")

    def kernel(x, weight):
        return F.prelu(x, weight)

    def lower(c, x, weight):
        (weight,) = c.promote(weight)
        rank = x.rank
        channels = x.shape[1] if rank >= 2 else 1
        if 3 <= rank <= 5 and weight.val is not None:
            alpha = np.array(np.broadcast_to(np.asarray(weight.val).reshape(-1), (channels,)))
            return c.mb.prelu(x=x, alpha=c.const_like(alpha, x), name=c.name)
        n = c.name
        if rank >= 2:
            weight = c.mb.reshape(x=weight, shape=[-1] + [1] * (rank - 2), name=n + "_w")
        scaled = c.mb.mul(x=x, y=weight, name=n + "_scaled")
        positive = c.mb.greater_equal(x=x, y=c.scalar(0, like=x), name=n + "_pos")
        return c.mb.select(cond=positive, a=x, b=scaled, name=n)

    def check(node, generation):
        x = node.inputs[0].type
        if x.rank >= 2 and not isinstance(x.shape[1], int):
            return "prelu over a dynamic channel dimension"
        return None
