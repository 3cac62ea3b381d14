"""Which IR op each ONNX op becomes: one line per op, beside the ATen table.

An entry is a function ``(ctx, node) -> [Value, ...]`` that adds the node's IR nodes and
returns one value per ONNX output (``None`` for an output nobody reads and the IR does not
make). Most entries are made by small factories (:func:`same` for ops whose record takes
the same inputs, :func:`unary` with attribute renames); the translations are written out
where ONNX semantics differ from the record's (Gemm's transposes, Conv's auto_pad and
asymmetric pads, Resize's modes and coordinate transforms, Pad's input/attribute forms and
modes, Slice's steps and negative axes, Split's sizes as attribute or input...).

An entry raises :class:`NotMapped` for a node it does not model (a mode the record lacks,
a dynamic size); the frontend then keeps the node as an ``onnx`` fallback node.

The context ``ctx`` (see ``onnx_import._Context``) gives an entry the node's input values
(``ctx.input(i)``, ``None`` when absent), their constant data where known
(``ctx.const(i)``), and adds IR nodes (``ctx.add(op, inputs, **attrs)`` -> first output,
``ctx.add_multi`` -> all outputs) and constants (``ctx.constant(array)``).

Semantics follow the ONNX operator documentation; opsets 7 onwards are read (attribute and
input forms both), older models are upgraded by the importer first.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from coreml_compile.compiler import dtypes

Translation = Callable[[Any, Any], list[Any]]


class NotMapped(Exception):
    """This node is not one the table models; it falls back (the message says why)."""


# -- factories ---------------------------------------------------------------------------


def same(op: str, **fixed: Any) -> Translation:
    """The record takes the ONNX inputs in order (absent trailing ones dropped)."""

    def translate(ctx, node):
        return [ctx.add(op, ctx.inputs(), **fixed)]

    translate.__doc__ = f"-> {op}"
    return translate


def unary(op: str, **renames: tuple[str, Any]) -> Translation:
    """One input; record attribute ``k`` reads ONNX attribute ``renames[k] = (name, default)``."""

    def translate(ctx, node):
        attrs = {k: node.attr(name, default) for k, (name, default) in renames.items()}
        return [ctx.add(op, [ctx.input(0)], **attrs)]

    translate.__doc__ = f"-> {op}"
    return translate


def variadic(op: str) -> Translation:
    """Sum/Max/Min/Mean: a chain of binary records over the inputs."""

    def translate(ctx, node):
        values = ctx.inputs()
        out = values[0]
        if len(values) == 1:
            return [ctx.add("identity", [out])]
        for v in values[1:]:
            out = ctx.add(op, [out, v])
        return [out]

    return translate


# -- helpers -----------------------------------------------------------------------------


def _axes(ctx, node, index: int, attr: str = "axes") -> list[int] | None:
    """Axes from the attribute (older opsets) or the constant input ``index`` (newer)."""
    if node.has(attr):
        return [int(a) for a in node.attr(attr)]
    if ctx.input(index) is None:
        return None
    data = ctx.const(index)
    if data is None:
        raise NotMapped(f"{attr} are computed at run time")
    return [int(a) for a in np.asarray(data).reshape(-1)]


def _ints(ctx, index: int, what: str) -> list[int] | None:
    if ctx.input(index) is None:
        return None
    data = ctx.const(index)
    if data is None:
        raise NotMapped(f"{what} is computed at run time")
    return [int(a) for a in np.asarray(data).reshape(-1)]


def _scalar(ctx, index: int, what: str) -> Any:
    if ctx.input(index) is None:
        return None
    data = ctx.const(index)
    if data is None:
        raise NotMapped(f"{what} is computed at run time")
    return np.asarray(data).reshape(-1)[0].item()


def _shape(v) -> list[int]:
    return list(v.type.shape)


def _same_pads(in_sizes, kernel, strides, dilations, mode: str) -> list[int]:
    """auto_pad SAME_UPPER / SAME_LOWER as explicit ONNX pads [begin..., end...]."""
    begins, ends = [], []
    for size, k, s, d in zip(in_sizes, kernel, strides, dilations, strict=True):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        small, big = total // 2, total - total // 2
        begins.append(small if mode == "SAME_UPPER" else big)
        ends.append(big if mode == "SAME_UPPER" else small)
    return begins + ends


def _window(ctx, node, x, kernel) -> tuple[list[int], list[int], list[int]]:
    """strides, dilations and ONNX pads [begin..., end...] of a conv or pooling node."""
    n = len(kernel)
    strides = list(node.attr("strides", [1] * n))
    dilations = list(node.attr("dilations", [1] * n))
    auto_pad = node.attr("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = _same_pads(_shape(x)[2:], kernel, strides, dilations, auto_pad)
    elif auto_pad == "VALID":
        pads = [0] * (2 * n)
    else:
        pads = list(node.attr("pads", [0] * (2 * n)))
    return strides, dilations, pads


def _torch_pad(begins: list[int], ends: list[int]) -> list[int]:
    """Per-axis (begin, end) for trailing axes -> torch's pad list (last axis first)."""
    out = []
    for b, e in reversed(list(zip(begins, ends, strict=True))):
        out += [int(b), int(e)]
    return out


def _split_pads(ctx, x, pads, value):
    """Symmetric pads go to the record; what is asymmetric becomes a pad node first."""
    n = len(pads) // 2
    begins, ends = pads[:n], pads[n:]
    if begins == ends:
        return x, begins
    common = [min(b, e) for b, e in zip(begins, ends, strict=True)]
    extra_b = [b - c for b, c in zip(begins, common, strict=True)]
    extra_e = [e - c for e, c in zip(ends, common, strict=True)]
    x = ctx.add("pad", [x], pad=_torch_pad(extra_b, extra_e), mode="constant", value=value)
    return x, common


# -- matrix products and convolutions ------------------------------------------------------


def gemm(ctx, node):
    """Y = alpha * A' @ B' + beta * C: linear when B is constant (the usual layer)."""
    a, b, c = ctx.input(0), ctx.input(1), ctx.input(2)
    alpha, beta = node.attr("alpha", 1.0), node.attr("beta", 1.0)
    if node.attr("transA", 0):
        a = ctx.add("transpose", [a], dim0=0, dim1=1)
    w = ctx.const(1)
    bias_data = ctx.const(2) if c is not None else None
    if w is not None and (c is None or bias_data is not None):
        weight = w if node.attr("transB", 0) else w.T
        weight = np.ascontiguousarray(weight * np.asarray(alpha, weight.dtype))
        bias = None
        if c is not None:
            full = np.broadcast_to(
                bias_data * np.asarray(beta, bias_data.dtype), (weight.shape[0],)
            )
            if bias_data.ndim <= 1 or bias_data.shape[0] == 1:
                bias = ctx.constant(np.ascontiguousarray(full).astype(weight.dtype))
        out = ctx.add("linear", [a, ctx.constant(weight), bias])
        if c is not None and bias is None:
            out = ctx.add("add", [out, ctx.constant(bias_data * np.asarray(beta, bias_data.dtype))])
        return [out]
    if node.attr("transB", 0):
        b = ctx.add("transpose", [b], dim0=0, dim1=1)
    out = ctx.add("matmul", [a, b])
    if alpha != 1.0:
        out = ctx.add("mul", [out, ctx.scalar(alpha, out)])
    if c is not None:
        if beta != 1.0:
            c = ctx.add("mul", [c, ctx.scalar(beta, c)])
        out = ctx.add("add", [out, c])
    return [out]


