"""Look-ups and writes at computed positions: index_select, gather, advanced indexing, index_put.

Core ML's gather ops take int32 indices and (from iOS17) refuse negative ones, so the
lowerings here bring indices into range first: at compile time for constant indices, with
a select for computed ones.
"""

from __future__ import annotations

import numpy as np
import torch

from coreml_compile.compiler import symbolic
from coreml_compile.compiler.ops import Op
from coreml_compile.compiler.ops._helpers import as_int32


def _positive(c, idx, size, tag):
    """``idx`` with negative entries wrapped (idx + size), as int32; ``size`` is the IR
    dimension indexed (a dynamic one is read at run time)."""
    size = c.size(size)
    if idx.val is not None:
        v = np.asarray(idx.val).astype(np.int64)
        if isinstance(size, int) or not (v < 0).any():
            fixed = np.where(v < 0, v + size, v) if isinstance(size, int) else v
            return c.mb.const(val=fixed.astype(np.int32), name=f"{c.name}_{tag}_idx")
    idx = as_int32(c, idx, tag)
    negative = c.mb.less(x=idx, y=np.int32(0), name=f"{c.name}_{tag}_neg")
    size = np.int32(size) if isinstance(size, int) else size
    wrapped = c.mb.add(x=idx, y=size, name=f"{c.name}_{tag}_wrap")
    return c.mb.select(cond=negative, a=wrapped, b=idx, name=f"{c.name}_{tag}_pos")


def _broadcast(c, v, shape, tag):
    """``v`` broadcast to ``shape`` (numpy rules): a reshape to the rank, then a tile."""
    shape = list(shape)
    if list(v.shape) == shape:
        return v
    if v.val is not None:
        return c.mb.const(val=np.broadcast_to(np.asarray(v.val), shape).copy(), name=c.name + tag)
    if v.rank < len(shape):
        v = c.mb.reshape(x=v, shape=[1] * (len(shape) - v.rank) + list(v.shape), name=c.name + tag)
    reps = [o if i == 1 else 1 for i, o in zip(v.shape, shape, strict=True)]
    if all(r == 1 for r in reps):
        return v
    return c.mb.tile(x=v, reps=reps, name=c.name + tag + "_tile")


def _index_dtype_reason(node, positions):
    for i in positions:
        v = node.inputs[i]
        if v is not None and v.type.dtype == "bool":
            return f"boolean mask index {v.name} (its result's size depends on the data)"
        if v is not None and v.type.dtype not in ("int64", "int32", "int16", "int8", "uint8"):
            return f"index {v.name} of dtype {v.type.dtype}"
    return None


def _bools_as_ints(data_at: int):
    """Wraps a gathering lowering: MIL gathers no bools, so bool data (masks read at
    positions) is gathered as int32 and cast back."""

    def wrap(lower):
        def lowered(c, *inputs, **attrs):
            x = inputs[data_at]
            if c.mil_dtype_of(x) != "bool":
                return lower(c, *inputs, **attrs)
            name = c.name
            args = list(inputs)
            args[data_at] = c.mb.cast(x=x, dtype="int32", name=name + "_int")
            c.name = name + "_gathered"
            try:
                found = lower(c, *args, **attrs)
            finally:
                c.name = name
            return c.mb.cast(x=found, dtype="bool", name=name)

        return lowered

    return wrap


class IndexSelect(Op):
    """x.index_select(dim, index): the entries of ``index`` (0-d or 1-d) along ``dim``."""

    name = "index_select"
    inputs = ("x", "index")
    attrs = {"dim": 0}
    dynamic = True

    def kernel(x, index, *, dim):
        return torch.index_select(x, dim, index)

    @_bools_as_ints(0)
    def lower(c, x, index, *, dim):
        axis = dim % x.rank if x.rank else 0
        # torch refuses negative indices here, so they need no wrapping.
        idx = as_int32(c, index, "i")
        if idx.rank == 0:
            idx = c.mb.reshape(x=idx, shape=[1], name=c.name + "_i1")
        return c.mb.gather(x=x, indices=idx, axis=axis, name=c.name)

    def check(node, generation):
        if node.inputs[0].type.rank == 0:
            return "index_select of a scalar"
        return _index_dtype_reason(node, [1])


