"""Store weights as 8-bit integers with a scale (and zero point).

    const %w: f32[64,3,7,7]
    %y = conv(%x, %w)
        ⇒   const %w_data: i8[64,3,7,7]   const %w_scale: f32[64]   const %w_zero_point: i8[64]
            %w = dequantize(%w_data, %w_scale, %w_zero_point) axis=0
            %y = conv(%x, %w)

Modes: "int8" (one scale per output channel, as coremltools' default; also spelled
"int8-per-channel"), "int8-per-tensor" (one scale per tensor) and "int8-per-block" (one
per output channel and block of 32 input channels: iOS18), symmetric (int8, zero point 0)
or with "-asym" asymmetric (uint8 with a zero point, for weights not centred on zero).
"int4-per-block" stores 4-bit integers per block (iOS18; the usual choice for language
models' weights: a quarter of fp16's size).
Lowered to Core ML's constexpr_affine_dequantize (iOS16+) or, per block,
constexpr_blockwise_shift_scale (iOS18+).
"""

from __future__ import annotations

import numpy as np

from coreml_compile.compiler.ir import Graph
from coreml_compile.errors import CoreMLCompileError
from coreml_compile.passes import register_pass
from coreml_compile.passes._weights import (
    channel_axis,
    pruned_weights,
    replace_pruned,
    replace_weight,
    select_weights,
)

MODES = (
    "int8",
    "int8-asym",
    "int8-per-tensor",
    "int8-per-tensor-asym",
    "int8-per-channel",
    "int8-per-channel-asym",
    "int8-per-block",
    "int8-per-block-asym",
    "int4-per-block",
    "int4-per-block-asym",
)
BLOCK = 32


def quantize(w: np.ndarray, per_channel: bool, symmetric: bool, axis: int = 0, bits: int = 8):
    """(data, scale, zero_point) with w ≈ scale * (data - zero_point); data holds
    ``bits``-bit integers (in int8/uint8 arrays)."""
    w64 = w.astype(np.float64)
    reduce = tuple(i for i in range(w.ndim) if i != axis) if per_channel else None
    if symmetric:
        top = 2 ** (bits - 1) - 1
        peak = np.abs(w64).max(axis=reduce, keepdims=True)
        scale = np.where(peak > 0, peak / top, 1.0)
        if per_channel:
            scale = _least_error_scale(w.astype(np.float32), scale, reduce, top)
        data = np.clip(np.round(w64 / scale), -top, top).astype(np.int8)
        zero = np.zeros_like(scale, dtype=np.int8)
    else:
        top = 2**bits - 1
        low = np.minimum(w64.min(axis=reduce, keepdims=True), 0.0)
        high = np.maximum(w64.max(axis=reduce, keepdims=True), 0.0)
        scale = np.where(high > low, (high - low) / top, 1.0)
        zero = np.clip(np.round(-low / scale), 0, top)
        data = np.clip(np.round(w64 / scale) + zero, 0, top).astype(np.uint8)
        zero = zero.astype(np.uint8)
    if per_channel:
        return data, scale.reshape(-1).astype(w.dtype), zero.reshape(-1)
    return data, np.array(scale.item(), dtype=w.dtype), np.array(zero.item(), dtype=data.dtype)


# Candidate clipping ratios: a scale below peak/top clips the largest weights a little and
# rounds all the others more finely, which often lowers the total error.
_CLIP_RATIOS = (1.0, 0.98, 0.96, 0.94, 0.92, 0.9, 0.87, 0.84)


def _least_error_scale(w: np.ndarray, scale: np.ndarray, reduce, top: int) -> np.ndarray:
    """Per channel, the candidate scale whose quantised weights are closest to ``w``
    (squared error); the plain peak/top scale is the first candidate, so it is never
    worse than that."""
    best = scale
    best_error = None
    for ratio in _CLIP_RATIOS:
        s = (scale * ratio).astype(np.float32)
        error = ((np.clip(np.round(w / s), -top, top) * s - w) ** 2).sum(axis=reduce, keepdims=True)
        if best_error is None:
            best_error = error
            continue
        better = error < best_error
        best = np.where(better, scale * ratio, best)
        best_error = np.where(better, error, best_error)
    return best


def quantize_blocks(w: np.ndarray, symmetric: bool, block: int = BLOCK, bits: int = 8):
    """Per output channel and block of ``block`` input channels (dim 1), where it divides;
    scale and zero point have ``w``'s rank."""
    if w.ndim < 2:
        w2 = w.reshape(1, -1)
        data, scale, zero = quantize_blocks(w2, symmetric, block, bits)
        return data.reshape(w.shape), scale.reshape(1), zero.reshape(1)
    inputs = w.shape[1]
    size = block if inputs % block == 0 else inputs
    # (out, blocks, size, rest...) so each block is one slice of axes 2..
    grouped = w.reshape(w.shape[0], inputs // size, size, *w.shape[2:])
    rows = grouped.reshape(w.shape[0] * (inputs // size), -1)
    data, scale, zero = quantize(rows, per_channel=True, symmetric=symmetric, axis=0, bits=bits)
    shape = (w.shape[0], inputs // size) + (1,) * (w.ndim - 2)
    return data.reshape(w.shape), scale.reshape(shape), zero.reshape(shape)


@register_pass("quantize_weights", takes_options=True)
def quantize_weights(graph: Graph, options) -> bool:
    if options.quantize not in MODES:
        raise CoreMLCompileError(
            f"unknown quantisation {options.quantize!r}; choose one of {', '.join(MODES)}"
        )
    per_channel = "per-tensor" not in options.quantize
    symmetric = not options.quantize.endswith("-asym")
    bits = 4 if options.quantize.startswith("int4") else 8
    pruned = pruned_weights(graph, options)
    for node in pruned:
        # Quantise the pruned weight as a whole, then keep the entries the mask keeps.
        values, mask = (v.data for v in node.inputs)
        dense = np.zeros(mask.shape, dtype=values.dtype)
        dense[mask] = values
        if "per-block" in options.quantize:
            data, scale, zero = quantize_blocks(dense, symmetric, bits=bits)
            axis = 0
        else:
            axis = channel_axis(node.output) if per_channel else 0
            data, scale, zero = quantize(dense, per_channel, symmetric, axis)
        parts = {"mask": mask, "data": data[mask], "scale": scale, "zero_point": zero}
        # Pruned weights keep 8-bit storage (their values are 4-bit for int4 modes).
        replace_pruned(graph, node, "sparse_dequantize", parts, {"axis": axis})
    weights = select_weights(graph, options)
    if "per-block" in options.quantize:
        for w in weights:
            data, scale, zero = quantize_blocks(w.data, symmetric, bits=bits)
            parts = {"data": data, "scale": scale, "zero_point": zero}
            replace_weight(graph, w, "dequantize", parts, {"axis": 0, "nbits": bits})
        return bool(weights or pruned)
    for w in weights:
        axis = channel_axis(w) if per_channel else 0
        data, scale, zero = quantize(w.data, per_channel, symmetric, axis)
        replace_weight(
            graph,
            w,
            "dequantize",
            {"data": data, "scale": scale, "zero_point": zero},
            {"axis": axis},
        )
    return bool(weights)
