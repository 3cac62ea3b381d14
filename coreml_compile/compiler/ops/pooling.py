"""Pooling: max, average, and their adaptive forms."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from coreml_compile.compiler.ops import Op
from coreml_compile.compiler.ops._helpers import as_tuple, pad_exactly


def _max_attrs(spatial: int) -> dict:
    return {
        "kernel_size": [1] * spatial,
        "stride": [],
        "padding": [0],
        "dilation": [1],
        "ceil_mode": False,
    }


def _pool(c, op, x, spatial, kernel_size, stride, padding, name, **options):
    """MIL's ``op`` (max_pool, avg_pool) over the last ``spatial`` dims of x, padded the
    same at both ends of each; ``options`` are the op's own (ceil_mode, ...)."""
    pad = as_tuple(padding, spatial)
    return getattr(c.mb, op)(
        x=x,
        kernel_sizes=list(as_tuple(kernel_size, spatial)),
        strides=list(as_tuple(stride or kernel_size, spatial)),
        pad_type="custom",
        pad=[p for p in pad for _ in range(2)],
        name=name,
        **options,
    )


class MaxPool2d(Op):
    name = "max_pool2d"
    dynamic = True
    inputs = ("x",)
    attrs = _max_attrs(2)

    def kernel(x, *, kernel_size, stride, padding, dilation, ceil_mode):
        kernel, pad, dilation = (
            as_tuple(kernel_size, 2),
            as_tuple(padding, 2),
            as_tuple(dilation, 2),
        )
        if _wide_pads(kernel, pad, dilation):
            # torch refuses pads over half the window (ONNX's MaxPool allows them): the
            # same result on x padded with its lowest value.
            info = torch.finfo if x.is_floating_point() else torch.iinfo
            x = F.pad(x, [pad[1], pad[1], pad[0], pad[0]], value=info(x.dtype).min)
            pad = (0, 0)
        return F.max_pool2d(x, kernel, as_tuple(stride or kernel_size, 2), pad, dilation, ceil_mode)

    def lower(c, x, *, kernel_size, stride, padding, dilation, ceil_mode):
        pad = as_tuple(padding, 2)
        kernel, strides = as_tuple(kernel_size, 2), as_tuple(stride or kernel_size, 2)
        dilation = as_tuple(dilation, 2)
        if (
            not c.mil_dtype_of(x).startswith("fp")
            or any(d != 1 for d in dilation)
            or _wide_pads(kernel, pad, dilation)
        ):
            return _max_of_windows(c, x, kernel, strides, pad, dilation)
        return _pool(c, "max_pool", x, 2, kernel, strides, pad, c.name, ceil_mode=ceil_mode)

    def check(node, generation):
        x, attrs = node.inputs[0].type, node.attrs
        dilation = as_tuple(attrs["dilation"], 2)
        wide = _wide_pads(
            as_tuple(attrs["kernel_size"], 2), as_tuple(attrs["padding"], 2), dilation
        )
        plain = x.dtype.startswith("float") and all(d == 1 for d in dilation) and not wide
        if not plain and not x.is_static:
            return "dilated, wide-padded or integer max pooling of a dynamic shape"
        return None


def _wide_pads(kernel, pad, dilation) -> bool:
    """Pads over half the window, which torch's max pooling refuses (and so the
    reference executor's max_pool kernel)."""
    return any(2 * p > (k - 1) * d + 1 for k, p, d in zip(kernel, pad, dilation, strict=True))