def _leading_block(c, v, dims, block, tag):
    """``v`` (of IR shape ``dims``) cut to its leading ``block`` where that is smaller:
    what torch's gather and scatter read of x or src beyond the index's extent."""
    if all(symbolic.equal(b, d) for b, d in zip(block, dims, strict=True)):
        return v
    return c.mb.slice_by_index(x=v, begin=[0] * v.rank, end=c.sizes(block), name=c.name + tag)


class Gather(Op):
    """torch.gather: out[..., i, ...] = x[..., index[..., i, ...], ...] along ``dim``."""

    name = "gather"
    inputs = ("x", "index")
    attrs = {"dim": 0, "sparse_grad": False}
    # The slice to the index's extent takes its sizes from the IR types (run time if dynamic).
    dynamic = True

    def kernel(x, index, *, dim, sparse_grad):
        return torch.gather(x, dim, index)

    @_bools_as_ints(0)
    def lower(c, x, index, *, dim, sparse_grad):
        axis = dim % x.rank
        # torch lets the index be smaller than x in the other dims: those read x's start.
        x_dims, index_dims = (v.type.shape for v in c.node.inputs)
        end = [
            s if a == axis else i for a, (s, i) in enumerate(zip(x_dims, index_dims, strict=True))
        ]
        x = _leading_block(c, x, x_dims, end, "_head")
        idx = as_int32(c, index, "i")  # torch refuses negative indices here
        return c.mb.gather_along_axis(x=x, indices=idx, axis=axis, name=c.name)

    def check(node, generation):
        x, index = node.inputs
        if x.type.rank == 0 or x.type.rank != index.type.rank:
            return "gather of a scalar or with an index of another rank"
        return _index_dtype_reason(node, [1])


class Scatter(Op):
    """torch.scatter, scatter_add and scatter_reduce (with x's own values included):
    ``src`` written (``reduce`` None) or combined ("sum", "prod", "amax", "amin") into x
    at ``index`` along ``dim``; MIL's scatter_along_axis. Where ``index`` repeats a
    position, a write keeps one of the values (torch does not say which either)."""

    name = "scatter"
    inputs = ("x", "index", "src")
    attrs = {"dim": 0, "reduce": None}
    dynamic = True

    def kernel(x, index, src, *, dim, reduce):
        if reduce is None:
            return torch.scatter(x, dim, index, src)
        return torch.scatter_reduce(x, dim, index, src, reduce, include_self=True)

    def lower(c, x, index, src, *, dim, reduce):
        x, src = c.promote(x, src)
        axis = dim % x.rank
        # torch takes src's leading block when src is larger than the index.
        index_dims, src_dims = (v.type.shape for v in c.node.inputs[1:])
        src = _leading_block(c, src, src_dims, index_dims, "_src")
        idx = as_int32(c, index, "i")  # torch refuses negative indices here
        mode = _SCATTER_MODES[reduce]
        return c.mb.scatter_along_axis(
            data=x, indices=idx, updates=src, axis=axis, mode=mode, name=c.name
        )

    def check(node, generation):
        x, index, src = node.inputs
        rank = x.type.rank
        if rank == 0 or index.type.rank != rank or src.type.rank != rank:
            return "scatter into a scalar or with an index or source of another rank"
        axis = node.attrs["dim"] % rank
        if not all(
            symbolic.equal(i, s)
            for a, (i, s) in enumerate(zip(index.type.shape, x.type.shape, strict=True))
            if a != axis
        ):
            return "scatter with an index smaller than x off its axis"
        if node.attrs["reduce"] not in _SCATTER_MODES:
            return f"scatter_reduce {node.attrs['reduce']!r}"
        if x.type.dtype == "bool":
            return f"scatter into a bool tensor ({x.name})"
        return _index_dtype_reason(node, [1])


