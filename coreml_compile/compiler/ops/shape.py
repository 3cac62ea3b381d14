"""Ops that move data without computing on it: reshape, transpose, slice, concat, pad..."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from coreml_compile.compiler import symbolic
from coreml_compile.compiler.ops import REQUIRED, Op
from coreml_compile.compiler.ops._helpers import normalize_axes, pad_exactly


class Reshape(Op):
    """x with a new ``shape`` (one entry may be -1)."""

    name = "reshape"
    inputs = ("x",)
    attrs = {"shape": []}

    dynamic = True

    def kernel(x, *, shape):
        return torch.reshape(x, list(shape))

    def lower(c, x, *, shape):
        return c.mb.reshape(x=x, shape=c.sizes(c.node.output.type.shape), name=c.name)


class Flatten(Op):
    """Merge dims ``start_dim``..``end_dim`` into one."""

    name = "flatten"
    inputs = ("x",)
    attrs = {"start_dim": 0, "end_dim": -1}

    dynamic = True

    def kernel(x, *, start_dim, end_dim):
        return torch.flatten(x, start_dim, end_dim)

    def lower(c, x, *, start_dim, end_dim):
        return c.mb.reshape(x=x, shape=c.sizes(c.node.output.type.shape), name=c.name)


class Permute(Op):
    name = "permute"
    inputs = ("x",)
    attrs = {"dims": []}
    dynamic = True

    def kernel(x, *, dims):
        return torch.permute(x, list(dims))

    def lower(c, x, *, dims):
        return c.mb.transpose(x=x, perm=[d % x.rank for d in dims], name=c.name)


class Transpose(Op):
    """Swap two dims."""

    name = "transpose"
    inputs = ("x",)
    attrs = {"dim0": 0, "dim1": 1}
    dynamic = True

    def kernel(x, *, dim0, dim1):
        return torch.transpose(x, dim0, dim1)

    def lower(c, x, *, dim0, dim1):
        if x.rank < 2:  # torch.t of a scalar or a vector: nothing moves
            return c.mb.identity(x=x, name=c.name)
        perm = list(range(x.rank))
        a, b = dim0 % x.rank, dim1 % x.rank
        perm[a], perm[b] = perm[b], perm[a]
        return c.mb.transpose(x=x, perm=perm, name=c.name)


class Squeeze(Op):
    """Drop size-1 dims: those in ``dim`` (an int or a list), or all when it is None."""

    name = "squeeze"
    inputs = ("x",)
    attrs = {"dim": None}
    dynamic = True

    def kernel(x, *, dim):
        if dim is None:
            return torch.squeeze(x)
        return torch.squeeze(x, dim if isinstance(dim, int) else tuple(dim))

    def lower(c, x, *, dim):
        # An empty dim list squeezes nothing (where reductions read it as every axis).
        axes = [] if dim == [] or dim == () else normalize_axes(dim, x.rank)
        axes = [a for a in axes if x.shape[a] == 1]
        if not axes:
            return c.mb.identity(x=x, name=c.name)
        return c.mb.squeeze(x=x, axes=axes, name=c.name)


class RepeatInterleave(Op):
    """Each entry repeated ``repeats`` times in a row along ``dim`` (of the flattened x
    when None): a new axis after ``dim``, tiled, merged back (grouped-query attention's
    key/value heads)."""

    name = "repeat_interleave"
    inputs = ("x",)
    attrs = {"repeats": REQUIRED, "dim": None, "output_size": None}
    dynamic = True

    def kernel(x, *, repeats, dim, output_size):
        return torch.repeat_interleave(x, repeats, dim)

    def lower(c, x, *, repeats, dim, output_size):
        if dim is None:
            x = c.mb.reshape(x=x, shape=[-1], name=c.name + "_flat")
        axis = 0 if dim is None else dim % x.rank
        spread = c.mb.expand_dims(x=x, axes=[axis + 1], name=c.name + "_axis")
        reps = [1] * (x.rank + 1)
        reps[axis + 1] = repeats
        tiled = c.mb.tile(x=spread, reps=reps, name=c.name + "_tiled")
        shape = c.sizes(c.node.output.type.shape)
        return c.mb.reshape(x=tiled, shape=shape, name=c.name)

    def check(node, generation):
        repeats, x = node.attrs["repeats"], node.inputs[0].type
        if not isinstance(repeats, int):
            return "repeat_interleave by a count computed at run time"
        if x.rank >= 5 and node.attrs["dim"] is not None:
            return "repeat_interleave of a rank-5 tensor (its middle step has rank 6)"
        return None


class Unfold(Op):
    """Tensor.unfold: the windows of ``size`` entries every ``step`` along ``dimension``,
    counted along it, with each window's entries on a new last axis. One gather of a
    constant (windows, size) index, then the window axis moved last."""

    name = "unfold"
    inputs = ("x",)
    attrs = {"dimension": REQUIRED, "size": REQUIRED, "step": REQUIRED}
    dynamic = True  # other axes may be dynamic; the check wants the unfolded one static

    def kernel(x, *, dimension, size, step):
        return x.unfold(dimension, size, step)

    def lower(c, x, *, dimension, size, step):
        axis = dimension % x.rank
        windows = (x.shape[axis] - size) // step + 1
        index = np.arange(windows)[:, None] * step + np.arange(size)[None, :]
        last = axis == x.rank - 1
        picked = c.mb.gather(
            x=x,
            indices=index.astype(np.int32),
            axis=axis,
            name=c.name if last else c.name + "_windows",
        )
        if last:
            return picked
        order = [a for a in range(x.rank + 1) if a != axis + 1] + [axis + 1]
        return c.mb.transpose(x=picked, perm=order, name=c.name)

    def check(node, generation):
        x = node.inputs[0].type
        if x.rank == 0:
            return "unfold of a scalar"
        if not isinstance(x.shape[node.attrs["dimension"] % x.rank], int):
            return "unfold along a dynamic dimension (the window count would change)"
        return None


class Unsqueeze(Op):
    name = "unsqueeze"
    inputs = ("x",)
    attrs = {"dim": 0}
    dynamic = True

    def kernel(x, *, dim):
        return torch.unsqueeze(x, dim)

    def lower(c, x, *, dim):
        return c.mb.expand_dims(x=x, axes=[dim % (x.rank + 1)], name=c.name)


class Cat(Op):
    """torch.cat along ``dim``; with ``interleave`` (as MIL's concat: inputs of one shape)
    the inputs' slices alternate instead: [a0, b0, a1, b1, ...] (passes/fuse_channel_shuffle.py)."""

    name = "cat"
    inputs = ("*tensors",)
    attrs = {"dim": 0, "interleave": False}
    dynamic = True

    def kernel(tensors, *, dim, interleave=False):
        if interleave and len(tensors) > 1:
            axis = dim % tensors[0].dim()
            return torch.stack(list(tensors), axis + 1).flatten(axis, axis + 1)
        return torch.cat(list(tensors), dim)

    def lower(c, tensors, *, dim, interleave=False):
        tensors = c.promote(*tensors)
        if len(tensors) == 1:
            return c.mb.identity(x=tensors[0], name=c.name)
        axis = dim % tensors[0].rank if interleave else dim
        return c.mb.concat(values=list(tensors), axis=axis, interleave=interleave, name=c.name)


class Slice(Op):
    """x[start:end:step] along ``dim``; start/end clamp as in Python."""

    name = "slice"
    inputs = ("x",)
    attrs = {"dim": 0, "start": None, "end": None, "step": 1}

    def kernel(x, *, dim, start, end, step):
        return torch.ops.aten.slice(x, dim, start, end, step)

    dynamic = True

    def lower(c, x, *, dim, start, end, step):
        bounds = _slice_lists(c, x, dim, start, end, step)
        axis = dim % x.rank
        run_time = any(not isinstance(b, int) for b in bounds["begin"] + bounds["end"])
        if step == 1 and run_time:
            # Run-time bounds: slice_by_size, whose size (the output's length, -1 for
            # whole axes) keeps the dynamic sizes' symbols in coremltools' types, where
            # slice_by_index's would make new ones (see _slice_lists).
            length = c.node.output.type.shape[axis]
            size = [length if a == axis else -1 for a in range(x.rank)]
            begin = c.sizes(bounds["begin"])
            return c.mb.slice_by_size(x=x, begin=begin, size=c.sizes(size), name=c.name)
        return c.mb.slice_by_index(x=x, **_slice_bounds(c, bounds), name=c.name)

    def check(node, generation):
        return _slice_check(node, "slice")


def _slice_lists(c, x, dim, start, end, step):
    """MIL's begin, end, stride and masks for x[start:end:step] along ``dim`` of the
    node's first input, as lists whose bounds along a dynamic dimension are sizes
    (Exprs) to compute at run time (:func:`_slice_bounds` makes them MIL values).

    The other axes are whole: masked at both ends, so coremltools keeps their dynamic
    sizes' symbols (with begin 0 unmasked it makes new ones, and every later reshape
    then solves for them with sympy, milliseconds each)."""
    axis = dim % x.rank
    size = c.node.inputs[0].type.shape[axis]
    begin = [0] * x.rank
    stop = [0] * x.rank
    stride = [1] * x.rank
    end_mask = [True] * x.rank
    begin_mask = [a != axis for a in range(x.rank)]
    if isinstance(size, int) and not any(isinstance(b, str) for b in (start, end)):
        begin_idx, end_idx, _ = slice(start, end, step).indices(size)
        begin[axis], stop[axis] = begin_idx, max(end_idx, begin_idx)
        end_mask[axis] = False
    else:
        # Along a dynamic dimension, or up to a dynamic size, bounds are sizes (Exprs)
        # or non-negative ints (_slice_check), and torch checked them against the dim.
        begin[axis] = start or 0
        if end is not None and not (isinstance(end, int) and end >= 2**62):
            stop[axis] = end
            end_mask[axis] = False
    stride[axis] = step
    return {
        "begin": begin,
        "end": stop,
        "stride": stride,
        "begin_mask": begin_mask,
        "end_mask": end_mask,
    }


def _slice_bounds(c, bounds):
    """``_slice_lists``' bounds as MIL values (an int32 vector where some are dynamic)."""
    return {**bounds, "begin": c.sizes(bounds["begin"]), "end": c.sizes(bounds["end"])}


def _slice_check(node, label):
    attrs, x = node.attrs, node.inputs[0].type
    if attrs["step"] < 1:
        return f"{label} with step < 1"
    size = x.shape[attrs["dim"] % x.rank]
    smallest = symbolic.minimum(size)
    # A bound counted from the end holds for every length at least its size; torch
    # would clamp it on shorter ones, where Core ML would not.
    if not isinstance(size, int) and any(
        isinstance(b, int) and b < 0 and (smallest is None or -b > smallest)
        for b in (attrs["start"], attrs["end"])
    ):
        return "negative slice bounds along a dynamic dimension that can be shorter"
    return None


class Select(Op):
    """x[..., index, ...] along ``dim``, dropping that dim."""

    name = "select"
    inputs = ("x",)
    attrs = {"dim": 0, "index": 0}

    def kernel(x, *, dim, index):
        return torch.select(x, dim, index)

    dynamic = True

    def lower(c, x, *, dim, index):
        axis = dim % x.rank
        size = c.node.inputs[0].type.shape[axis]
        i = index % size if isinstance(size, int) else index
        begin = [0] * x.rank
        end = [0] * x.rank
        begin[axis], end[axis] = i, i + 1
        whole = [a != axis for a in range(x.rank)]  # masked at both ends: see _slice_lists
        squeeze = [a == axis for a in range(x.rank)]
        return c.mb.slice_by_index(
            x=x,
            begin=begin,
            end=end,
            begin_mask=whole,
            end_mask=whole,
            squeeze_mask=squeeze,
            name=c.name,
        )

    def check(node, generation):
        x = node.inputs[0].type
        if node.attrs["index"] < 0 and not isinstance(x.shape[node.attrs["dim"] % x.rank], int):
            return "a negative index along a dynamic dimension"
        return None


class Expand(Op):
    """Broadcast x to ``size`` (-1 keeps a dim)."""

    name = "expand"
    inputs = ("x",)
    attrs = {"size": []}

    def kernel(x, *, size):
        return x.expand(list(size))

    dynamic = True

    def lower(c, x, *, size):
        return _broadcast_to(c, x, c.node.inputs[0].type.shape, c.node.output.type.shape, c.name)


def _broadcast_to(c, x, dims, out, name):
    """``x`` (of IR dims ``dims``) broadcast to ``out``: leading axes added, then each
    size-1 axis tiled; a dynamic target size is computed at run time."""
    from coreml_compile.compiler import symbolic

    dims, out = list(dims), list(out)
    if x.rank < len(out):
        lift = len(out) - x.rank
        x = c.mb.expand_dims(x=x, axes=list(range(lift)), name=name + "_lift")
        dims = [1] * lift + dims
    reps = [1 if symbolic.equal(d, o) else o for d, o in zip(dims, out, strict=True)]
    if all(r == 1 for r in reps):
        return c.mb.identity(x=x, name=name)
    return c.mb.tile(x=x, reps=c.sizes(reps), name=name)


def _pad_circular(c, x, full: list[tuple[int, int]]) -> Any:
    """Circular padding: each padded axis wrapped around, its last ``before`` entries put
    in front and its first ``after`` behind (slices from the ends: sizes may be dynamic)."""
    padded = [a for a, pair in enumerate(full) if any(pair)]
    if not padded:
        return c.mb.identity(x=x, name=c.name)

    def cut(v, axis, start, end, name):
        # Each axis is padded once, so its size is still the node input's (_slice_lists).
        bounds = _slice_bounds(c, _slice_lists(c, v, axis, start, end, 1))
        return c.mb.slice_by_index(x=v, **bounds, name=name)

    for a in padded:
        before, after = full[a]
        tail = cut(x, a, -before, None, f"{c.name}_tail{a}") if before else None
        head = cut(x, a, 0, after, f"{c.name}_head{a}") if after else None
        name = c.name if a == padded[-1] else f"{c.name}_wrapped{a}"
        x = c.mb.concat(values=[v for v in (tail, x, head) if v is not None], axis=a, name=name)
    return x


class Pad(Op):
    """torch.nn.functional.pad: ``pad`` lists (before, after) pairs from the last dim back."""

    name = "pad"
    inputs = ("x",)
    attrs = {"pad": [], "mode": "constant", "value": None}
    # Crops count from the ends, and amounts computed from dynamic sizes are applied at
    # run time (_pad_at_run_time): no static size is read.
    dynamic = True

    def kernel(x, *, pad, mode, value):
        if mode == "constant":
            return F.pad(x, list(pad), mode, 0.0 if value is None else value)
        return F.pad(x, list(pad), mode)

    def lower(c, x, *, pad, mode, value):
        pairs = [(pad[i], pad[i + 1]) for i in range(0, len(pad), 2)]
        full = [(0, 0)] * (x.rank - len(pairs)) + pairs[::-1]
        if symbolic.has_expr(pad):
            return _pad_at_run_time(c, x, full, value)
        if any(p < 0 for pair in full for p in pair):
            # Negative padding crops: slice the cropped sides off, then pad the others.
            # The end counts back from each axis's end, so the axis may be dynamic.
            begin = [max(0, -before) for before, _ in full]
            end = [min(0, after) for _, after in full]
            full = [(max(0, before), max(0, after)) for before, after in full]
            done = not any(p for pair in full for p in pair)
            x = c.mb.slice_by_index(
                x=x,
                begin=begin,
                end=end,
                end_mask=[e == 0 for e in end],
                name=c.name if done else c.name + "_crop",
            )
            if done:
                return x
        if mode == "circular":
            return _pad_circular(c, x, full)
        if not c.mil_dtype_of(x).startswith("fp"):
            return pad_exactly(c, x, full, mode, value, c.name)
        kwargs = {"constant_val": c.scalar(value or 0.0, like=x)} if mode == "constant" else {}
        mil_mode = {"constant": "constant", "reflect": "reflect", "replicate": "replicate"}[mode]
        return c.mb.pad(
            x=x, pad=[p for pair in full for p in pair], mode=mil_mode, name=c.name, **kwargs
        )

    def check(node, generation):
        pad, mode = node.attrs["pad"], node.attrs["mode"]
        if mode not in ("constant", "reflect", "replicate", "circular"):
            return f"pad mode {mode!r} has no Core ML equivalent"
        x = node.inputs[0].type
        needs_gathers = mode != "circular" and not x.dtype.startswith("float")
        if needs_gathers and (not x.is_static or symbolic.has_expr(pad)):
            # MIL's pad takes floats only; other tensors are padded by static gathers.
            return f"padding a {x.dtype} tensor of dynamic shape or by dynamic amounts"
        if symbolic.has_expr(pad):
            if mode != "constant":
                return f"{mode} padding by amounts computed from dynamic sizes"
            return None
        if any(p < 0 for p in pad) and mode != "constant":
            return f"negative {mode} padding"
        if mode in ("reflect", "replicate") and len(pad) > 4:
            return f"{mode} padding of more than the last two dims"
        return None


def _pad_at_run_time(c, x, full, value):
    """Constant padding by (before, after) amounts of which some are computed from dynamic
    sizes at run time. Their signs are not known here, so each side is cropped by its
    negative part (a slice) and padded by its positive part (MIL's pad takes a run-time
    vector of every axis's amounts)."""
    amounts = c.sizes([p for pair in full for p in pair])
    zeros = np.zeros(2 * x.rank, dtype=np.int32)
    grow = c.mb.maximum(x=amounts, y=zeros, name=c.name + "_grow")
    shrink = c.mb.maximum(x=c.mb.sub(x=zeros, y=amounts), y=zeros, name=c.name + "_shrink")
    before = c.mb.gather(x=shrink, indices=np.arange(0, 2 * x.rank, 2, dtype=np.int32), axis=0)
    after = c.mb.gather(x=shrink, indices=np.arange(1, 2 * x.rank, 2, dtype=np.int32), axis=0)
    end = c.mb.sub(x=c.mb.shape(x=x), y=after, name=c.name + "_end")
    cropped = c.mb.slice_by_index(x=x, begin=before, end=end, name=c.name + "_crop")
    return c.mb.pad(
        x=cropped,
        pad=grow,
        mode="constant",
        constant_val=c.scalar(value or 0.0, like=x),
        name=c.name,
    )


# -- splitting, joining, reordering ------------------------------------------------------

# The number of pieces of a split is the call's: the frontend keeps as many as it returns.
_ANY_NUMBER = 1 << 16


def _no_empty_outputs(node):
    for v in node.outputs:
        if 0 in v.type.shape:
            return f"empty output {v.name} (Core ML has no zero-size tensors)"
    return None


def _split_check(node):
    x = node.inputs[0].type
    if not isinstance(x.shape[node.attrs["dim"] % x.rank], int):
        # The pieces' sizes are baked into MIL's split; other dims may vary.
        return "a split along a dynamic dimension"
    return _no_empty_outputs(node)


def _lower_pieces(c, x, dim):
    """MIL split into the node's outputs along ``dim`` (their sizes are known statically)."""
    axis = dim % x.rank
    sizes = [v.type.shape[axis] for v in c.node.outputs]
    if len(sizes) == 1:
        return c.mb.identity(x=x, name=c.name)
    return tuple(c.mb.split(x=x, split_sizes=sizes, axis=axis, name=c.name))


class Split(Op):
    """torch.split: pieces of ``split_size`` (the last may be smaller), or of the listed sizes."""

    name = "split"
    inputs = ("x",)
    dynamic = True
    attrs = {"split_size": REQUIRED, "dim": 0}
    num_outputs = _ANY_NUMBER

    def kernel(x, *, split_size, dim):
        size = split_size if isinstance(split_size, int) else list(split_size)
        return tuple(torch.split(x, size, dim))

    def lower(c, x, *, split_size, dim):
        return _lower_pieces(c, x, dim)

    def check(node, generation):
        return _split_check(node)


class Chunk(Op):
    """torch.chunk: at most ``chunks`` pieces of ceil(size / chunks)."""

    name = "chunk"
    inputs = ("x",)
    dynamic = True
    attrs = {"chunks": REQUIRED, "dim": 0}
    num_outputs = _ANY_NUMBER

    def kernel(x, *, chunks, dim):
        return tuple(torch.chunk(x, chunks, dim))

    def lower(c, x, *, chunks, dim):
        return _lower_pieces(c, x, dim)

    def check(node, generation):
        return _split_check(node)


class TensorSplit(Op):
    """torch.tensor_split: ``sections`` near-equal pieces, or cut before each of ``indices``."""

    name = "tensor_split"
    inputs = ("x",)
    dynamic = True
    attrs = {"sections": None, "indices": None, "dim": 0}
    num_outputs = _ANY_NUMBER

    def kernel(x, *, sections, indices, dim):
        how = sections if sections is not None else list(indices)
        return tuple(torch.tensor_split(x, how, dim))

    def lower(c, x, *, sections, indices, dim):
        return _lower_pieces(c, x, dim)

    def check(node, generation):
        return _split_check(node)


class Unbind(Op):
    """torch.unbind: the slices along ``dim``, that dim removed."""

    name = "unbind"
    inputs = ("x",)
    attrs = {"dim": 0}
    num_outputs = _ANY_NUMBER
    # The unbound dim's size is the number of outputs, so static; the others may vary.
    dynamic = True

    def kernel(x, *, dim):
        return tuple(torch.unbind(x, dim))

    def lower(c, x, *, dim):
        axis = dim % x.rank
        outs = [v.name for v in c.node.outputs]
        if len(outs) == 1:
            return c.mb.squeeze(x=x, axes=[axis], name=c.name)
        pieces = c.mb.split(x=x, num_splits=len(outs), axis=axis, name=c.name + "_split")
        return tuple(
            c.mb.squeeze(x=p, axes=[axis], name=c.name if i == 0 else f"{c.name}_{name}")
            for i, (p, name) in enumerate(zip(pieces, outs, strict=True))
        )

    def check(node, generation):
        if not node.outputs:
            return "unbind of an empty dim"
        return None


class Stack(Op):
    """torch.stack: join along a new dim."""

    name = "stack"
    inputs = ("*tensors",)
    attrs = {"dim": 0}
    dynamic = True

    def kernel(tensors, *, dim):
        return torch.stack(list(tensors), dim)

    def lower(c, tensors, *, dim):
        tensors = c.promote(*tensors)
        axis = dim % (tensors[0].rank + 1)
        if len(tensors) == 1:
            return c.mb.expand_dims(x=tensors[0], axes=[axis], name=c.name)
        return c.mb.stack(values=list(tensors), axis=axis, name=c.name)


class Narrow(Op):
    """x.narrow(dim, start, length): ``length`` entries from ``start`` along ``dim``."""

    name = "narrow"
    dynamic = True
    inputs = ("x",)
    attrs = {"dim": 0, "start": 0, "length": REQUIRED}

    def kernel(x, *, dim, start, length):
        return torch.narrow(x, dim, start, length)

    def lower(c, x, *, dim, start, length):
        axis = dim % x.rank
        first = start % x.shape[axis] if start < 0 else start  # check(): static if < 0
        begin = [0] * x.rank
        end = [0] * x.rank
        begin[axis], end[axis] = first, first + length
        whole = [a != axis for a in range(x.rank)]  # masked at both ends: see _slice_lists
        return c.mb.slice_by_index(
            x=x, begin=begin, end=end, begin_mask=whole, end_mask=whole, name=c.name
        )

    def check(node, generation):
        x = node.inputs[0].type
        if node.attrs["start"] < 0 and not isinstance(x.shape[node.attrs["dim"] % x.rank], int):
            return "narrow from a negative start along a dynamic dimension"
        return _no_empty_outputs(node)


class ExpandAs(Op):
    """x.expand_as(other): x broadcast to other's shape (other's values are not read)."""

    name = "expand_as"
    dynamic = True
    inputs = ("x", "other")

    def kernel(x, other):
        return x.expand_as(other)

    def lower(c, x, other):
        return _broadcast_to(c, x, c.node.inputs[0].type.shape, c.node.output.type.shape, c.name)


class Unflatten(Op):
    """x.unflatten(dim, sizes): split one dim into several (one size may be -1)."""

    name = "unflatten"
    inputs = ("x",)
    attrs = {"dim": 0, "sizes": REQUIRED}
    dynamic = True

    def kernel(x, *, dim, sizes):
        return torch.unflatten(x, dim, list(sizes))

    def lower(c, x, *, dim, sizes):
        return c.mb.reshape(x=x, shape=c.sizes(c.node.output.type.shape), name=c.name)


def _movedim_perm(rank, source, destination):
    """The permutation torch.movedim applies: moved dims at their places, others in order."""
    src = [source] if isinstance(source, int) else list(source)
    dst = [destination] if isinstance(destination, int) else list(destination)
    src = [s % rank for s in src]
    dst = [d % rank for d in dst]
    perm = [None] * rank
    for s, d in zip(src, dst, strict=True):
        perm[d] = s
    rest = iter(i for i in range(rank) if i not in src)
    return [p if p is not None else next(rest) for p in perm]


class Movedim(Op):
    """torch.movedim: move dims ``source`` to positions ``destination``."""

    name = "movedim"
    dynamic = True
    inputs = ("x",)
    attrs = {"source": REQUIRED, "destination": REQUIRED}

    def kernel(x, *, source, destination):
        src = source if isinstance(source, int) else list(source)
        dst = destination if isinstance(destination, int) else list(destination)
        return torch.movedim(x, src, dst)

    def lower(c, x, *, source, destination):
        perm = _movedim_perm(x.rank, source, destination)
        if perm == list(range(x.rank)):
            return c.mb.identity(x=x, name=c.name)
        return c.mb.transpose(x=x, perm=perm, name=c.name)


class Repeat(Op):
    """x.repeat(repeats): tile x (more repeats than dims add leading dims)."""

    name = "repeat"
    dynamic = True
    inputs = ("x",)
    attrs = {"repeats": REQUIRED}

    def kernel(x, *, repeats):
        return x.repeat(list(repeats))

    def lower(c, x, *, repeats):
        reps = list(repeats)
        if len(reps) > x.rank:
            lifted = [1] * (len(reps) - x.rank) + list(c.node.inputs[0].type.shape)
            x = c.mb.reshape(x=x, shape=c.sizes(lifted), name=c.name + "_lift")
        if all(r == 1 for r in reps):
            return c.mb.identity(x=x, name=c.name)
        return c.mb.tile(x=x, reps=reps, name=c.name)

    def check(node, generation):
        return _no_empty_outputs(node)


class Diagonal(Op):
    """torch.diagonal: the entries (i, i + offset) of the ``dim1`` x ``dim2`` planes, as
    a last dim. Lowered as those two dims moved last and flattened, then one strided
    slice (step: the row length plus one)."""

    name = "diagonal"
    inputs = ("x",)
    attrs = {"offset": 0, "dim1": 0, "dim2": 1}
    dynamic = True  # the other dims; the check keeps the planes static

    def kernel(x, *, offset, dim1, dim2):
        return torch.diagonal(x, offset, dim1, dim2).clone()

    def lower(c, x, *, offset, dim1, dim2):
        shape = list(c.node.inputs[0].type.shape)
        a, b = dim1 % x.rank, dim2 % x.rank
        rest = [d for d in range(x.rank) if d not in (a, b)]
        if rest + [a, b] != list(range(x.rank)):
            x = c.mb.transpose(x=x, perm=rest + [a, b], name=c.name + "_planes")
        rows, cols = shape[a], shape[b]
        length = c.node.output.type.shape[-1]
        keep = [shape[d] for d in rest]
        flat = c.mb.reshape(x=x, shape=c.sizes([*keep, rows * cols]), name=c.name + "_flat")
        start = offset if offset >= 0 else -offset * cols
        whole = [True] * len(rest) + [False]  # masked at both ends: see _slice_lists
        return c.mb.slice_by_index(
            x=flat,
            begin=[0] * len(rest) + [start],
            end=[0] * len(rest) + [start + (length - 1) * (cols + 1) + 1],
            stride=[1] * len(rest) + [cols + 1],
            begin_mask=whole,
            end_mask=whole,
            name=c.name,
        )

    def check(node, generation):
        x = node.inputs[0].type
        if x.rank < 2:
            return "diagonal of a tensor of rank below 2"
        planes = [x.shape[node.attrs[d] % x.rank] for d in ("dim1", "dim2")]
        if not all(isinstance(s, int) for s in planes):
            return "diagonal of planes with a dynamic size"
        return _no_empty_outputs(node)


class Flip(Op):
    """torch.flip: reverse the order along ``dims``."""

    name = "flip"
    dynamic = True
    inputs = ("x",)
    attrs = {"dims": REQUIRED}

    def kernel(x, *, dims):
        return torch.flip(x, list(dims))

    def lower(c, x, *, dims):
        axes = sorted({d % x.rank for d in dims})
        if not axes:
            return c.mb.identity(x=x, name=c.name)
        return c.mb.reverse(x=x, axes=axes, name=c.name)


class Roll(Op):
    """torch.roll: shift entries along ``dims`` cyclically (over the flattened x if none)."""

    name = "roll"
    inputs = ("x",)
    attrs = {"shifts": REQUIRED, "dims": []}

    def kernel(x, *, shifts, dims):
        shifts = [shifts] if isinstance(shifts, int) else list(shifts)
        dims = [dims] if isinstance(dims, int) else list(dims)
        return torch.roll(x, shifts, dims)

    def lower(c, x, *, shifts, dims):
        shifts = [shifts] if isinstance(shifts, int) else list(shifts)
        dims = [dims] if isinstance(dims, int) else list(dims)
        shape = list(x.shape)
        flat = not dims
        if flat:
            x = c.mb.reshape(x=x, shape=[-1], name=c.name + "_flat")
            dims = [0]
        steps = []
        for shift, dim in zip(shifts, dims, strict=True):
            axis = dim % x.rank
            k = shift % x.shape[axis] if x.shape[axis] else 0
            if k:
                steps.append((axis, k))
        if not steps:
            return (
                c.mb.reshape(x=x, shape=shape, name=c.name)
                if flat
                else c.mb.identity(x=x, name=c.name)
            )
        for i, (axis, k) in enumerate(steps):
            size = x.shape[axis]
            # The last k entries come first.
            begin_tail, end_head = [0] * x.rank, list(x.shape)
            begin_tail[axis], end_head[axis] = size - k, size - k
            tail = c.mb.slice_by_index(
                x=x, begin=begin_tail, end=list(x.shape), name=f"{c.name}_tail{i}"
            )
            head = c.mb.slice_by_index(
                x=x, begin=[0] * x.rank, end=end_head, name=f"{c.name}_head{i}"
            )
            last = i == len(steps) - 1 and not flat
            name = c.name if last else f"{c.name}_roll{i}"
            x = c.mb.concat(values=[tail, head], axis=axis, interleave=False, name=name)
        if flat:
            return c.mb.reshape(x=x, shape=shape, name=c.name)
        return x

    def check(node, generation):
        dims = node.attrs["dims"]
        shifts = node.attrs["shifts"]
        n_dims = 1 if isinstance(dims, int) else len(dims)
        n_shifts = 1 if isinstance(shifts, int) else len(shifts)
        if n_dims and n_dims != n_shifts:
            return "roll with as many shifts as dims"
        if not n_dims and n_shifts != 1:
            return "roll of the flattened tensor takes one shift"
        return _no_empty_outputs(node)


class Copy(Op):
    """x.copy(src): src broadcast to x's shape, in x's dtype (what a functionalised
    ``x[...] = src`` writes before it is scattered back)."""

    name = "copy"
    inputs = ("x", "src")
    attrs = {"non_blocking": False}
    dynamic = True

    def kernel(x, src, *, non_blocking):
        return torch.ops.aten.copy(x, src)

    def lower(c, x, src, *, non_blocking):
        from coreml_compile.compiler import symbolic

        (src,) = c.promote(src)
        want = list(c.node.inputs[0].type.shape)
        have = list(c.node.inputs[1].type.shape)
        if len(have) == len(want) and all(
            symbolic.equal(a, b) for a, b in zip(have, want, strict=True)
        ):
            return c.mb.identity(x=src, name=c.name)
        return _broadcast_to(c, src, have, want, c.name)


class SliceScatter(Op):
    """x with x[start:end:step] along ``dim`` replaced by ``src``: MIL's slice_update
    from iOS18; before it, a scatter of src along ``dim`` at the slice's positions,
    which must then be known at compile time (what in-place slice writes such as
    ``boxes[..., :2] = centre`` give)."""

    name = "slice_scatter"
    inputs = ("x", "src")
    attrs = {"dim": 0, "start": None, "end": None, "step": 1}
    dynamic = True

    def kernel(x, src, *, dim, start, end, step):
        return torch.ops.aten.slice_scatter(x, src, dim, start, end, step)

    def lower(c, x, src, *, dim, start, end, step):
        (src,) = c.promote(src)
        positions = _static_slice_positions(c.node)
        if positions is not None and not positions.size:  # an empty slice writes nothing
            return c.mb.identity(x=x, name=c.name)
        if c.generation < 18:
            axis = dim % x.rank
            return c.mb.scatter(
                data=x, indices=positions, updates=src, axis=axis, mode="update", name=c.name
            )
        bounds = _slice_bounds(c, _slice_lists(c, x, dim, start, end, step))
        return c.mb.slice_update(x=x, update=src, **bounds, name=c.name)

    def check(node, generation):
        if generation < 18 and _static_slice_positions(node) is None:
            return "slice_scatter at run-time positions needs deployment target iOS18 or later"
        return _slice_check(node, "slice_scatter")


def _static_slice_positions(node) -> np.ndarray | None:
    """The positions a slice node's x[start:end:step] covers along its ``dim``, if known
    before the run."""
    dim, start, end, step = (node.attrs[k] for k in ("dim", "start", "end", "step"))
    size = node.inputs[0].type.shape[dim % node.inputs[0].type.rank]
    if not isinstance(size, int) or any(symbolic.has_expr(b) for b in (start, end)):
        return None
    return np.arange(*slice(start, end, step).indices(size), dtype=np.int32)
