"""Ops that move data without computing on it: reshape, transpose, slice, concat, pad..."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from coreml_compile.compiler.ops import Op
from coreml_compile.compiler.ops._helpers import normalize_axes


class Reshape(Op):
    """x with a new ``shape`` (one entry may be -1)."""

    name = "reshape"
    inputs = ("x",)
    attrs = {"shape": []}

    def kernel(x, *, shape):
        return torch.reshape(x, list(shape))

    def lower(c, x, *, shape):
        return c.mb.reshape(x=x, shape=list(c.node.output.type.shape), name=c.name)


class Flatten(Op):
    """Merge dims ``start_dim``..``end_dim`` into one."""

    name = "flatten"
    inputs = ("x",)
    attrs = {"start_dim": 0, "end_dim": -1}

    def kernel(x, *, start_dim, end_dim):
        return torch.flatten(x, start_dim, end_dim)

    def lower(c, x, *, start_dim, end_dim):
        return c.mb.reshape(x=x, shape=list(c.node.output.type.shape), name=c.name)


class Permute(Op):
    name = "permute"
    inputs = ("x",)
    attrs = {"dims": []}

    def kernel(x, *, dims):
        return torch.permute(x, list(dims))

    def lower(c, x, *, dims):
        return c.mb.transpose(x=x, perm=[d % x.rank for d in dims], name=c.name)


class Transpose(Op):
    """Swap two dims."""

    name = "transpose"
    inputs = ("x",)
    attrs = {"dim0": 0, "dim1": 1}

    def kernel(x, *, dim0, dim1):
        return torch.transpose(x, dim0, dim1)

    def lower(c, x, *, dim0, dim1):
        perm = list(range(x.rank))
        a, b = dim0 % x.rank, dim1 % x.rank
        perm[a], perm[b] = perm[b], perm[a]
        return c.mb.transpose(x=x, perm=perm, name=c.name)


class Squeeze(Op):
    """Drop size-1 dims: those in ``dim`` (an int or a list), or all when it is None."""

    name = "squeeze"
    inputs = ("x",)
    attrs = {"dim": None}

    def kernel(x, *, dim):
        if dim is None:
            return torch.squeeze(x)
        return torch.squeeze(x, dim if isinstance(dim, int) else tuple(dim))

    def lower(c, x, *, dim):
        axes = [a for a in normalize_axes(dim, x.rank) if x.shape[a] == 1]
        if not axes:
            return c.mb.identity(x=x, name=c.name)
        return c.mb.squeeze(x=x, axes=axes, name=c.name)


class Unsqueeze(Op):
    name = "unsqueeze"
    inputs = ("x",)
    attrs = {"dim": 0}

    def kernel(x, *, dim):
        return torch.unsqueeze(x, dim)

    def lower(c, x, *, dim):
        return c.mb.expand_dims(x=x, axes=[dim % (x.rank + 1)], name=c.name)


class Cat(Op):
    name = "cat"
    inputs = ("*tensors",)
    attrs = {"dim": 0}

    def kernel(tensors, *, dim):
        return torch.cat(list(tensors), dim)

    def lower(c, tensors, *, dim):
        tensors = c.promote(*tensors)
        if len(tensors) == 1:
            return c.mb.identity(x=tensors[0], name=c.name)
        return c.mb.concat(values=list(tensors), axis=dim, interleave=False, name=c.name)


class Slice(Op):
    """x[start:end:step] along ``dim``; start/end clamp as in Python."""

    name = "slice"
    inputs = ("x",)
    attrs = {"dim": 0, "start": None, "end": None, "step": 1}

    def kernel(x, *, dim, start, end, step):
        return torch.ops.aten.slice(x, dim, start, end, step)

    def lower(c, x, *, dim, start, end, step):
        axis = dim % x.rank
        size = x.shape[axis]
        begin_idx, end_idx, _ = slice(start, end, step).indices(size)
        begin = [0] * x.rank
        stop = list(x.shape)
        stride = [1] * x.rank
        begin[axis], stop[axis], stride[axis] = begin_idx, max(end_idx, begin_idx), step
        return c.mb.slice_by_index(x=x, begin=begin, end=stop, stride=stride, name=c.name)

    def check(node, generation):
        return "slice with step < 1" if node.attrs["step"] < 1 else None


class Select(Op):
    """x[..., index, ...] along ``dim``, dropping that dim."""

    name = "select"
    inputs = ("x",)
    attrs = {"dim": 0, "index": 0}

    def kernel(x, *, dim, index):
        return torch.select(x, dim, index)

    def lower(c, x, *, dim, index):
        axis = dim % x.rank
        i = index % x.shape[axis]
        begin = [0] * x.rank
        end = list(x.shape)
        begin[axis], end[axis] = i, i + 1
        squeeze = [a == axis for a in range(x.rank)]
        return c.mb.slice_by_index(x=x, begin=begin, end=end, squeeze_mask=squeeze, name=c.name)


class Expand(Op):
    """Broadcast x to ``size`` (-1 keeps a dim)."""

    name = "expand"
    inputs = ("x",)
    attrs = {"size": []}

    def kernel(x, *, size):
        return x.expand(list(size))

    def lower(c, x, *, size):
        out = list(c.node.output.type.shape)
        if x.rank < len(out):
            x = c.mb.reshape(
                x=x, shape=[1] * (len(out) - x.rank) + list(x.shape), name=c.name + "_lift"
            )
        reps = [o if i == 1 else 1 for i, o in zip(x.shape, out, strict=True)]
        if all(r == 1 for r in reps):
            return c.mb.identity(x=x, name=c.name)
        return c.mb.tile(x=x, reps=reps, name=c.name)


class Pad(Op):
    """torch.nn.functional.pad: ``pad`` lists (before, after) pairs from the last dim back."""

    name = "pad"
    inputs = ("x",)
    attrs = {"pad": [], "mode": "constant", "value": None}

    def kernel(x, *, pad, mode, value):
        if mode == "constant":
            return F.pad(x, list(pad), mode, 0.0 if value is None else value)
        return F.pad(x, list(pad), mode)

    def lower(c, x, *, pad, mode, value):
        pairs = [(pad[i], pad[i + 1]) for i in range(0, len(pad), 2)]
        full = [(0, 0)] * (x.rank - len(pairs)) + pairs[::-1]
        kwargs = {"constant_val": c.scalar(value or 0.0, like=x)} if mode == "constant" else {}
        mil_mode = {"constant": "constant", "reflect": "reflect", "replicate": "replicate"}[mode]
        return c.mb.pad(
            x=x, pad=[p for pair in full for p in pair], mode=mil_mode, name=c.name, **kwargs
        )

    def check(node, generation):
        pad, mode = node.attrs["pad"], node.attrs["mode"]
        if mode not in ("constant", "reflect", "replicate"):
            return f"pad mode {mode!r} has no Core ML equivalent"
        if any(p < 0 for p in pad):
            return "negative padding (cropping) is not lowered"
        if mode != "constant" and len(pad) > 4:
            return f"{mode} padding of more than the last two dims"
        return None