# torch's reductions and MIL's scatter modes.
_SCATTER_MODES = {None: "update", "sum": "add", "prod": "mul", "amax": "max", "amin": "min"}


class TakeAlongDim(Op):
    """torch.take_along_dim: gather after broadcasting x and indices (all but ``dim``)."""

    name = "take_along_dim"
    inputs = ("x", "indices")
    attrs = {"dim": None}
    # Dynamic shapes only where nothing is broadcast (the check refuses the rest).
    dynamic = True

    def kernel(x, indices, *, dim):
        return torch.take_along_dim(x, indices, dim)

    @_bools_as_ints(0)
    def lower(c, x, indices, *, dim):
        if dim is None:
            x = c.mb.reshape(x=x, shape=[-1], name=c.name + "_flat_x")
            indices = c.mb.reshape(x=indices, shape=[-1], name=c.name + "_flat_i")
            axis = 0
        elif not _same_but(c.node.inputs[0].type, c.node.inputs[1].type, dim % x.rank):
            axis = dim % x.rank
            common = [max(a, b) for a, b in zip(x.shape, indices.shape, strict=True)]
            x = _broadcast(
                c,
                x,
                [
                    s if a == axis else m
                    for a, (s, m) in enumerate(zip(x.shape, common, strict=True))
                ],
                "_bx",
            )
            ishape = [
                s if a == axis else m
                for a, (s, m) in enumerate(zip(indices.shape, common, strict=True))
            ]
            indices = _broadcast(c, indices, ishape, "_bi")
        else:
            axis = dim % x.rank
        idx = as_int32(c, indices, "i")  # torch refuses negative indices here
        return c.mb.gather_along_axis(x=x, indices=idx, axis=axis, name=c.name)

    def check(node, generation):
        x, indices = node.inputs
        if node.attrs["dim"] is not None and x.type.rank != indices.type.rank:
            return "take_along_dim with indices of another rank"
        dynamic = not (x.type.is_static and indices.type.is_static)
        dim = node.attrs["dim"]
        if dim is not None and dynamic and not _same_but(x.type, indices.type, dim % x.type.rank):
            return "take_along_dim broadcasting dynamic shapes"
        return _index_dtype_reason(node, [1])


def _same_but(a, b, axis) -> bool:
    """True if two types' shapes agree (for every size of their symbols) off ``axis``."""
    pairs = enumerate(zip(a.shape, b.shape, strict=True))
    return all(i == axis or symbolic.equal(m, n) for i, (m, n) in pairs)


def _index_layout(indices, rank):
    """(indexed dims, whether they are adjacent) of an advanced-indexing call."""
    dims = [d for d, v in enumerate(indices) if v is not None]
    adjacent = dims == list(range(dims[0], dims[0] + len(dims))) if dims else True
    return dims, adjacent


def _index_vectors(c, x, indices, dims, sizes):
    """x with the indexed dims moved to the front, and the (B..., k) int32 positions
    (``sizes``: x's IR shape, for wrapping negative positions)."""
    perm = dims + [d for d in range(x.rank) if d not in dims]
    if perm != list(range(x.rank)):
        x = c.mb.transpose(x=x, perm=perm, name=c.name + "_front")
    positions = [_positive(c, indices[d], sizes[d], f"d{d}") for d in dims]
    rank = max(p.rank for p in positions)
    if all(isinstance(size, int | np.integer) for p in positions for size in p.shape):
        common = list(np.broadcast_shapes(*[tuple(p.shape) for p in positions]))
        cols = [_broadcast(c, p, common, f"_d{d}_b") for p, d in zip(positions, dims, strict=True)]
    else:
        # Sizes known only at run time: adding every index times zero broadcasts each
        # to the common shape (causal masks index with aranges of the sequence length).
        zero = c.mb.const(val=np.int32(0), name=c.name + "_zero")
        spread = None
        for p, d in zip(positions, dims, strict=True):
            nothing = c.mb.mul(x=p, y=zero, name=f"{c.name}_d{d}_zeros")
            spread = (
                nothing
                if spread is None
                else c.mb.add(x=spread, y=nothing, name=f"{c.name}_d{d}_spread")
            )
        cols = [
            c.mb.add(x=p, y=spread, name=f"{c.name}_d{d}_b")
            for p, d in zip(positions, dims, strict=True)
        ]
    if len(cols) == 1:
        stacked = c.mb.expand_dims(x=cols[0], axes=[-1], name=c.name + "_nd")
    else:
        stacked = c.mb.stack(values=cols, axis=rank, name=c.name + "_nd")
    return x, perm, stacked, rank