def conv(ctx, node):
    x, w, b = ctx.input(0), ctx.input(1), ctx.input(2)
    kernel = list(node.attr("kernel_shape", _shape(w)[2:]))
    strides, dilations, pads = _window(ctx, node, x, kernel)
    n = len(pads) // 2
    if pads[:n] == pads[n:]:
        padding = pads[:n]
    else:  # the conv record takes padding per side: [before0, after0, before1, ...]
        padding = [p for i in range(n) for p in (pads[i], pads[n + i])]
    return [
        ctx.add(
            "conv", [x, w, b], stride=strides, padding=padding, dilation=dilations,
            groups=node.attr("group", 1),
        )
    ]  # fmt: skip


def conv_transpose(ctx, node):
    x, w, b = ctx.input(0), ctx.input(1), ctx.input(2)
    kernel = list(node.attr("kernel_shape", _shape(w)[2:]))
    n = len(kernel)
    strides = list(node.attr("strides", [1] * n))
    dilations = list(node.attr("dilations", [1] * n))
    output_padding = list(node.attr("output_padding", [0] * n))
    auto_pad = node.attr("auto_pad", "NOTSET")
    in_sizes = _shape(x)[2:]
    full = [
        s * (i - 1) + op + (k - 1) * d + 1
        for i, s, op, k, d in zip(in_sizes, strides, output_padding, kernel, dilations, strict=True)
    ]
    if node.has("output_shape") or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        target = (
            list(node.attr("output_shape"))[-n:]
            if node.has("output_shape")
            else [i * s for i, s in zip(in_sizes, strides, strict=True)]
        )
        totals = [f - t for f, t in zip(full, target, strict=True)]
        if any(t < 0 for t in totals):
            raise NotMapped("ConvTranspose output_shape larger than the full output")
        upper = auto_pad != "SAME_LOWER"
        begins = [t // 2 if upper else t - t // 2 for t in totals]
        ends = [t - bb for t, bb in zip(totals, begins, strict=True)]
    elif auto_pad == "VALID":
        begins, ends = [0] * n, [0] * n
    else:
        pads = list(node.attr("pads", [0] * (2 * n)))
        begins, ends = pads[:n], pads[n:]
    # Core ML and torch crop the same amount on both sides; extra end crop is a slice.
    common = [min(bb, e) for bb, e in zip(begins, ends, strict=True)]
    out = ctx.add(
        "conv_transpose", [x, w, b], stride=strides, padding=common,
        output_padding=output_padding, groups=node.attr("group", 1), dilation=dilations,
    )  # fmt: skip
    for axis, (bb, e, c) in enumerate(zip(begins, ends, common, strict=True)):
        if bb != c or e != c:
            size = _shape(out)[2 + axis]
            out = ctx.add("slice", [out], dim=2 + axis, start=bb - c, end=size - (e - c), step=1)
    return [out]


def matmul(ctx, node):
    return [ctx.add("matmul", [ctx.input(0), ctx.input(1)])]


# -- pooling -----------------------------------------------------------------------------


def _pool(kind: str):
    def translate(ctx, node):
        x = ctx.input(0)
        if x.type.rank != 4:
            raise NotMapped(f"{node.op_type} on a rank-{x.type.rank} tensor (2-d only)")
        if node.used(1):
            raise NotMapped("MaxPool's Indices output")
        kernel = list(node.attr("kernel_shape"))
        strides, dilations, pads = _window(ctx, node, x, kernel)
        ceil_mode = bool(node.attr("ceil_mode", 0))
        if kind == "max":
            if node.attr("storage_order", 0):
                raise NotMapped("MaxPool storage_order=1")
            x, padding = _split_pads(ctx, x, pads, -math.inf)
            return [
                ctx.add(
                    "max_pool2d", [x], kernel_size=kernel, stride=strides, padding=padding,
                    dilation=dilations, ceil_mode=ceil_mode,
                )
            ]  # fmt: skip
        if any(d != 1 for d in dilations):
            raise NotMapped("dilated AveragePool")
        include = bool(node.attr("count_include_pad", 0))
        n = len(kernel)
        if pads[:n] != pads[n:] and not include:
            # Padding left out of the average, asymmetric: the window sums over x padded
            # with zeros, divided by the (constant) count of real elements in each window.
            import torch
            import torch.nn.functional as F

            if ceil_mode:
                raise NotMapped("AveragePool with ceil_mode and asymmetric excluded pads")
            padded = ctx.add("pad", [x], pad=_torch_pad(pads[:n], pads[n:]), mode="constant")
            pooled = ctx.add(
                "avg_pool2d", [padded], kernel_size=kernel, stride=strides, padding=[0, 0]
            )
            ones = F.pad(torch.ones(1, 1, *_shape(x)[2:]), _torch_pad(pads[:n], pads[n:]))
            share = F.avg_pool2d(ones, kernel, strides)  # real elements / window size
            scale = (1.0 / share).numpy().astype(dtypes.NUMPY[x.type.dtype])
            return [ctx.add("mul", [pooled, ctx.constant(scale)])]
        if pads[:n] != pads[n:]:
            x, padding = _split_pads(ctx, x, pads, 0.0)
        else:
            padding = pads[:n]
        if any(2 * p > k for p, k in zip(padding, kernel, strict=True)):
            raise NotMapped("AveragePool padding over half the kernel")
        return [
            ctx.add(
                "avg_pool2d", [x], kernel_size=kernel, stride=strides, padding=padding,
                ceil_mode=ceil_mode, count_include_pad=include,
            )
        ]  # fmt: skip

    return translate


def _global_pool(op: str):
    def translate(ctx, node):
        x = ctx.input(0)
        return [ctx.add(op, [x], dim=list(range(2, x.type.rank)), keepdim=True)]

    return translate


# -- normalisation -------------------------------------------------------------------------


def batch_norm(ctx, node):
    if node.attr("training_mode", 0) or node.used(1, 2):
        raise NotMapped("BatchNormalization in training mode")
    x, scale, bias, mean, var = (ctx.input(i) for i in range(5))
    eps = node.attr("epsilon", 1e-5)
    if all(ctx.const(i) is not None for i in range(1, 5)):
        return [ctx.add("batch_norm", [x, scale, bias, mean, var], eps=eps)]
    # Statistics computed at run time: the same arithmetic, per channel (axis 1).
    lift = [-1] + [1] * (x.type.rank - 2)
    scale, bias, mean, var = (ctx.add("reshape", [v], shape=lift) for v in (scale, bias, mean, var))
    std = ctx.add("sqrt", [ctx.add("add", [var, ctx.scalar(eps, var)])])
    y = ctx.add("div", [ctx.add("sub", [x, mean]), std])
    return [ctx.add("add", [ctx.add("mul", [y, scale]), bias])]


def lrn(ctx, node):
    """x / (bias + alpha/size * sum of x^2 over ``size`` neighbouring channels)^beta."""
    x = ctx.input(0)
    size = int(node.attr("size"))
    alpha, beta, bias = node.attr("alpha", 1e-4), node.attr("beta", 0.75), node.attr("bias", 1.0)
    if x.type.rank != 4:
        raise NotMapped(f"LRN on a rank-{x.type.rank} tensor")
    n, c, h, w = _shape(x)
    sq = ctx.add("square", [x])
    sq = ctx.add("reshape", [sq], shape=[n, 1, c, h * w])
    before, after = (size - 1) // 2, size - 1 - (size - 1) // 2
    sq = ctx.add("pad", [sq], pad=[0, 0, before, after], mode="constant", value=0.0)
    avg = ctx.add("avg_pool2d", [sq], kernel_size=[size, 1], stride=[1, 1], padding=[0, 0])
    avg = ctx.add("reshape", [avg], shape=[n, c, h, w])
    den = ctx.add("mul", [avg, ctx.scalar(alpha, x)])
    den = ctx.add("add", [den, ctx.scalar(bias, x)])
    den = ctx.add("pow", [den, ctx.scalar(beta, x)])
    return [ctx.add("div", [x, den])]


def mean_variance_norm(ctx, node):
    """(x - E[x]) / (sqrt(E[x^2] - E[x]^2) + 1e-9) over ``axes``, as ONNX's function body
    computes it (the variance as a difference of means, the epsilon after the root)."""
    x = ctx.input(0)
    axes = [int(a) for a in node.attr("axes", [0, 2, 3])]
    mean = ctx.add("mean", [x], dim=axes, keepdim=True)
    mean_of_squares = ctx.add("mean", [ctx.add("square", [x])], dim=axes, keepdim=True)
    variance = ctx.add("sub", [mean_of_squares, ctx.add("square", [mean])])
    std = ctx.add("add", [ctx.add("sqrt", [variance]), ctx.scalar(1e-9, x)])
    return [ctx.add("div", [ctx.add("sub", [x, mean]), std])]


def instance_norm(ctx, node):
    return [
        ctx.add(
            "instance_norm", [ctx.input(0), ctx.input(1), ctx.input(2)],
            eps=node.attr("epsilon", 1e-5),
        )
    ]  # fmt: skip


def layer_norm(ctx, node):
    if node.used(1, 2):
        raise NotMapped("LayerNormalization's Mean/InvStdDev outputs")
    x = ctx.input(0)
    axis = node.attr("axis", -1) % x.type.rank
    return [
        ctx.add(
            "layer_norm", [x, ctx.input(1), ctx.input(2)],
            normalized_shape=_shape(x)[axis:], eps=node.attr("epsilon", 1e-5),
        )
    ]  # fmt: skip


def group_norm(ctx, node):
    if node.opset < 21:
        raise NotMapped("GroupNormalization before opset 21 (per-group scale)")
    return [
        ctx.add(
            "group_norm", [ctx.input(0), ctx.input(1), ctx.input(2)],
            num_groups=node.attr("num_groups"), eps=node.attr("epsilon", 1e-5),
        )
    ]  # fmt: skip


# -- activations ---------------------------------------------------------------------------


def _softmax(op: str):
    def translate(ctx, node):
        x = ctx.input(0)
        rank = x.type.rank
        default = -1 if node.opset >= 13 else 1
        axis = node.attr("axis", default) % max(rank, 1)
        if node.opset >= 13 or axis == rank - 1:
            return [ctx.add(op, [x], dim=axis)]
        # Before opset 13: over the input flattened to 2-d at ``axis``.
        shape = _shape(x)
        flat = ctx.add("reshape", [x], shape=[math.prod(shape[:axis]), math.prod(shape[axis:])])
        return [ctx.add("reshape", [ctx.add(op, [flat], dim=1)], shape=shape)]

    return translate


def hard_sigmoid(ctx, node):
    alpha, beta = node.attr("alpha", 0.2), node.attr("beta", 0.5)
    x = ctx.input(0)
    if math.isclose(alpha, 1 / 6, rel_tol=1e-6) and beta == 0.5:
        return [ctx.add("hardsigmoid", [x])]
    y = ctx.add("add", [ctx.add("mul", [x, ctx.scalar(alpha, x)]), ctx.scalar(beta, x)])
    return [ctx.add("clamp", [y], min=0.0, max=1.0)]


def selu(ctx, node):
    alpha = node.attr("alpha", 1.67326319217681884765625)
    gamma = node.attr("gamma", 1.05070102214813232421875)
    return [ctx.add("elu", [ctx.input(0)], alpha=alpha, scale=gamma, input_scale=1.0)]


def prelu(ctx, node):
    x, slope = ctx.input(0), ctx.input(1)
    data = ctx.const(1)
    if data is not None and data.size == 1:
        return [ctx.add("leaky_relu", [x], negative_slope=float(data.reshape(-1)[0]))]
    rank = x.type.rank
    if data is not None and rank >= 2:
        channels = _shape(x)[1]
        # A slope that varies along the channel axis only is torch's prelu weight.
        lifted = data.reshape((1,) * (rank - data.ndim) + data.shape)
        if lifted.shape[1] == channels and all(
            d == 1 for i, d in enumerate(lifted.shape) if i != 1
        ):
            return [ctx.add("prelu", [x, ctx.constant(np.ascontiguousarray(lifted.reshape(-1)))])]
    negative = ctx.add("mul", [x, slope])
    return [ctx.add("where", [ctx.add("lt", [x, ctx.scalar(0, x)]), negative, x])]


def clip(ctx, node):
    x = ctx.input(0)
    if node.opset < 11:
        lo, hi = node.attr("min", None), node.attr("max", None)
    else:
        if (ctx.input(1) is not None and ctx.const(1) is None) or (
            ctx.input(2) is not None and ctx.const(2) is None
        ):
            return [ctx.add("clamp_tensor", [x, ctx.input(1), ctx.input(2)])]
        lo, hi = _scalar(ctx, 1, "min"), _scalar(ctx, 2, "max")
    if lo is None and hi is None:
        return [ctx.add("identity", [x])]
    return [ctx.add("clamp", [x], min=lo, max=hi)]


def gelu(ctx, node):
    return [ctx.add("gelu", [ctx.input(0)], approximate=node.attr("approximate", "none"))]


def thresholded_relu(ctx, node):
    x = ctx.input(0)
    keep = ctx.add("gt", [x, ctx.scalar(node.attr("alpha", 1.0), x)])
    return [ctx.add("where", [keep, x, ctx.scalar(0.0, x)])]


def softsign(ctx, node):
    x = ctx.input(0)
    den = ctx.add("add", [ctx.add("abs", [x]), ctx.scalar(1.0, x)])
    return [ctx.add("div", [x, den])]


def celu(ctx, node):
    alpha = node.attr("alpha", 1.0)
    return [ctx.add("elu", [ctx.input(0)], alpha=alpha, scale=1.0, input_scale=1.0 / alpha)]


# -- element-wise --------------------------------------------------------------------------


def div(ctx, node):
    x, y = ctx.input(0), ctx.input(1)
    mode = None if x.type.dtype.startswith("float") else "trunc"
    return [ctx.add("div", [x, y], rounding_mode=mode)]


def mod(ctx, node):
    op = "fmod" if node.attr("fmod", 0) else "remainder"
    return [ctx.add(op, [ctx.input(0), ctx.input(1)])]


def mean_of(ctx, node):
    (out,) = variadic("add")(ctx, node)
    return [ctx.add("div", [out, ctx.scalar(len(ctx.inputs()), out)])]


def _cast_to(ctx, to: str):
    """Input 0 cast to ONNX type ``to`` (numpy name), in the IR dtype that holds it."""
    if to in ROUNDED and ctx.onnx_type(0) != to:
        # Rounding to bfloat16/float8/float4 has no Core ML op (held in float32 after).
        raise NotMapped(f"rounding to {to} runs in onnx.reference")
    return [ctx.add("cast", [ctx.input(0)], dtype=dtypes.held(to))]


def cast(ctx, node):
    return _cast_to(ctx, onnx_dtype(node.attr("to")))


def cast_like(ctx, node):
    """Cast to the element type of input 1 (whose values are not read)."""
    to = ctx.onnx_type(1)
    if to is None:
        raise NotMapped("CastLike to an element type ONNX does not say")
    return _cast_to(ctx, to)


# -- shapes and data movement ----------------------------------------------------------------


def reshape(ctx, node):
    x = ctx.input(0)
    target = _ints(ctx, 1, "the Reshape shape")
    if not node.attr("allowzero", 0):
        target = [_shape(x)[i] if d == 0 else d for i, d in enumerate(target)]
    return [ctx.add("reshape", [x], shape=list(target))]


def flatten(ctx, node):
    x = ctx.input(0)
    shape = _shape(x)
    axis = node.attr("axis", 1) % (len(shape) + 1) if shape else 0
    return [ctx.add("reshape", [x], shape=[math.prod(shape[:axis]), math.prod(shape[axis:])])]


def transpose(ctx, node):
    x = ctx.input(0)
    perm = node.attr("perm", list(range(x.type.rank))[::-1])
    return [ctx.add("permute", [x], dims=list(perm))]


def squeeze(ctx, node):
    x = ctx.input(0)
    axes = _axes(ctx, node, 1)
    shape = _shape(x)
    keep = (
        [d for d in shape if d != 1]
        if axes is None
        else [d for i, d in enumerate(shape) if i not in {a % len(shape) for a in axes}]
    )
    return [ctx.add("reshape", [x], shape=keep)]


def unsqueeze(ctx, node):
    x = ctx.input(0)
    axes = _axes(ctx, node, 1)
    rank = x.type.rank + len(axes)
    positions = {a % rank for a in axes}
    dims = iter(_shape(x))
    return [
        ctx.add("reshape", [x], shape=[1 if i in positions else next(dims) for i in range(rank)])
    ]


def concat(ctx, node):
    values = [v for v in ctx.inputs() if 0 not in v.type.shape] or ctx.inputs()[:1]
    return [ctx.add("cat", values, dim=node.attr("axis"))]


def split(ctx, node):
    x = ctx.input(0)
    axis = node.attr("axis", 0) % x.type.rank
    size = _shape(x)[axis]
    if node.has("split"):
        sizes = list(node.attr("split"))
    elif ctx.input(1) is not None:
        sizes = _ints(ctx, 1, "the Split sizes")
    else:
        n = node.attr("num_outputs", len(node.outputs))
        step = -(-size // n)
        sizes = [min(step, size - i * step) for i in range(n)]
    return ctx.add_multi("split", [x], split_size=sizes, dim=axis)


def slice_(ctx, node):
    x = ctx.input(0)
    if node.opset < 10:
        starts, ends = list(node.attr("starts")), list(node.attr("ends"))
        axes = list(node.attr("axes", range(len(starts))))
        steps = [1] * len(starts)
    else:
        starts, ends = _ints(ctx, 1, "starts"), _ints(ctx, 2, "ends")
        axes = _ints(ctx, 3, "axes") or list(range(len(starts)))
        steps = _ints(ctx, 4, "steps") or [1] * len(starts)
    out = x
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        axis %= x.type.rank
        size = _shape(out)[axis]
        picked = range(size)[slice(start, end, step)]
        if len(picked) == 0:
            raise NotMapped("Slice to an empty tensor")
        if step < 0:
            out = ctx.add("flip", [out], dims=[axis])
            first, last, step = size - 1 - picked[0], size - 1 - picked[-1], -step
        else:
            first, last = picked[0], picked[-1]
        if (first, last, step) != (0, size - 1, 1):
            out = ctx.add("slice", [out], dim=axis, start=first, end=last + 1, step=step)
    return [out if out is not x else ctx.add("identity", [x])]


def pad(ctx, node):
    x = ctx.input(0)
    rank = x.type.rank
    if node.opset < 11:
        pads, value = list(node.attr("pads")), node.attr("value", 0.0)
    else:
        pads = _ints(ctx, 1, "the pads")
        value = _scalar(ctx, 2, "the pad value") or 0.0
    axes = _ints(ctx, 3, "the pad axes") if node.opset >= 18 else None
    axes = [a % rank for a in axes] if axes else list(range(rank))
    begins, ends = [0] * rank, [0] * rank
    for i, a in enumerate(axes):
        begins[a], ends[a] = pads[i], pads[len(axes) + i]
    first = next((i for i in range(rank) if begins[i] or ends[i]), rank)
    mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}
    onnx_mode = node.attr("mode", "constant")
    if onnx_mode not in mode:
        raise NotMapped(f"Pad mode {onnx_mode!r}")
    if first == rank:
        return [ctx.add("identity", [x])]
    attrs = {"pad": _torch_pad(begins[first:], ends[first:]), "mode": mode[onnx_mode]}
    attrs["value"] = float(value) if onnx_mode == "constant" else None
    if onnx_mode != "constant" and rank - first > 3:
        raise NotMapped(f"{onnx_mode} padding of more than the last three axes")
    return [ctx.add("pad", [x], **attrs)]


def expand(ctx, node):
    x = ctx.input(0)
    shape = _ints(ctx, 1, "the Expand shape")
    out = list(np.broadcast_shapes(tuple(_shape(x)), tuple(shape)))
    return [ctx.add("expand", [x], size=out)]


# -- recurrent layers ---------------------------------------------------------------------

# Gate blocks of torch's order, as indices into ONNX's: LSTM torch (i, f, g, o) from ONNX
# (i, o, f, c); GRU torch (r, z, n) from ONNX (z, r, h).
_ONNX_GATES = {"lstm": (0, 2, 3, 1), "gru": (1, 0, 2), "rnn": (0,)}
_DEFAULT_ACTIVATIONS = {"lstm": ["Sigmoid", "Tanh", "Tanh"], "gru": ["Sigmoid", "Tanh"]}


def _recurrent(ctx, node, op: str):
    """ONNX LSTM/GRU/RNN onto the torch-form recurrent records (one layer, constant
    weights, ONNX's default activations); a reverse-only layer runs forward on the
    time-flipped input."""
    states = 2 if op == "lstm" else 1
    x = ctx.input(0)
    w, r, b = ctx.const(1), ctx.const(2), ctx.const(3) if ctx.input(3) is not None else None
    if w is None or r is None or (ctx.input(3) is not None and b is None):
        raise NotMapped("weights computed in the graph (Core ML's recurrent ops take constants)")
    if ctx.input(4) is not None:
        lengths = ctx.const(4)
        steps = _shape(x)[node.attr("layout", 0)]
        if lengths is None or not np.all(np.asarray(lengths) == steps):
            raise NotMapped("sequence_lens shorter than the sequence")
    if op == "lstm" and ctx.input(7) is not None and np.any(ctx.const(7) != 0):
        raise NotMapped("LSTM peepholes have no Core ML form")
    if node.attr("clip") is not None or node.attr("input_forget", 0):
        raise NotMapped("clipped or coupled-gate cells have no Core ML form")
    activations = node.attr("activations")
    nonlinearity = "tanh"
    if op == "rnn":
        act = (activations or ["Tanh"])[0]
        if any(a != act for a in activations or []) or act not in ("Tanh", "Relu"):
            raise NotMapped(f"RNN activations {activations}")
        nonlinearity = act.lower()
    elif activations is not None and list(activations) != _DEFAULT_ACTIVATIONS[op] * (
        len(activations) // len(_DEFAULT_ACTIVATIONS[op])
    ):
        raise NotMapped(f"{op.upper()} activations {activations}")
    if op == "gru" and not node.attr("linear_before_reset", 0):
        # ONNX's default resets before the hidden product; the record is torch's form.
        raise NotMapped("GRU with linear_before_reset=0")
    direction = node.attr("direction", "forward")
    hidden = int(node.attr("hidden_size", r.shape[-1]))
    gates = _ONNX_GATES[op]
    dirs = w.shape[0]
    if b is None:
        b = np.zeros([dirs, 2 * len(gates) * hidden], w.dtype)

    def reorder(m):
        blocks = np.split(np.asarray(m), len(gates), axis=0)
        return np.concatenate([blocks[g] for g in gates], axis=0)

    weights = []
    for d in range(dirs):
        bias_ih, bias_hh = np.split(b[d], 2)
        weights += [reorder(w[d]), reorder(r[d]), reorder(bias_ih), reorder(bias_hh)]
    weights = [ctx.constant(np.ascontiguousarray(m, dtype=np.float32)) for m in weights]
    if node.attr("layout", 0):
        x = ctx.add("permute", [x], dims=[1, 0, 2])
    seq, batch = _shape(x)[0], _shape(x)[1]
    if direction == "reverse":
        x = ctx.add("flip", [x], dims=[0])
    initial = []
    for i in range(states):
        v = ctx.input(5 + i)
        if v is None:
            v = ctx.constant(np.zeros([dirs, batch, hidden], np.float32))
        elif node.attr("layout", 0):
            v = ctx.add("permute", [v], dims=[1, 0, 2])
        initial.append(v)
    attrs = {"bidirectional": direction == "bidirectional", "batch_first": False}
    if op == "rnn":
        attrs["nonlinearity"] = nonlinearity
    outs = ctx.add_multi(op, [*weights, x, *initial], **attrs)
    y, finals = outs[0], outs[1:]
    if direction == "reverse":
        y = ctx.add("flip", [y], dims=[0])
    # torch's (seq, batch, dirs * hidden) -> ONNX's (seq, dirs, batch, hidden)
    y = ctx.add("reshape", [y], shape=[seq, batch, dirs, hidden])
    if node.attr("layout", 0):  # ONNX's (batch, seq, dirs, hidden); states batch first
        y = ctx.add("permute", [y], dims=[1, 0, 2, 3])
        finals = [ctx.add("permute", [f], dims=[1, 0, 2]) for f in finals]
    else:  # ONNX's (seq, dirs, batch, hidden)
        y = ctx.add("permute", [y], dims=[0, 2, 1, 3])
    return [y, *finals]


def lstm(ctx, node):
    return _recurrent(ctx, node, "lstm")


def gru(ctx, node):
    return _recurrent(ctx, node, "gru")


def rnn(ctx, node):
    return _recurrent(ctx, node, "rnn")


def trilu(ctx, node):
    k = _scalar(ctx, 1, "the Trilu diagonal")
    op = "triu" if node.attr("upper", 1) else "tril"
    return [ctx.add(op, [ctx.input(0)], diagonal=int(k or 0))]


def tile(ctx, node):
    return [ctx.add("repeat", [ctx.input(0)], repeats=_ints(ctx, 1, "the Tile repeats"))]


def gather(ctx, node):
    x, idx = ctx.input(0), ctx.input(1)
    axis = node.attr("axis", 0) % x.type.rank
    data = ctx.const(1)
    size = _shape(x)[axis]
    if data is not None:
        data = np.where(data < 0, data + size, data).astype(np.int64)
        if data.ndim == 0:
            return [ctx.add("select", [x], dim=axis, index=int(data))]
        idx = ctx.constant(np.ascontiguousarray(data))
    elif ctx.const(0) is not None and axis == 0 and x.type.rank == 2:
        return [ctx.add("embedding", [x, idx])]
    flat = idx if idx.type.rank == 1 else ctx.add("reshape", [idx], shape=[-1])
    out = ctx.add("index_select", [x, flat], dim=axis)
    shape = _shape(x)
    final = shape[:axis] + _shape(idx) + shape[axis + 1 :]
    return [out if _shape(out) == final else ctx.add("reshape", [out], shape=final)]


def gather_elements(ctx, node):
    x = ctx.input(0)
    return [ctx.add("gather", [x, ctx.input(1)], dim=node.attr("axis", 0) % x.type.rank)]


def depth_to_space(ctx, node):
    x = ctx.input(0)
    b = node.attr("blocksize")
    n, c, h, w = _shape(x)
    if node.attr("mode", "DCR") == "CRD":
        return [ctx.add("pixel_shuffle", [x], upscale_factor=b)]
    y = ctx.add("reshape", [x], shape=[n, b, b, c // (b * b), h, w])
    y = ctx.add("permute", [y], dims=[0, 3, 4, 1, 5, 2])
    return [ctx.add("reshape", [y], shape=[n, c // (b * b), h * b, w * b])]


def space_to_depth(ctx, node):
    x = ctx.input(0)
    b = node.attr("blocksize")
    n, c, h, w = _shape(x)
    y = ctx.add("reshape", [x], shape=[n, c, h // b, b, w // b, b])
    # DCR (the default) puts the block offsets before the channels, CRD after them.
    crd = node.attr("mode", "DCR") == "CRD"
    y = ctx.add("permute", [y], dims=[0, 1, 3, 5, 2, 4] if crd else [0, 3, 5, 1, 2, 4])
    return [ctx.add("reshape", [y], shape=[n, c * b * b, h // b, w // b])]


def isinf(ctx, node):
    if not (node.attr("detect_positive", 1) and node.attr("detect_negative", 1)):
        raise NotMapped("IsInf detecting one sign only")
    return [ctx.add("isinf", [ctx.input(0)])]


def where(ctx, node):
    return [ctx.add("where", [ctx.input(0), ctx.input(1), ctx.input(2)])]


def identity(ctx, node):
    return [ctx.add("identity", [ctx.input(0)])]


def dropout(ctx, node):
    if node.used(1):
        raise NotMapped("Dropout's mask output")
    if node.opset >= 12 and ctx.input(2) is not None:
        training = ctx.const(2)
        if training is None or bool(np.asarray(training).reshape(-1)[0]):
            raise NotMapped("Dropout in training mode")
    return [ctx.add("identity", [ctx.input(0)])]


# -- reductions ----------------------------------------------------------------------------


def _reduce(op: str, axes_input_from: int, before: str | None = None, after: str | None = None):
    """A reduction over ``axes``; ``before`` and ``after`` are element-wise records applied
    to the input and the result (ReduceL1 is ``abs`` then ``sum``, ReduceLogSum ``sum``
    then ``log``)."""

    def translate(ctx, node):
        x = ctx.input(0)
        keepdim = bool(node.attr("keepdims", 1))
        axes = _reduction_axes(ctx, node, x, axes_input_from)
        if axes is None:
            if before is None and after is None:
                return [ctx.add("identity", [x])]
            # No axes: the reduction is the identity, the element-wise steps remain.
            y = ctx.add(before, [x]) if before else x
            return [ctx.add(after, [y]) if after else y]
        if before is not None:
            x = ctx.add(before, [x])
        out = _reduced(ctx, op, x, axes, keepdim)
        return [ctx.add(after, [out]) if after else out]

    return translate


def _reduction_axes(ctx, node, x, axes_input_from: int) -> list[int] | None:
    """A Reduce node's axes, sorted and non-negative (all of them when none are given);
    None when empty axes with ``noop_with_empty_axes`` make the reduction the identity.
    The axes are an input from opset ``axes_input_from``, an attribute before it."""
    if node.opset >= axes_input_from:
        axes = _axes(ctx, node, 1)
        if not axes and node.attr("noop_with_empty_axes", 0):
            return None
    else:
        axes = node.attr("axes", None)
    return sorted(a % x.type.rank for a in axes) if axes else list(range(x.type.rank))


def _reduced(ctx, op: str, x, axes: list[int], keepdim: bool):
    if op == "prod":
        out = x
        for a in reversed(axes):
            out = ctx.add("prod", [out], dim=a, keepdim=keepdim)
        return out
    return ctx.add(op, [x], dim=axes, keepdim=keepdim)


def reduce_log_sum_exp(ctx, node):
    """log(sum(exp(x))), computed as m + log(sum(exp(x - m))) with m the maximum so that
    exp cannot overflow (an empty reduction has no maximum: the plain form)."""
    x = ctx.input(0)
    keepdim = bool(node.attr("keepdims", 1))
    axes = _reduction_axes(ctx, node, x, 18)
    if axes is None:
        return [ctx.add("identity", [x])]
    if any(_shape(x)[a] == 0 for a in axes):
        total = ctx.add("sum", [ctx.add("exp", [x])], dim=axes, keepdim=keepdim)
        return [ctx.add("log", [total])]
    peak = ctx.add("amax", [x], dim=axes, keepdim=True)
    total = ctx.add("sum", [ctx.add("exp", [ctx.add("sub", [x, peak])])], dim=axes, keepdim=True)
    out = ctx.add("add", [ctx.add("log", [total]), peak])
    if not keepdim:
        out = ctx.add("reshape", [out], shape=[d for i, d in enumerate(_shape(x)) if i not in axes])
    return [out]


def _arg(op: str):
    def translate(ctx, node):
        if node.attr("select_last_index", 0):
            raise NotMapped(f"{node.op_type} select_last_index=1")
        x = ctx.input(0)
        axis = node.attr("axis", 0) % x.type.rank
        return [ctx.add(op, [x], dim=axis, keepdim=bool(node.attr("keepdims", 1)))]

    return translate


def cumsum(ctx, node):
    if node.attr("exclusive", 0) or node.attr("reverse", 0):
        raise NotMapped("exclusive or reverse CumSum")
    x = ctx.input(0)
    return [ctx.add("cumsum", [x], dim=_scalar(ctx, 1, "the CumSum axis") % x.type.rank)]


def topk(ctx, node):
    x = ctx.input(0)
    k = _scalar(ctx, 1, "K") if node.opset >= 10 else node.attr("k")
    return ctx.add_multi(
        "topk", [x], k=int(k), dim=node.attr("axis", -1) % x.type.rank,
        largest=bool(node.attr("largest", 1)), sorted=bool(node.attr("sorted", 1)),
    )  # fmt: skip


# -- resizing ------------------------------------------------------------------------------


def resize(ctx, node):
    """Resize (and opset 7-9 Upsample) of the last two axes: onto the upsample records
    where they compute the same, else as two constant interpolation matrices."""
    try:
        return _resize_on_records(ctx, node)
    except NotMapped as exc:
        return _resize_by_matrices(ctx, node, str(exc))


def _resize_by_matrices(ctx, node, why: str):
    """Every Resize mode is linear and separable per axis: y = A_h @ x @ A_w^T with
    constant matrices. Each matrix is what ONNX's own definition (``onnx.reference``)
    makes of an identity, resized along that axis alone with the node's attributes."""
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    x = ctx.input(0)
    shape = _shape(x)
    if node.op_type != "Resize" or node.opset < 11 or x.type.rank != 4:
        raise NotMapped(why)
    if not x.type.dtype.startswith("float"):
        raise NotMapped(f"{why}; Resize of integers")
    if node.attr("coordinate_transformation_mode") == "tf_crop_and_resize":
        raise NotMapped("Resize tf_crop_and_resize (values outside the box are not linear)")
    if node.attr("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise NotMapped("Resize keep_aspect_ratio_policy")
    sizes = _ints(ctx, 3, "the Resize sizes") if len(node.inputs) > 3 else None
    data = ctx.const(2) if ctx.input(2) is not None else None
    if ctx.input(2) is not None and data is None:
        raise NotMapped("Resize scales computed at run time")
    scales = [float(v) for v in data] if data is not None and data.size else None
    axes = [a % 4 for a in node.attr("axes", [])] or list(range(4))
    full_sizes, full_scales = list(shape), [1.0] * 4
    for i, a in enumerate(axes):
        if sizes:
            full_sizes[a] = sizes[i]
        elif scales:
            full_scales[a] = scales[i]
            full_sizes[a] = int(math.floor(shape[a] * scales[i]))
    if not (sizes or scales) or full_sizes[:2] != shape[:2]:
        raise NotMapped(why)
    attrs = {a.name: helper.get_attribute_value(a) for a in node.proto.attribute}
    attrs.pop("axes", None)
    np_dtype = dtypes.NUMPY[x.type.dtype]
    out = x
    for axis in (3, 2):  # width first: [.., H, W] @ A_w^T, then A_h @ [.., H, W']
        n_in, n_out = shape[axis], full_sizes[axis]
        probe = np.eye(n_in, dtype=np.float32).reshape(1, 1, n_in, n_in)
        if sizes:
            feed = {"sizes": np.array([1, 1, n_in, n_out], np.int64)}
            inputs = ["x", "", "", "sizes"]
        else:
            feed = {"scales": np.array([1.0, 1.0, 1.0, full_scales[axis]], np.float32)}
            inputs = ["x", "", "scales"]
        proto = helper.make_node("Resize", inputs, ["y"], **attrs)
        run = ReferenceEvaluator(proto, opsets={"": node.opset}).run
        # Row i of the result is the resized unit vector e_i: A^T, of shape [n_in, n_out].
        a_t = np.asarray(run(None, {"x": probe, **feed})[0])[0, 0].astype(np_dtype)
        if a_t.shape == (n_in, n_in) and np.array_equal(a_t, np.eye(n_in)):
            continue
        if axis == 3:
            out = ctx.add("matmul", [out, ctx.constant(np.ascontiguousarray(a_t))])
        else:
            out = ctx.add("matmul", [ctx.constant(np.ascontiguousarray(a_t.T)), out])
    return [out if out is not x else ctx.add("identity", [x])]


def _resize_on_records(ctx, node):
    x = ctx.input(0)
    shape = _shape(x)
    if x.type.rank != 4:
        raise NotMapped(f"{node.op_type} on a rank-{x.type.rank} tensor")
    mode = node.attr("mode", "nearest")
    if node.op_type == "Upsample":
        scales = list(node.attr("scales")) if node.has("scales") else None
        if scales is None:
            data = ctx.const(1)
            if data is None:
                raise NotMapped("Upsample scales computed at run time")
            scales = [float(s) for s in data]
        transform, sizes = "asymmetric", None
    else:
        scales_at, sizes_at = (1, 2) if node.opset < 11 else (2, 3)
        transform = (
            node.attr("coordinate_transformation_mode", "half_pixel")
            if node.opset >= 11
            else "asymmetric"
        )
        sizes = _ints(ctx, sizes_at, "the Resize sizes") if sizes_at < len(node.inputs) else None
        data = ctx.const(scales_at) if ctx.input(scales_at) is not None else None
        if ctx.input(scales_at) is not None and data is None:
            raise NotMapped("Resize scales computed at run time")
        scales = [float(s) for s in data] if data is not None and data.size else None
        if node.has("axes") and node.attr("axes"):
            raise NotMapped("Resize with axes")
        if node.attr("keep_aspect_ratio_policy", "stretch") != "stretch" and sizes:
            raise NotMapped("Resize keep_aspect_ratio_policy")
    if sizes:
        out_hw = [int(s) for s in sizes[-2:]]
        if list(sizes[:2]) != shape[:2]:
            raise NotMapped("Resize of the batch or channel axis")
    elif scales:
        if scales[:2] != [1.0, 1.0]:
            raise NotMapped("Resize of the batch or channel axis")
        out_hw = [int(math.floor(d * s)) for d, s in zip(shape[2:], scales[2:], strict=True)]
    else:
        raise NotMapped("Resize without scales or sizes")
    if out_hw == shape[2:]:
        return [ctx.add("identity", [x])]
    if mode != "nearest" and any(o < d for o, d in zip(out_hw, shape[2:], strict=True)):
        # Downsampling: the records' interpolation differs from ONNX's here.
        raise NotMapped(f"{mode} Resize downsampling")
    exact = scales and all(
        d * s == o for d, s, o in zip(shape[2:], scales[2:], out_hw, strict=True)
    )
    size_attrs = {"output_size": out_hw}
    if exact:
        # The given scale is what ONNX maps coordinates with; torch uses it too when told.
        size_attrs = {"output_size": out_hw, "scales_h": scales[2], "scales_w": scales[3]}
    if mode == "nearest":
        nearest = node.attr("nearest_mode", "round_prefer_floor")
        if node.op_type == "Upsample" or node.opset < 11:
            nearest = "floor"
        if transform != "asymmetric" or nearest != "floor":
            raise NotMapped(f"nearest Resize with {transform}/{nearest}")
        return [ctx.add("upsample_nearest2d", [x], **size_attrs)]
    if node.attr("exclude_outside", 0) or node.attr("antialias", 0):
        raise NotMapped("Resize with exclude_outside or antialias")
    align = transform == "align_corners"
    half = transform == "half_pixel" or (
        transform == "pytorch_half_pixel" and all(o > 1 for o in out_hw)
    )
    if not (align or half):
        raise NotMapped(f"{mode} Resize with {transform} coordinates")
    if mode in ("linear", "bilinear"):
        return [ctx.add("upsample_bilinear2d", [x], align_corners=align, **size_attrs)]
    if mode in ("cubic", "bicubic") and node.attr("cubic_coeff_a", -0.75) == -0.75:
        return [ctx.add("upsample_bicubic2d", [x], align_corners=align, **size_attrs)]
    raise NotMapped(f"Resize mode {mode!r}")


# -- the table ---------------------------------------------------------------------------------

ONNX_TO_IR: dict[str, Translation] = {
    # element-wise arithmetic (numpy broadcasting, as the records)
    "Add": same("add"),
    "Sub": same("sub"),
    "Mul": same("mul"),
    "Div": div,
    "Pow": same("pow"),
    "Mod": mod,
    "Sum": variadic("add"),
    "Max": variadic("maximum"),
    "Min": variadic("minimum"),
    "Mean": mean_of,
    "Sqrt": same("sqrt"),
    "Exp": same("exp"),
    "Log": same("log"),
    "Neg": same("neg"),
    "Abs": same("abs"),
    "Reciprocal": same("reciprocal"),
    "Floor": same("floor"),
    "Ceil": same("ceil"),
    "Round": same("round"),
    "Sign": same("sign"),
    "Erf": same("erf"),
    "Sin": same("sin"),
    "Cos": same("cos"),
    "Tan": same("tan"),
    "Asin": same("asin"),
    "Acos": same("acos"),
    "Atan": same("atan"),
    "Sinh": same("sinh"),
    "Cosh": same("cosh"),
    "Asinh": same("asinh"),
    "Acosh": same("acosh"),
    "Atanh": same("atanh"),
    "Cast": cast,
    "CastLike": cast_like,
    "Identity": identity,
    "Dropout": dropout,
    # comparisons and logic
    "Equal": same("eq"),
    "Less": same("lt"),
    "LessOrEqual": same("le"),
    "Greater": same("gt"),
    "GreaterOrEqual": same("ge"),
    "Not": same("logical_not"),
    "And": same("logical_and"),
    "Or": same("logical_or"),
    "Xor": same("logical_xor"),
    "Where": where,
    "IsNaN": same("isnan"),
    "IsInf": isinf,
    # activations
    "Relu": same("relu"),
    "Sigmoid": same("sigmoid"),
    "Tanh": same("tanh"),
    "LeakyRelu": unary("leaky_relu", negative_slope=("alpha", 0.01)),
    "Elu": unary("elu", alpha=("alpha", 1.0)),
    "Selu": selu,
    "Celu": celu,
    "PRelu": prelu,
    "HardSigmoid": hard_sigmoid,
    "HardSwish": same("hardswish"),
    "Softplus": same("softplus"),
    "Softsign": softsign,
    "Mish": same("mish"),
    "Gelu": gelu,
    "ThresholdedRelu": thresholded_relu,
    "Clip": clip,
    "Softmax": _softmax("softmax"),
    "LogSoftmax": _softmax("log_softmax"),
    # matrix products and convolutions
    "MatMul": matmul,
    "Gemm": gemm,
    "Conv": conv,
    "ConvTranspose": conv_transpose,
    # pooling
    "MaxPool": _pool("max"),
    "AveragePool": _pool("avg"),
    "GlobalAveragePool": _global_pool("mean"),
    "GlobalMaxPool": _global_pool("amax"),
    # normalisation
    "BatchNormalization": batch_norm,
    "InstanceNormalization": instance_norm,
    "LayerNormalization": layer_norm,
    "GroupNormalization": group_norm,
    "LRN": lrn,
    "MeanVarianceNormalization": mean_variance_norm,
    # reductions (the opset from which axes are an input)
    "ReduceMean": _reduce("mean", 18),
    "ReduceSum": _reduce("sum", 13),
    "ReduceMax": _reduce("amax", 18),
    "ReduceMin": _reduce("amin", 18),
    "ReduceProd": _reduce("prod", 18),
    "ReduceL1": _reduce("sum", 18, before="abs"),
    "ReduceL2": _reduce("sum", 18, before="square", after="sqrt"),
    "ReduceSumSquare": _reduce("sum", 18, before="square"),
    "ReduceLogSum": _reduce("sum", 18, after="log"),
    "ReduceLogSumExp": reduce_log_sum_exp,
    "ArgMax": _arg("argmax"),
    "ArgMin": _arg("argmin"),
    "CumSum": cumsum,
    "TopK": topk,
    # shapes and data movement
    "Reshape": reshape,
    "Flatten": flatten,
    "Transpose": transpose,
    "Squeeze": squeeze,
    "Unsqueeze": unsqueeze,
    "Concat": concat,
    "Split": split,
    "Slice": slice_,
    "Pad": pad,
    "Expand": expand,
    "Tile": tile,
    "Trilu": trilu,
    "LSTM": lstm,
    "GRU": gru,
    "RNN": rnn,
    "Gather": gather,
    "GatherElements": gather_elements,
    "DepthToSpace": depth_to_space,
    "SpaceToDepth": space_to_depth,
    "Resize": resize,
    "Upsample": resize,
}


# ONNX TensorProto element types the frontend reads, by their numpy names.
ONNX_DTYPES = dtypes.ONNX

# Narrow float types held in float32: a value becomes one by rounding.
ROUNDED = frozenset(name for name in dtypes.NARROW if dtypes.held(name) == "float32")

# Integer types held in int32 whose values wrap around at their own width, as ONNX's do:
# (lowest value, number of values).
WRAPS = {"int8": (-128, 256), "uint8": (0, 256), "int16": (-32768, 65536), "uint16": (0, 65536),
         "int4": (-8, 16), "uint4": (0, 16), "int2": (-2, 4), "uint2": (0, 4)}  # fmt: skip


def onnx_dtype(elem_type: int) -> str:
    """ONNX TensorProto element type -> its numpy name (NotMapped for the others)."""
    if elem_type not in ONNX_DTYPES:
        import onnx

        name = onnx.TensorProto.DataType.Name(elem_type)
        raise NotMapped(f"ONNX element type {name} has no IR equivalent")
    return ONNX_DTYPES[elem_type]


def ir_dtype(elem_type: int) -> str:
    """ONNX TensorProto element type -> the IR dtype its tensors are held in."""
    return dtypes.held(onnx_dtype(elem_type))
