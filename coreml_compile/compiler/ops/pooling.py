"""Pooling: max, average, and their adaptive forms."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from coreml_compile.compiler.ops import Op
from coreml_compile.compiler.ops._helpers import as_tuple


class MaxPool2d(Op):
    name = "max_pool2d"
    dynamic = True
    inputs = ("x",)
    attrs = {
        "kernel_size": [1, 1],
        "stride": [],
        "padding": [0],
        "dilation": [1],
        "ceil_mode": False,
    }

    def kernel(x, *, kernel_size, stride, padding, dilation, ceil_mode):
        return F.max_pool2d(
            x, as_tuple(kernel_size, 2), as_tuple(stride or kernel_size, 2),
            as_tuple(padding, 2), as_tuple(dilation, 2), ceil_mode,
        )  # fmt: skip

    def lower(c, x, *, kernel_size, stride, padding, dilation, ceil_mode):
        pad = as_tuple(padding, 2)
        return c.mb.max_pool(
            x=x,
            kernel_sizes=list(as_tuple(kernel_size, 2)),
            strides=list(as_tuple(stride or kernel_size, 2)),
            pad_type="custom",
            pad=[pad[0], pad[0], pad[1], pad[1]],
            ceil_mode=ceil_mode,
            name=c.name,
        )

    def check(node, generation):
        if any(d != 1 for d in as_tuple(node.attrs["dilation"], 2)):
            return "dilated max pooling has no Core ML equivalent"
        return None


class AvgPool2d(Op):
    name = "avg_pool2d"
    dynamic = True
    inputs = ("x",)
    attrs = {
        "kernel_size": [1, 1],
        "stride": [],
        "padding": [0],
        "ceil_mode": False,
        "count_include_pad": True,
        "divisor_override": None,
    }

    def kernel(x, *, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
        return F.avg_pool2d(
            x, as_tuple(kernel_size, 2), as_tuple(stride or kernel_size, 2),
            as_tuple(padding, 2), ceil_mode, count_include_pad, divisor_override,
        )  # fmt: skip

    def lower(
        c, x, *, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
    ):
        pad = as_tuple(padding, 2)
        return c.mb.avg_pool(
            x=x,
            kernel_sizes=list(as_tuple(kernel_size, 2)),
            strides=list(as_tuple(stride or kernel_size, 2)),
            pad_type="custom",
            pad=[pad[0], pad[0], pad[1], pad[1]],
            exclude_padding_from_average=not count_include_pad,
            ceil_mode=ceil_mode,
            name=c.name,
        )

    def check(node, generation):
        if node.attrs["divisor_override"] is not None:
            return "avg_pool2d with divisor_override has no Core ML equivalent"
        if (
            node.attrs["ceil_mode"]
            and node.attrs["count_include_pad"]
            and any(as_tuple(node.attrs["padding"], 2))
        ):
            # torch and Core ML count the window's overhang past the padding differently.
            return "avg_pool2d with ceil_mode, padding and count_include_pad differs in Core ML"
        return None


def _adaptive_window(in_hw, out_hw):
    """The (kernel, stride) of an adaptive pool that is a plain pool, or None."""
    if any(i % o for i, o in zip(in_hw, out_hw, strict=True)):
        return None
    stride = [i // o for i, o in zip(in_hw, out_hw, strict=True)]
    return stride, stride


def _adaptive_check(node, spatial: int = 2):
    x = node.inputs[0].type
    out = as_tuple(node.attrs["output_size"], spatial)
    if out == (1,) * spatial:
        return None  # a global reduction, whatever the sizes
    if not all(isinstance(d, int) for d in out):
        return f"adaptive pooling to dynamic size {list(out)}"
    sizes = x.shape[-spatial:]
    if not all(isinstance(d, int) for d in sizes):
        # The window is the input's size over the output's: it would change with each run.
        return f"adaptive pooling of dynamic size {list(sizes)} to {list(out)} (only to 1)"
    if _adaptive_window(sizes, out) is None:
        return f"adaptive pooling from {list(sizes)} to {list(out)} is not a plain pool"
    return None


class AdaptiveAvgPool1d(Op):
    name = "adaptive_avg_pool1d"
    inputs = ("x",)
    # To 1 a reduction; other sizes are plain pools of static inputs (the check says so).
    dynamic = True
    attrs = {"output_size": [1]}

    def kernel(x, *, output_size):
        return F.adaptive_avg_pool1d(x, as_tuple(output_size, 1))

    def lower(c, x, *, output_size):
        out = as_tuple(output_size, 1)
        if out == (1,):
            return c.mb.reduce_mean(x=x, axes=[-1], keep_dims=True, name=c.name)
        kernel, stride = _adaptive_window(x.shape[-1:], out)
        if x.rank == 2:  # MIL pools take a batch axis
            x = c.mb.expand_dims(x=x, axes=[0], name=c.name + "_batched")
            y = c.mb.avg_pool(
                x=x, kernel_sizes=kernel, strides=stride, pad_type="valid", name=c.name + "_pool"
            )
            return c.mb.squeeze(x=y, axes=[0], name=c.name)
        return c.mb.avg_pool(
            x=x, kernel_sizes=kernel, strides=stride, pad_type="valid", name=c.name
        )

    def check(node, generation):
        return _adaptive_check(node, spatial=1)


class AdaptiveAvgPool2d(Op):
    name = "adaptive_avg_pool2d"
    inputs = ("x",)
    # To 1x1 a reduction; other sizes are plain pools of static inputs (the check says so).
    dynamic = True
    attrs = {"output_size": [1, 1]}

    def kernel(x, *, output_size):
        return F.adaptive_avg_pool2d(x, as_tuple(output_size, 2))

    def lower(c, x, *, output_size):
        out = as_tuple(output_size, 2)
        if out == (1, 1):
            return c.mb.reduce_mean(x=x, axes=[-2, -1], keep_dims=True, name=c.name)
        kernel, stride = _adaptive_window(x.shape[-2:], out)
        return c.mb.avg_pool(
            x=x, kernel_sizes=kernel, strides=stride, pad_type="valid", name=c.name
        )

    def check(node, generation):
        return _adaptive_check(node)


class AdaptiveMaxPool2d(Op):
    """Returns (values, indices) like torch; Core ML runs it when the indices are unused."""

    name = "adaptive_max_pool2d"
    inputs = ("x",)
    # To 1x1 a reduction; other sizes are plain pools of static inputs (the check says so).
    dynamic = True
    attrs = {"output_size": [1, 1]}
    num_outputs = 2

    def kernel(x, *, output_size):
        return torch.ops.aten.adaptive_max_pool2d(x, list(as_tuple(output_size, 2)))

    def lower(c, x, *, output_size):
        out = as_tuple(output_size, 2)
        if out == (1, 1):
            values = c.mb.reduce_max(x=x, axes=[-2, -1], keep_dims=True, name=c.name)
        else:
            kernel, stride = _adaptive_window(x.shape[-2:], out)
            values = c.mb.max_pool(
                x=x, kernel_sizes=kernel, strides=stride, pad_type="valid", name=c.name
            )
        return values, None

    def check(node, generation):
        if node.outputs[1].users:
            return "the indices output of adaptive_max_pool2d has no Core ML equivalent"
        return _adaptive_check(node)
