"""Matrix products, convolutions and embedding look-ups."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from coreml_compile.compiler.ops import Op
from coreml_compile.compiler.ops._helpers import as_int32, as_tuple


class Matmul(Op):
    """torch.matmul semantics (batched, broadcasting); bmm and mm map here too."""

    name = "matmul"
    dynamic = True
    inputs = ("x", "y")
    accelerated = "matmul"

    def macs(node):
        return node.output.type.numel() * node.inputs[0].type.shape[-1]

    def kernel(x, y):
        return torch.matmul(x, y)

    def lower(c, x, y):
        if x.rank > 1 and y.rank > 1:
            return c.mb.matmul(x=x, y=y, name=c.name)
        # MIL's matmul refuses a rank-1 y, and types a rank-1 x against a batched y
        # wrongly (it drops the batch axis, not the promoted one): rank-1 operands become
        # the matrices torch.matmul reads them as, and the added axes are squeezed after.
        added = []
        if x.rank == 1:
            x = c.mb.expand_dims(x=x, axes=[0], name=c.name + "_row")
            added.append(-2)
        if y.rank == 1:
            y = c.mb.expand_dims(x=y, axes=[-1], name=c.name + "_column")
            added.append(-1)
        product = c.mb.matmul(x=x, y=y, name=c.name + "_mm")
        return c.mb.squeeze(x=product, axes=added, name=c.name)


class Cdist(Op):
    """torch.cdist: the p-norm distance of every row of x1 to every row of x2,
    (..., P, M) and (..., R, M) -> (..., P, R). The Euclidean one through a matmul,
    sqrt(|a|^2 + |b|^2 - 2 a.b) clamped at 0 (torch's own way from 25 rows); any other
    p > 0 from the broadcast differences, (..., P, R, M) at once."""

    name = "cdist"
    dynamic = True
    inputs = ("x1", "x2")
    attrs = {"p": 2.0, "compute_mode": None}
    accelerated = "matmul"

    def kernel(x1, x2, *, p, compute_mode):
        mode = _CDIST_MODES.get(compute_mode, "use_mm_for_euclid_dist_if_necessary")
        return torch.cdist(x1, x2, p, compute_mode=mode)

    def lower(c, x1, x2, *, p, compute_mode):
        x1, x2 = c.promote(x1, x2)
        n = c.name
        if p == 2:

            def squared_norms(v, tag):  # (..., rows, 1)
                square = c.mb.mul(x=v, y=v, name=f"{n}_{tag}_squares")
                return c.mb.reduce_sum(x=square, axes=[-1], keep_dims=True, name=f"{n}_{tag}")

            rows = squared_norms(x1, "rows")
            swap = [*range(x2.rank - 2), x2.rank - 1, x2.rank - 2]
            cols = c.mb.transpose(x=squared_norms(x2, "cols"), perm=swap, name=n + "_cols_t")
            dots = c.mb.matmul(x=x1, y=x2, transpose_y=True, name=n + "_dots")
            twice = c.mb.mul(x=dots, y=c.scalar(-2.0, like=dots), name=n + "_twice")
            norms = c.mb.add(x=rows, y=cols, name=n + "_norms")
            squared = c.mb.add(x=norms, y=twice, name=n + "_squared")
            return c.mb.sqrt(x=c.mb.relu(x=squared, name=n + "_clamped"), name=n)
        a = c.mb.expand_dims(x=x1, axes=[-2], name=n + "_a")  # (..., P, 1, M)
        b = c.mb.expand_dims(x=x2, axes=[-3], name=n + "_b")  # (..., 1, R, M)
        size = c.mb.abs(x=c.mb.sub(x=a, y=b, name=n + "_diff"), name=n + "_abs")
        return _p_norm(c, size, p, n)

    def check(node, generation):
        x1, x2 = (v.type for v in node.inputs)
        if x1.rank < 2 or x1.rank != x2.rank or not x1.dtype.startswith("float"):
            return "cdist of float matrices (or batches of them) of one rank"
        if node.attrs["p"] <= 0:
            return f"cdist with p={node.attrs['p']} (p > 0 lowers)"
        return None


def _p_norm(c, size: Any, p: float, name: str) -> Any:
    """The p-norm over the last axis of absolute differences ``size``."""
    if p == float("inf"):
        return c.mb.reduce_max(x=size, axes=[-1], keep_dims=False, name=name)
    if p == 1:
        return c.mb.reduce_sum(x=size, axes=[-1], keep_dims=False, name=name)
    if p == 2:
        return c.mb.reduce_l2_norm(x=size, axes=[-1], keep_dims=False, name=name)
    powers = c.mb.pow(x=size, y=c.scalar(p, like=size), name=name + "_pow")
    total = c.mb.reduce_sum(x=powers, axes=[-1], keep_dims=False, name=name + "_sum")
    return c.mb.pow(x=total, y=c.scalar(1.0 / p, like=size), name=name)


class Pdist(Op):
    """torch.pdist: the p-norm distance of every pair of rows i < j of an (N, M) matrix,
    in row-major order. Both rows of each pair are gathered by constant index lists and
    subtracted, as torch computes it (no matmul shortcut), for any p > 0."""

    name = "pdist"
    inputs = ("x",)
    attrs = {"p": 2.0}

    def kernel(x, *, p):
        return torch.pdist(x, p)

    def lower(c, x, *, p):
        first, second = np.triu_indices(x.shape[0], k=1)
        n = c.name
        a = c.mb.gather(x=x, indices=first.astype(np.int32), axis=0, name=n + "_first")
        b = c.mb.gather(x=x, indices=second.astype(np.int32), axis=0, name=n + "_second")
        size = c.mb.abs(x=c.mb.sub(x=a, y=b, name=n + "_diff"), name=n + "_abs")
        return _p_norm(c, size, p, n)

    def check(node, generation):
        x = node.inputs[0].type
        if x.rank != 2 or not x.is_static or not x.dtype.startswith("float"):
            return "pdist of a float matrix of static shape"
        if x.shape[0] < 2:
            return "pdist of fewer than two rows (no pairs)"
        if node.attrs["p"] <= 0:
            return f"pdist with p={node.attrs['p']} (p > 0 lowers)"
        return None


# aten's compute_mode codes and torch.cdist's names for them.
_CDIST_MODES = {
    0: "use_mm_for_euclid_dist_if_necessary",
    1: "use_mm_for_euclid_dist",
    2: "donot_use_mm_for_euclid_dist",
}


def _constant(var: Any) -> bool:
    """Whether Core ML sees a constant: MIL's linear and conv take weights of any kind
    but only a constant bias. Compressed weights (constexpr_* ops) are constants too; a
    model input has no producing op."""
    producer = var.op.op_type if var.op is not None else ""
    return var.val is not None or producer.startswith("constexpr_")


def _with_bias(c, conv, bias, **args: Any) -> Any:
    """A (transposed) convolution; a bias computed at run time is added after it."""
    if bias is None or _constant(bias):
        return conv(**args, bias=bias, name=c.name)
    y = conv(**args, name=c.name + "_conv")
    spatial = args["weight"].rank - 2
    per_channel = c.mb.reshape(x=bias, shape=[-1] + [1] * spatial, name=c.name + "_bias")
    return c.mb.add(x=y, y=per_channel, name=c.name)


class Linear(Op):
    """x @ weight.T + bias, weight (out, in)."""

    name = "linear"
    dynamic = True
    inputs = ("x", "weight", "bias?")
    accelerated = "matmul"

    def macs(node):
        return node.output.type.numel() * node.inputs[1].type.shape[-1]

    def kernel(x, weight, bias):
        return F.linear(x, weight, bias)

    def lower(c, x, weight, bias):
        # MIL's linear takes inputs of rank 1 to 3; beyond that a matmul with the
        # transposed weight computes the same thing.
        if x.rank <= 3 and _constant(weight) and (bias is None or _constant(bias)):
            return c.mb.linear(x=x, weight=weight, bias=bias, name=c.name)
        wt = c.mb.transpose(x=weight, perm=[1, 0], name=c.name + "_wt")
        if bias is None:
            return c.mb.matmul(x=x, y=wt, name=c.name)
        y = c.mb.matmul(x=x, y=wt, name=c.name + "_mm")
        return c.mb.add(x=y, y=bias, name=c.name)


class Addmm(Op):
    """beta * bias + alpha * (x @ y)"""

    name = "addmm"
    dynamic = True
    inputs = ("bias", "x", "y")
    attrs = {"beta": 1, "alpha": 1}
    accelerated = "matmul"

    def macs(node):
        return node.output.type.numel() * node.inputs[1].type.shape[-1]

    def kernel(bias, x, y, *, beta, alpha):
        return torch.addmm(bias, x, y, beta=beta, alpha=alpha)

    def lower(c, bias, x, y, *, beta, alpha):
        if beta != 1:
            bias = c.mb.mul(x=bias, y=c.scalar(beta, like=bias), name=c.name + "_beta")
        if alpha == 1 and y.val is not None and _constant(bias):
            wt = c.const_like(y.val.T, y)
            return c.mb.linear(x=x, weight=wt, bias=bias, name=c.name)
        prod = c.mb.matmul(x=x, y=y, name=c.name + "_mm")
        if alpha != 1:
            prod = c.mb.mul(x=prod, y=c.scalar(alpha, like=prod), name=c.name + "_alpha")
        return c.mb.add(x=prod, y=bias, name=c.name)


def _per_side(padding, n: int) -> bool:
    """True for padding given per side, [before0, after0, before1, after1, ...]."""
    return not isinstance(padding, str) and n > 0 and len(padding) == 2 * n


def _conv_padding(padding, weight_shape, dilation, n):
    """Explicit (before, after) pads per spatial dim; 'same' puts the odd pad after, as torch."""
    if _per_side(padding, n):
        return [(padding[2 * i], padding[2 * i + 1]) for i in range(n)]
    if padding == "valid":
        return [(0, 0)] * n
    if padding == "same":
        pads = []
        for k, d in zip(weight_shape[2:], dilation, strict=True):
            total = d * (k - 1)
            pads.append((total // 2, total - total // 2))
        return pads
    return [(p, p) for p in as_tuple(padding, n)]


class Conv(Op):
    """N-d convolution (conv1d/conv2d/conv3d): weight (out, in/groups, *kernel).

    ``padding`` is a list of ints or "same"/"valid", as torch takes it, or one pair per
    spatial dim, [before0, after0, before1, after1, ...], for padding that differs
    between the sides (ONNX's asymmetric pads; Core ML's conv takes it as it is).
    """

    name = "conv"
    dynamic = True
    inputs = ("x", "weight", "bias?")
    attrs = {"stride": [1], "padding": [0], "dilation": [1], "groups": 1}
    accelerated = "convolution"

    def macs(node):
        weight = node.inputs[1].type
        return node.output.type.numel() * weight.numel() // weight.shape[0]

    def kernel(x, weight, bias, *, stride, padding, dilation, groups):
        n = weight.dim() - 2
        fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[n]
        if _per_side(padding, n):
            pairs = [padding[i : i + 2] for i in range(0, 2 * n, 2)]
            x = F.pad(x, [p for pair in reversed(pairs) for p in pair])
            padding = [0] * n
        pad = padding if isinstance(padding, str) else as_tuple(padding, n)
        return fn(x, weight, bias, as_tuple(stride, n), pad, as_tuple(dilation, n), groups)

    def lower(c, x, weight, bias, *, stride, padding, dilation, groups):
        n = weight.rank - 2
        dil = as_tuple(dilation, n)
        pads = _conv_padding(padding, weight.shape, dil, n)
        return _with_bias(
            c,
            c.mb.conv,
            bias,
            x=x,
            weight=weight,
            strides=list(as_tuple(stride, n)),
            pad_type="custom",
            pad=[p for pair in pads for p in pair],
            dilations=list(dil),
            groups=groups,
        )

    def check(node, generation):
        if node.inputs[1].type.rank - 2 not in (1, 2, 3):
            return "only 1-d, 2-d and 3-d convolutions"
        return None


class ConvTranspose(Op):
    """N-d transposed convolution: weight (in, out/groups, *kernel), as torch stores it."""

    name = "conv_transpose"
    inputs = ("x", "weight", "bias?")
    attrs = {"stride": [1], "padding": [0], "output_padding": [0], "groups": 1, "dilation": [1]}
    accelerated = "convolution"
    # Sizes come from the input at run time; output_padding then crops a full output.
    dynamic = True

    def macs(node):
        weight = node.inputs[1].type  # (in, out/groups, *kernel)
        return node.inputs[0].type.numel() * weight.numel() // weight.shape[0]

    def kernel(x, weight, bias, *, stride, padding, output_padding, groups, dilation):
        n = weight.dim() - 2
        fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[n]
        return fn(
            x,
            weight,
            bias,
            as_tuple(stride, n),
            as_tuple(padding, n),
            as_tuple(output_padding, n),
            groups,
            as_tuple(dilation, n),
        )

    def lower(c, x, weight, bias, *, stride, padding, output_padding, groups, dilation):
        n = weight.rank - 2
        pads = as_tuple(padding, n)
        extra = as_tuple(output_padding, n)
        common = {
            "x": x,
            "weight": weight,
            "bias": bias,
            "strides": list(as_tuple(stride, n)),
            "pad_type": "custom",
            "dilations": list(as_tuple(dilation, n)),
            "groups": groups,
        }
        if not any(extra):
            pad = [p for p in pads for _ in range(2)]
            return c.mb.conv_transpose(**common, pad=pad, name=c.name)
        out = c.node.output.type
        if out.is_static:
            # The extra rows/columns are only expressible through an explicit output shape.
            pad = [p for p in pads for _ in range(2)]
            return c.mb.conv_transpose(**common, pad=pad, output_shape=list(out.shape), name=c.name)
        # A const output shape cannot follow dynamic sizes: crop the full output instead,
        # ``padding`` rows before and ``padding - output_padding`` after (as coremltools).
        full = c.mb.conv_transpose(**common, pad=[0] * (2 * n), name=c.name + "_full")
        lead = [0] * (x.rank - n)
        after = [p - e for p, e in zip(pads, extra, strict=True)]
        return c.mb.slice_by_index(
            x=full,
            begin=lead + list(pads),
            end=lead + [-a for a in after],
            end_mask=[True] * len(lead) + [a == 0 for a in after],
            name=c.name,
        )

    def check(node, generation):
        if node.inputs[1].type.rank - 2 not in (1, 2, 3):
            return "only 1-d, 2-d and 3-d transposed convolutions"
        if not node.inputs[1].is_constant:
            return "transposed convolution needs a constant weight"
        if node.inputs[2] is not None and not node.inputs[2].is_constant:
            return "transposed convolution needs a constant bias"
        n = node.inputs[1].type.rank - 2
        pads, extra = as_tuple(node.attrs["padding"], n), as_tuple(node.attrs["output_padding"], n)
        if not node.output.type.is_static and any(e > p for p, e in zip(pads, extra, strict=True)):
            return (
                "output_padding beyond padding with dynamic sizes: the rows it adds past the "
                "full output need an output shape known before the run"
            )
        return None


class Embedding(Op):
    """weight[indices]: a row look-up."""

    name = "embedding"
    dynamic = True
    inputs = ("weight", "indices")
    attrs = {"padding_idx": -1}

    def kernel(weight, indices, *, padding_idx):
        return F.embedding(indices, weight)

    def lower(c, weight, indices, *, padding_idx):
        return c.mb.gather(x=weight, indices=indices, axis=0, name=c.name)


class EmbeddingBag(Op):
    """nn.EmbeddingBag: per bag, the sum, mean or max of the rows its indices pick. Bag b
    holds the index positions from offsets[b] up to the next offset; a (bags, indices)
    membership matrix turns the sum into one matmul, so offsets may come at run time.
    Empty bags give zeros, as in torch; indices equal to ``padding_idx`` count for none."""

    name = "embedding_bag"
    inputs = ("weight", "indices", "offsets", "per_sample_weights?")
    attrs = {"mode": 0, "include_last_offset": False, "padding_idx": None}

    def kernel(
        weight, indices, offsets, per_sample_weights, *, mode, include_last_offset, padding_idx
    ):
        return torch.ops.aten.embedding_bag.padding_idx(
            weight, indices, offsets, False, mode, False, per_sample_weights,
            include_last_offset, padding_idx,
        )[0]  # fmt: skip

    def lower(
        c, weight, indices, offsets, per_sample_weights, *, mode, include_last_offset, padding_idx
    ):
        count = c.node.inputs[1].type.shape[0]
        idx = as_int32(c, indices, "idx")
        rows = c.mb.gather(x=weight, indices=idx, axis=0, name=c.name + "_rows")
        if per_sample_weights is not None:
            scale = c.mb.expand_dims(x=per_sample_weights, axes=[1], name=c.name + "_scale")
            rows = c.mb.mul(x=rows, y=scale, name=c.name + "_weighted")
        off = as_int32(c, offsets, "off")
        later = c.mb.slice_by_index(
            x=off, begin=[1], end=[0], end_mask=[True], name=c.name + "_next"
        )
        if include_last_offset:
            starts = c.mb.slice_by_index(x=off, begin=[0], end=[-1], name=c.name + "_starts")
            ends = later
        else:
            starts = off
            last = np.array([count], dtype=np.int32)
            ends = c.mb.concat(values=[later, last], axis=0, name=c.name + "_ends")
        positions = np.arange(count, dtype=np.int32)[None, :]
        column = {"axes": [1]}
        after_start = c.mb.greater_equal(
            x=positions,
            y=c.mb.expand_dims(x=starts, **column, name=c.name + "_s"),
            name=c.name + "_ge",
        )
        before_end = c.mb.less(
            x=positions,
            y=c.mb.expand_dims(x=ends, **column, name=c.name + "_e"),
            name=c.name + "_lt",
        )
        inside = c.mb.logical_and(x=after_start, y=before_end, name=c.name + "_in")
        if padding_idx is not None and padding_idx >= 0:  # -1: none (the aten default)
            kept = c.mb.not_equal(x=idx, y=np.int32(padding_idx), name=c.name + "_kept")
            inside = c.mb.logical_and(x=inside, y=kept, name=c.name + "_member")
        member = c.mb.cast(x=inside, dtype=c.mil_dtype_of(rows), name=c.name + "_w")
        if mode == 2:
            spread = c.mb.expand_dims(x=inside, axes=[2], name=c.name + "_in3")
            masked = c.mb.select(
                cond=spread, a=c.mb.expand_dims(x=rows, axes=[0], name=c.name + "_rows3"),
                b=c.lowest(like=rows), name=c.name + "_masked",
            )  # fmt: skip
            largest = c.mb.reduce_max(x=masked, axes=[1], keep_dims=False, name=c.name + "_max")
            sizes = c.mb.reduce_sum(x=member, axes=[1], keep_dims=True, name=c.name + "_sizes")
            filled = c.mb.greater(x=sizes, y=c.scalar(0.0, like=rows), name=c.name + "_filled")
            return c.mb.select(cond=filled, a=largest, b=c.scalar(0.0, like=rows), name=c.name)
        if mode == 0:
            return c.mb.matmul(x=member, y=rows, name=c.name)
        total = c.mb.matmul(x=member, y=rows, name=c.name + "_sum")
        sizes = c.mb.reduce_sum(x=member, axes=[1], keep_dims=True, name=c.name + "_sizes")
        at_least_one = c.mb.maximum(x=sizes, y=c.scalar(1.0, like=rows), name=c.name + "_n")
        return c.mb.real_div(x=total, y=at_least_one, name=c.name)

    def check(node, generation):
        weight, indices, offsets = node.inputs[:3]
        if indices.type.rank != 1 or not indices.type.is_static or not offsets.type.is_static:
            return "embedding_bag with dynamic or 2-d indices (export flattens 2-d inputs)"
        if not weight.type.dtype.startswith("float"):
            return f"embedding_bag of a {weight.type.dtype} table"
        return None