def _max_of_windows(c, x, kernel, strides, pad, dilation):
    """Max pooling as the element-wise maximum of the kernel's strided slices of x padded
    with its lowest value: MIL's max_pool takes floats only and no dilation, and this is
    exact for integers (int32 is not exact in float32). Sizes come from the node's static
    output shape, which already holds ceil_mode's choice."""
    from coreml_compile.compiler.mil import MIL_NUMPY

    out = c.node.outputs[0].type.shape[-2:]
    dtype = MIL_NUMPY[c.mil_dtype_of(x)]
    lowest = np.iinfo(dtype).min if np.issubdtype(dtype, np.integer) else -np.inf
    lead = x.rank - 2  # (batch and) channels
    full = [(0, 0)] * lead
    for axis in range(2):
        # The extent the windows read: ceil_mode may read past the symmetric end pad.
        extent = (out[axis] - 1) * strides[axis] + (kernel[axis] - 1) * dilation[axis] + 1
        full.append((pad[axis], max(extent - x.shape[lead + axis] - pad[axis], 0)))
    shape = [size + before + after for size, (before, after) in zip(x.shape, full, strict=True)]
    x = pad_exactly(c, x, full, "constant", lowest, f"{c.name}_padded")
    windows = []
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            top, left = i * dilation[0], j * dilation[1]
            bottom = top + (out[0] - 1) * strides[0] + 1
            right = left + (out[1] - 1) * strides[1] + 1
            windows.append(
                c.mb.slice_by_index(
                    x=x,
                    begin=[0] * lead + [top, left],
                    end=shape[:lead] + [bottom, right],
                    stride=[1] * lead + list(strides),
                    name=f"{c.name}_window{i}_{j}",
                )
            )
    result = windows[0]
    for k, window in enumerate(windows[1:]):
        last = k == len(windows) - 2
        result = c.mb.maximum(x=result, y=window, name=c.name if last else f"{c.name}_max{k}")
    return result if len(windows) > 1 else c.mb.identity(x=result, name=c.name)


def _avg_attrs(spatial: int) -> dict:
    return {
        "kernel_size": [1] * spatial,
        "stride": [],
        "padding": [0],
        "ceil_mode": False,
        "count_include_pad": True,
        "divisor_override": None,
    }


