"""Compressed weights: ops that rebuild a dense weight from its compressed constants.

The passes in passes/quantize_weights.py, palettize_weights.py and prune_weights.py
write these; lowering turns them into Core ML's ``constexpr_*`` ops, which Core ML
decompresses at load time, so the package stores only the compressed form. They are
never constant-folded (that would undo the compression).

Core ML has them from iOS16; iOS18 changed the palette and sparse ops' inputs (unpacked
sub-byte tensors instead of packed bytes), so those lowerings follow the target.
"""

from __future__ import annotations

import numpy as np
import torch

from coreml_compile.compiler.ops import Op


def pack_bits(values: np.ndarray, nbits: int) -> np.ndarray:
    """Pack unsigned ``nbits``-bit values LSB-first into bytes, as Core ML's iOS16 ops read them."""
    flat = values.reshape(-1).astype(np.uint16)
    bits = ((flat[:, None] >> np.arange(nbits, dtype=np.uint16)) & 1).astype(np.uint8)
    return np.packbits(bits.reshape(-1), bitorder="little")


def _float_of(c, like_dtype: str) -> type:
    return np.float16 if c.mil_dtype(like_dtype) == "fp16" else np.float32


def _sub_byte(nbits: int):
    """The numpy dtypes coremltools uses for uint<nbits> and uint1 constants (iOS18)."""
    from coreml_compile.compiler.mil import import_coremltools

    import_coremltools()
    from coremltools.converters.mil.mil import types

    return getattr(types, f"np_uint{nbits}_dtype", np.uint8), types.np_uint1_dtype


def _scatter(mask, values):
    """A dense tensor with ``values`` where ``mask`` is set, zeros elsewhere."""
    dense = torch.zeros(mask.shape, dtype=values.dtype, device=values.device)
    return dense.masked_scatter(mask.to(torch.bool), values)


class Dequantize(Op):
    """scale * (data - zero_point): int8/uint8 data, one scale (and zero point) per tensor,
    per slice along ``axis`` (scale 1-d), or per block (scale of data's rank, each dim
    dividing data's: iOS18's blockwise form)."""

    name = "dequantize"
    inputs = ("data", "scale", "zero_point")
    # nbits 4: the data holds 4-bit values (int8/uint8 arrays here), stored as Core ML's
    # int4/uint4 (blockwise form only).
    attrs = {"axis": 0, "nbits": 8}
    min_target = 16
    foldable = False
    lowers_from_data = True

    def kernel(data, scale, zero_point, *, axis, nbits):
        if scale.dim() == data.dim() and data.dim() > 1:
            return _blockwise(data, scale, zero_point)
        shape = [1] * data.dim()
        if scale.dim() == 1:
            shape[axis] = -1
        deq = (data.to(torch.float32) - zero_point.to(torch.float32).reshape(shape)) * scale.to(
            torch.float32
        ).reshape(shape)
        return deq.to(scale.dtype)

    def lower(c, data, scale, zero_point, *, axis, nbits):
        fdtype = _float_of(c, c.node.output.type.dtype)
        if scale.ndim == data.ndim and data.ndim > 1:
            if nbits == 4:
                data, zero_point = (_four_bit(a) for a in (data, zero_point))
            return c.mb.constexpr_blockwise_shift_scale(
                data=data, scale=scale.astype(fdtype), offset=zero_point, name=c.name
            )
        return c.mb.constexpr_affine_dequantize(
            quantized_data=data,
            zero_point=zero_point,
            scale=scale.astype(fdtype),
            axis=axis,
            name=c.name,
        )

    def check(node, generation):
        data, scale = node.inputs[0].type, node.inputs[1].type
        blockwise = scale.rank == data.rank and data.rank > 1
        if blockwise and generation < 18:
            return "per-block quantised weights need deployment target iOS18 or later"
        if node.attrs["nbits"] not in (4, 8) or (node.attrs["nbits"] == 4 and not blockwise):
            return "4-bit weights are stored per block only"
        return None


def _four_bit(values: np.ndarray) -> np.ndarray:
    """int8/uint8 values in 4-bit range as coremltools' int4/uint4 constants."""
    from coreml_compile.compiler.mil import import_coremltools

    import_coremltools()
    from coremltools.converters.mil.mil import types

    dtype = types.np_int4_dtype if values.dtype == np.int8 else types.np_uint4_dtype
    return values.astype(dtype)


def _blockwise(data, scale, zero_point):
    """Expand per-block scale and zero point over their blocks, then dequantize."""
    for dim in range(data.dim()):
        block = data.shape[dim] // scale.shape[dim]
        scale = scale.repeat_interleave(block, dim)
        zero_point = zero_point.repeat_interleave(block, dim)
    deq = (data.to(torch.float32) - zero_point.to(torch.float32)) * scale.to(torch.float32)
    return deq.to(scale.dtype)


