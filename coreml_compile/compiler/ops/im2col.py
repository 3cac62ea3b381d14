"""Sliding-window patches: ``im2col`` (F.unfold) and its adjoint ``col2im`` (F.fold).

Core ML has neither, but both are a convolution with a fixed one-hot weight. With
K = kh * kw kernel offsets, channel k of the weight (K, 1, kh, kw) is 1 at offset
(k // kw, k % kw) and 0 elsewhere, so with every input channel folded into the batch:

    im2col:  x (N, C, H, W) -> (N*C, 1, H, W) -> conv -> (N*C, K, oh, ow) -> (N, C*K, L)
    col2im:  x (N, C*K, L) -> (N*C, K, oh, ow) -> conv_transpose -> (N*C, 1, H, W)
                                                                 -> (N, C, H, W)

The weight is shared by all channels (K * K values, not C * K * K as with grouped
channels), each output is one input value times 1 (exact in fp16), and col2im's sums of
overlapping patches are what a transposed convolution adds up. torch's channel order
(channel-major, then kernel row, then kernel column) is the reshape's row-major order.
"""

from __future__ import annotations

import numpy as np
import torch

from coreml_compile.compiler.ops import REQUIRED, Op


def _one_hot_kernels(kh: int, kw: int) -> np.ndarray:
    """(kh*kw, 1, kh, kw): kernel k picks the offset (k // kw, k % kw)."""
    k = np.arange(kh * kw)
    weight = np.zeros((kh * kw, 1, kh, kw), dtype=np.float32)
    weight[k, 0, k // kw, k % kw] = 1
    return weight


def _window_count(size: int, kernel: int, dilation: int, padding: int, stride: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _float_check(node, op: str, ranks: tuple[int, ...]) -> str | None:
    x = node.inputs[0].type
    if x.rank not in ranks:
        return f"{op} of a rank-{x.rank} tensor"
    if not x.dtype.startswith("float"):
        return f"{op} of a non-float tensor: Core ML convolves floats only"
    if 0 in x.shape or 0 in node.output.type.shape:
        return f"{op} of an empty tensor"
    return None


class Im2col(Op):
    """F.unfold: (N, C, H, W) -> (N, C*kh*kw, L), every kh x kw window as a column
    (also unbatched, (C, H, W) -> (C*kh*kw, L))."""

    name = "im2col"
    inputs = ("x",)
    attrs = {"kernel_size": REQUIRED, "dilation": REQUIRED, "padding": REQUIRED, "stride": REQUIRED}

    def kernel(x, *, kernel_size, dilation, padding, stride):
        return torch.ops.aten.im2col.default(x, kernel_size, dilation, padding, stride)

    def lower(c, x, *, kernel_size, dilation, padding, stride):
        (kh, kw), (ph, pw) = kernel_size, padding
        h, w = x.shape[-2:]
        planes = c.mb.reshape(x=x, shape=[-1, 1, h, w], name=c.name + "_planes")
        windows = c.mb.conv(
            x=planes,
            weight=c.const_like(_one_hot_kernels(kh, kw), x),
            strides=list(stride),
            pad_type="custom",
            pad=[ph, ph, pw, pw],
            dilations=list(dilation),
            name=c.name + "_windows",
        )
        return c.mb.reshape(x=windows, shape=list(c.node.output.type.shape), name=c.name)

    def check(node, generation):
        return _float_check(node, "im2col", (3, 4))


class Col2im(Op):
    """F.fold: (N, C*kh*kw, L) -> (N, C, H, W), each column added back into its window
    (overlaps sum; also unbatched, (C*kh*kw, L) -> (C, H, W))."""

    name = "col2im"
    inputs = ("x",)
    attrs = {
        "output_size": REQUIRED,
        "kernel_size": REQUIRED,
        "dilation": REQUIRED,
        "padding": REQUIRED,
        "stride": REQUIRED,
    }

    def kernel(x, *, output_size, kernel_size, dilation, padding, stride):
        return torch.ops.aten.col2im.default(x, output_size, kernel_size, dilation, padding, stride)

    def lower(c, x, *, output_size, kernel_size, dilation, padding, stride):
        (h, w), (kh, kw) = output_size, kernel_size
        oh, ow = (
            _window_count(*args)
            for args in zip(output_size, kernel_size, dilation, padding, stride, strict=True)
        )
        columns = c.mb.reshape(x=x, shape=[-1, kh * kw, oh, ow], name=c.name + "_columns")
        kwargs = {}
        full = [
            (n - 1) * s + d * (k - 1) + 1 - 2 * p
            for n, s, d, k, p in zip((oh, ow), stride, dilation, kernel_size, padding, strict=True)
        ]
        if full != [h, w]:
            # Rows past the last window (the stride did not divide the size) are zeros,
            # as conv_transpose's output_padding leaves them: only an output shape says so.
            kwargs["output_shape"] = [columns.shape[0], 1, h, w]
        planes = c.mb.conv_transpose(
            x=columns,
            weight=c.const_like(_one_hot_kernels(kh, kw), x),
            strides=list(stride),
            pad_type="custom",
            pad=[padding[0], padding[0], padding[1], padding[1]],
            dilations=list(dilation),
            name=c.name + "_planes",
            **kwargs,
        )
        return c.mb.reshape(x=planes, shape=list(c.node.output.type.shape), name=c.name)

    def check(node, generation):
        return _float_check(node, "col2im", (2, 3))