def _avg_kernel(spatial: int, pool):
    """torch's average pooling over ``spatial`` dims, as a record's kernel."""

    def kernel(x, *, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
        return pool(
            x, as_tuple(kernel_size, spatial), as_tuple(stride or kernel_size, spatial),
            as_tuple(padding, spatial), ceil_mode, count_include_pad, divisor_override,
        )  # fmt: skip

    return kernel


class AvgPool2d(Op):
    name = "avg_pool2d"
    dynamic = True
    inputs = ("x",)
    attrs = _avg_attrs(2)
    kernel = _avg_kernel(2, F.avg_pool2d)

    def lower(
        c, x, *, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
    ):
        window = (kernel_size, stride, padding, c.name)
        exclude = not count_include_pad
        return _pool(
            c, "avg_pool", x, 2, *window, exclude_padding_from_average=exclude, ceil_mode=ceil_mode
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


class MaxPool3d(Op):
    """Max pooling over (D, H, W) of x, batched or not; torch exports it as
    ``max_pool3d_with_indices``, whose indices this record does not produce."""

    name = "max_pool3d"
    dynamic = True
    inputs = ("x",)
    attrs = _max_attrs(3)

    def kernel(x, *, kernel_size, stride, padding, dilation, ceil_mode):
        return F.max_pool3d(
            x, as_tuple(kernel_size, 3), as_tuple(stride or kernel_size, 3),
            as_tuple(padding, 3), as_tuple(dilation, 3), ceil_mode,
        )  # fmt: skip

    def lower(c, x, *, kernel_size, stride, padding, dilation, ceil_mode):
        # ceil_mode changes nothing here: see _ceil_adds_windows
        window = (kernel_size, stride, padding)
        return _batched(c, x, lambda x, name: _pool(c, "max_pool", x, 3, *window, name))

    def check(node, generation):
        x = node.inputs[0].type
        if x.rank not in (4, 5) or not x.dtype.startswith("float"):
            return "3-d max pooling of a tensor that is not float (N,) C, D, H, W"
        if any(d != 1 for d in as_tuple(node.attrs["dilation"], 3)):
            return "dilated 3-d max pooling"
        return _ceil_adds_windows(node)


class AvgPool3d(Op):
    """Average pooling over (D, H, W) of x, batched or not."""

    name = "avg_pool3d"
    dynamic = True
    inputs = ("x",)
    attrs = _avg_attrs(3)
    kernel = _avg_kernel(3, F.avg_pool3d)

    def lower(
        c, x, *, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
    ):
        # ceil_mode changes nothing here: see _ceil_adds_windows
        window = (kernel_size, stride, padding)
        exclude = not count_include_pad
        return _batched(
            c,
            x,
            lambda x, name: _pool(
                c, "avg_pool", x, 3, *window, name, exclude_padding_from_average=exclude
            ),
        )

    def check(node, generation):
        x, attrs = node.inputs[0].type, node.attrs
        if x.rank not in (4, 5) or not x.dtype.startswith("float"):
            return "3-d average pooling of a tensor that is not float (N,) C, D, H, W"
        if attrs["divisor_override"] is not None:
            return "avg_pool3d with divisor_override has no Core ML equivalent"
        return _ceil_adds_windows(node)


def _batched(c, x, pool):
    """``pool(x, name)`` on a batch: an unbatched (C, D, H, W) x gets one, then loses it."""
    if x.rank == 5:
        return pool(x, c.name)
    one = c.mb.expand_dims(x=x, axes=[0], name=c.name + "_batch")
    return c.mb.squeeze(x=pool(one, c.name + "_pooled"), axes=[0], name=c.name)


def _ceil_adds_windows(node) -> str | None:
    """Why ceil_mode matters for a 3-d pool (MIL takes it for 1-d and 2-d pools only):
    when it gives more windows than rounding down would. None if it changes nothing."""
    attrs = node.attrs
    if not attrs["ceil_mode"]:
        return None
    x, out = node.inputs[0].type.shape[-3:], node.outputs[0].type.shape[-3:]
    kernel = as_tuple(attrs["kernel_size"], 3)
    stride = as_tuple(attrs["stride"] or attrs["kernel_size"], 3)
    pad = as_tuple(attrs["padding"], 3)
    if not all(isinstance(d, int) for d in (*x, *out)):
        return "3-d pooling with ceil_mode over dynamic sizes"
    floor = [(i + 2 * p - k) // s + 1 for i, p, k, s in zip(x, pad, kernel, stride, strict=True)]
    if list(out) != floor:
        return "3-d pooling whose ceil_mode adds windows (Core ML takes it for 1-d and 2-d only)"
    return None


def _adaptive_window(in_hw, out_hw):
    """The (kernel, stride) of an adaptive pool that is a plain pool, or None."""
    if any(i % o for i, o in zip(in_hw, out_hw, strict=True)):
        return None
    stride = [i // o for i, o in zip(in_hw, out_hw, strict=True)]
    return stride, stride


def _averaging_matrix(size: int, out: int) -> np.ndarray:
    """(out, size): row i averages torch's adaptive window i, floor(i*size/out) up to
    ceil((i+1)*size/out). Windows of unequal length, overlapping or not."""
    rows = np.zeros((out, size), dtype=np.float32)
    for i in range(out):
        start, end = (i * size) // out, -((-(i + 1) * size) // out)
        rows[i, start:end] = 1.0 / (end - start)
    return rows


def _adaptive_average(c, x, out) -> Any:
    """An adaptive average that is no plain pool, as one matmul per pooled axis: the
    windows' averages are a constant matrix applied along the axis."""
    spatial = len(out)
    y = x
    for k, (size, o) in enumerate(zip(x.shape[-spatial:], out, strict=True)):
        last = k == spatial - 1
        matrix = _averaging_matrix(size, o)
        if last:  # the last axis: rows of x times the matrix's transpose
            y = c.mb.matmul(x=y, y=c.const_like(matrix.T, like=x), name=c.name)
        else:  # the height axis of a 2-d pool: the matrix times x's columns
            name = c.name + "_rows"
            y = c.mb.matmul(x=c.const_like(matrix, like=x), y=y, name=name)
    return y


def _adaptive_check(node, spatial: int = 2, max_pool: bool = False):
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
    if max_pool and _adaptive_window(sizes, out) is None:
        return f"adaptive max pooling from {list(sizes)} to {list(out)} is not a plain pool"
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
        window = _adaptive_window(x.shape[-1:], out)
        if window is None:
            return _adaptive_average(c, x, out)
        kernel, stride = window
        unbatched = x.rank == 2  # MIL pools take a batch axis
        if unbatched:
            x = c.mb.expand_dims(x=x, axes=[0], name=c.name + "_batched")
        y = c.mb.avg_pool(
            x=x,
            kernel_sizes=kernel,
            strides=stride,
            pad_type="valid",
            name=c.name + "_pool" if unbatched else c.name,
        )
        return c.mb.squeeze(x=y, axes=[0], name=c.name) if unbatched else y

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
        window = _adaptive_window(x.shape[-2:], out)
        if window is None:
            return _adaptive_average(c, x, out)
        kernel, stride = window
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
        return _adaptive_check(node, max_pool=True)