class LutToDense(Op):
    """lut[indices]: a palettised weight (``indices`` uint8 in [0, 2**nbits)).

    ``lut`` is one table (2**nbits values) or one per group of output channels
    ((groups, 2**nbits): rows i*C/groups to (i+1)*C/groups of axis 0 use table i; iOS18).
    """

    name = "lut_to_dense"
    inputs = ("indices", "lut")
    attrs = {"nbits": 8}
    min_target = 16
    foldable = False
    lowers_from_data = True

    def kernel(indices, lut, *, nbits):
        idx = indices.to(torch.int64)
        if lut.dim() == 1:
            return lut[idx]
        groups = lut.shape[0]
        rows = torch.arange(idx.shape[0], device=idx.device) // (idx.shape[0] // groups)
        rows = rows.reshape([-1] + [1] * (idx.dim() - 1)).expand_as(idx)
        return lut[rows, idx]

    def lower(c, indices, lut, *, nbits):
        idx = indices
        table = lut.astype(_float_of(c, c.node.output.type.dtype))
        if c.generation >= 18:
            sub_byte, _ = _sub_byte(nbits)
            groups = table.shape[0] if table.ndim == 2 else 1
            lut18 = table.reshape((groups,) + (1,) * (idx.ndim - 1) + (2**nbits, 1))
            return c.mb.constexpr_lut_to_dense(indices=idx.astype(sub_byte), lut=lut18, name=c.name)
        return c.mb.constexpr_lut_to_dense(
            indices=pack_bits(idx, nbits),
            lut=table,
            shape=np.array(idx.shape, np.uint32),
            name=c.name,
        )

    def check(node, generation):
        if node.attrs["nbits"] not in (1, 2, 4, 6, 8):
            return f"{node.attrs['nbits']}-bit palettes are not a Core ML format"
        if node.inputs[1].type.rank == 2 and generation < 18:
            return "palettes per channel group need deployment target iOS18 or later"
        return None


class SparseToDense(Op):
    """A dense tensor with ``values`` where ``mask`` is set and zeros elsewhere."""

    name = "sparse_to_dense"
    inputs = ("values", "mask")
    min_target = 16
    foldable = False
    lowers_from_data = True

    def kernel(values, mask):
        return _scatter(mask, values)

    def lower(c, values, mask):
        nonzero = values.astype(_float_of(c, c.node.output.type.dtype))
        bits = mask.astype(bool)
        if c.generation >= 18:
            _, uint1 = _sub_byte(1)
            return c.mb.constexpr_sparse_to_dense(
                nonzero_data=nonzero, mask=bits.astype(uint1), name=c.name
            )
        return c.mb.constexpr_sparse_to_dense(
            nonzero_data=nonzero,
            mask=pack_bits(bits.astype(np.uint8), 1),
            shape=np.array(bits.shape, np.uint32),
            name=c.name,
        )


class SparseDequantize(Op):
    """A pruned and int8-quantised weight: the kept entries are int8 with scale and zero
    point (per tensor, channel or block, shaped like ``Dequantize``'s), zeros elsewhere.
    Lowered to constexpr_sparse_blockwise_shift_scale + constexpr_sparse_to_dense (iOS18)."""

    name = "sparse_dequantize"
    inputs = ("mask", "data", "scale", "zero_point")
    attrs = {"axis": 0}
    min_target = 18
    foldable = False
    lowers_from_data = True

    def kernel(mask, data, scale, zero_point, *, axis):
        dense = Dequantize.kernel(_scatter(mask, data), scale, zero_point, axis=axis, nbits=8)
        return torch.where(mask.to(torch.bool), dense, torch.zeros((), dtype=dense.dtype))

    def lower(c, mask, data, scale, zero_point, *, axis):
        _, uint1 = _sub_byte(1)
        fdtype = _float_of(c, c.node.output.type.dtype)
        rank = mask.ndim
        shape = [1] * rank
        if scale.ndim == 1 and scale.size > 1:
            shape[axis] = -1
        full = scale.reshape(shape) if scale.ndim != rank else scale
        offset = zero_point.reshape(full.shape)
        out_mask, nonzero = c.mb.constexpr_sparse_blockwise_shift_scale(
            data_mask=mask.astype(uint1),
            nonzero_data=data,
            scale=full.astype(fdtype),
            offset=offset,
            name=c.name + "_sparse",
        )
        return c.mb.constexpr_sparse_to_dense(nonzero_data=nonzero, mask=out_mask, name=c.name)


class SparseLutToDense(Op):
    """A pruned and palettised weight: the kept entries are palette indices, zeros
    elsewhere. Lowered to constexpr_lut_to_sparse + constexpr_sparse_to_dense (iOS18)."""

    name = "sparse_lut_to_dense"
    inputs = ("mask", "indices", "lut")
    attrs = {"nbits": 8}
    min_target = 18
    foldable = False
    lowers_from_data = True

    def kernel(mask, indices, lut, *, nbits):
        return _scatter(mask, lut[indices.to(torch.int64)])

    def lower(c, mask, indices, lut, *, nbits):
        sub_byte, uint1 = _sub_byte(nbits)
        table = lut.astype(_float_of(c, c.node.output.type.dtype))
        out_mask, nonzero = c.mb.constexpr_lut_to_sparse(
            indices_mask=mask.astype(uint1),
            indices_nonzero_data=indices.astype(sub_byte),
            lut=table.reshape((1,) * mask.ndim + (2**nbits, 1)),
            name=c.name + "_sparse",
        )
        return c.mb.constexpr_sparse_to_dense(nonzero_data=nonzero, mask=out_mask, name=c.name)