class Index(Op):
    """x[i0, i1, ...] with index tensors (advanced indexing); absent entries are ``:``.

    As in NumPy, the broadcast index shape replaces the indexed dims in place when they are
    adjacent, and goes in front otherwise.
    """

    name = "index"
    inputs = ("*indices", "x")
    # x and the index tensors may be dynamic (several broadcast at run time).
    dynamic = True

    def kernel(indices, x):
        return torch.ops.aten.index.Tensor(x, list(indices))

    @_bools_as_ints(-1)
    def lower(c, indices, x):
        dims, adjacent = _index_layout(indices, x.rank)
        sizes = c.node.inputs[-1].type.shape
        if len(dims) == 1:
            (d,) = dims
            idx = _positive(c, indices[d], sizes[d], "i")
            return c.mb.gather(x=x, indices=idx, axis=d, name=c.name)
        xt, perm, stacked, b = _index_vectors(c, x, indices, dims, sizes)
        p = dims[0]
        if not adjacent or p == 0:
            return c.mb.gather_nd(x=xt, indices=stacked, name=c.name)
        out = c.mb.gather_nd(x=xt, indices=stacked, name=c.name + "_nd_out")
        # [B..., rest...] -> [rest[:p]..., B..., rest[p:]...]
        rest = out.rank - b
        order = list(range(b, b + p)) + list(range(b)) + list(range(b + p, b + rest))
        return c.mb.transpose(x=out, perm=order, name=c.name)

    def check(node, generation):
        *indices, x = node.inputs
        positions = [i for i, v in enumerate(indices) if v is not None]
        if not positions:
            return "indexing with no index tensors"
        return _index_dtype_reason(node, positions)


