"""Activations and softmax."""

from __future__ import annotations

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
    inputs = ("x",)
    attrs = {"alpha": 1.0, "scale": 1.0, "input_scale": 1.0}

    def kernel(x, *, alpha, scale, input_scale):
        return torch.ops.aten.elu(x, alpha, scale, input_scale)

    def lower(c, x, *, alpha, scale, input_scale):
        return c.mb.elu(x=x, alpha=c.scalar(alpha), name=c.name)

    def check(node, generation):
        if node.attrs["scale"] != 1.0 or node.attrs["input_scale"] != 1.0:
            return "elu with scale or input_scale other than 1 has no lowering"
        return None


class Softmax(Op):
    name = "softmax"
    inputs = ("x",)
    attrs = {"dim": -1}

    def kernel(x, *, dim):
        return torch.softmax(x, dim)

    def lower(c, x, *, dim):
        return c.mb.softmax(x=x, axis=dim, name=c.name)


class LogSoftmax(Op):
    """x - logsumexp(x), which stays finite where log(softmax(x)) would underflow."""

    name = "log_softmax"
    inputs = ("x",)
    attrs = {"dim": -1}

    def kernel(x, *, dim):
        return torch.log_softmax(x, dim)

    def lower(c, x, *, dim):
        lse = c.mb.reduce_log_sum_exp(x=x, axes=[dim], keep_dims=True, name=c.name + "_lse")
        return c.mb.sub(x=x, y=lse, name=c.name)