class IndexPut(Op):
    """x.index_put(indices, values, accumulate): write (or add) ``values`` at x[indices].

    A single boolean mask over x's leading dims with one value is a select; integer indices
    lower to scatter_nd. With dynamic shapes, one index vector whose values fill what it
    addresses (a KV cache written at run-time positions, ``cache[:, :, pos] = k``) is a
    scatter along its axis.
    """

    name = "index_put"
    inputs = ("*indices", "x", "values")
    attrs = {"accumulate": False}
    dynamic = True

    def kernel(indices, x, values, *, accumulate):
        return torch.ops.aten.index_put(x, list(indices), values, accumulate)

    def lower(c, indices, x, values, *, accumulate):
        (values,) = c.promote(values)
        mode = "add" if accumulate else "update"
        if _has_dynamic_shapes(c.node):
            (d,) = _index_layout(indices, x.rank)[0]  # check(): one vector, values that fit
            idx = _positive(c, indices[d], c.node.inputs[-2].type.shape[d], "i")
            want = _scatter_shape(c.node.inputs[-2].type, c.node.inputs[d].type, d)
            if values.rank < len(want):  # torch dropped leading 1s: put them back
                values = c.mb.reshape(x=values, shape=c.sizes(want), name=c.name + "_v")
            return c.mb.scatter(data=x, indices=idx, updates=values, axis=d, mode=mode, name=c.name)
        present = [v for v in indices if v is not None]
        if present and c.mil_dtype_of(present[0]) == "bool":
            mask = indices[0]
            mask = c.mb.reshape(
                x=mask, shape=list(mask.shape) + [1] * (x.rank - mask.rank), name=c.name + "_m"
            )
            value = c.mb.reshape(x=values, shape=[1] * x.rank, name=c.name + "_v")
            if accumulate:
                zero = c.mb.mul(x=value, y=c.scalar(0, like=value), name=c.name + "_zero")
                added = c.mb.select(cond=mask, a=value, b=zero, name=c.name + "_add")
                return c.mb.add(x=x, y=added, name=c.name)
            return c.mb.select(cond=mask, a=value, b=x, name=c.name)
        dims, adjacent = _index_layout(indices, x.rank)
        xt, perm, stacked, b = _index_vectors(c, x, indices, dims, c.node.inputs[-2].type.shape)
        # The values broadcast to what x[indices] reads, laid out as [B..., rest...].
        bshape = list(stacked.shape[:-1])
        rest = [x.shape[d] for d in perm[len(dims) :]]
        p = dims[0] if adjacent else 0
        read = rest[:p] + bshape + rest[p:]
        values = _broadcast(c, values, read, "_vb")
        if p:
            order = list(range(p, p + b)) + list(range(p)) + list(range(p + b, len(read)))
            values = c.mb.transpose(x=values, perm=order, name=c.name + "_vt")
        if perm == list(range(x.rank)):
            return c.mb.scatter_nd(data=xt, indices=stacked, updates=values, mode=mode, name=c.name)
        out = c.mb.scatter_nd(
            data=xt, indices=stacked, updates=values, mode=mode, name=c.name + "_sc"
        )
        back = [perm.index(d) for d in range(x.rank)]
        return c.mb.transpose(x=out, perm=back, name=c.name)

    def check(node, generation):
        *indices, x, values = node.inputs
        present = [v for v in indices if v is not None]
        if not present:
            return "index_put with no index tensors"
        if x.type.dtype == "bool":
            return f"index_put into a bool tensor ({x.name})"
        dynamic = _has_dynamic_shapes(node)
        if any(v.type.dtype == "bool" for v in present):
            mask = indices[0]
            if dynamic:
                return "boolean index_put with dynamic shapes"
            if len(indices) != 1 or mask is None:
                return "boolean index_put with more than one index"
            if tuple(x.type.shape[: mask.type.rank]) != tuple(mask.type.shape):
                return "boolean index_put whose mask is not x's leading shape"
            if values.type.numel() != 1:
                return "boolean index_put of more than one value (positions depend on the data)"
            return None
        if dynamic:
            reason = _dynamic_scatter_reason(indices, x.type, values.type)
            if reason:
                return reason
        return _index_dtype_reason(node, [i for i, v in enumerate(indices) if v is not None])


def _has_dynamic_shapes(node) -> bool:
    return not all(v.type.is_static for v in node.inputs if v is not None)


def _dynamic_scatter_reason(indices, x, values) -> str | None:
    """Why a dynamic index_put is not one scatter along an axis (None if it is)."""
    dims = [d for d, v in enumerate(indices) if v is not None]
    if len(dims) != 1 or indices[dims[0]].type.rank != 1:
        return "index_put with dynamic shapes and more than one index vector"
    want = _scatter_shape(x, indices[dims[0]].type, dims[0])
    have = list(values.shape)
    lead = len(want) - len(have)  # leading 1s torch may have dropped from the values
    if (
        lead < 0
        or any(w != 1 for w in want[:lead])
        or not all(symbolic.equal(a, b) for a, b in zip(have, want[lead:], strict=True))
    ):
        return "index_put with dynamic shapes whose values do not fill what the index addresses"
    return None


def _scatter_shape(x, index, axis: int) -> list:
    """What ``x[..., index, ...]`` reads for one index vector along ``axis``."""
    shape = list(x.shape)
    shape[axis] = index.shape[0]
    return shape
