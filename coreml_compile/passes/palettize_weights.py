"""Store weights as n-bit indices into a table of 2**n values (k-means palettisation).

    const %w: f32[512,512]
        ⇒   const %w_indices: u8[512,512]  (values < 2**n)   const %w_lut: f32[2**n]
            %w = lut_to_dense(%w_indices, %w_lut) nbits=n

One table per tensor, found by 1-d k-means (Lloyd's iterations from quantile starts).
Modes "palette1", "palette2", "palette4", "palette6", "palette8"; "-grouped" (for
example "palette4-grouped") gives each group of 16 output channels its own table
(iOS18), which suits weights whose channels differ in scale. Lowered to Core ML's
constexpr_lut_to_dense (iOS16+; bit-packed indices before iOS18).
"""

from __future__ import annotations

import numpy as np

from coreml_compile.compiler.ir import Graph
from coreml_compile.errors import CoreMLCompileError
from coreml_compile.passes import register_pass
from coreml_compile.passes._weights import (
    pruned_weights,
    replace_pruned,
    replace_weight,
    select_weights,
)

BITS = (1, 2, 4, 6, 8)
GROUP = 16
_ITERATIONS = 12


def kmeans_1d(values: np.ndarray, clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """(sorted centroids, index of each value's centroid) by Lloyd's algorithm in 1-d."""
    flat = values.reshape(-1).astype(np.float64)
    centroids = np.unique(np.quantile(flat, (np.arange(clusters) + 0.5) / clusters))
    for _ in range(_ITERATIONS):
        # In 1-d, the nearest centroid is found by bisecting the midpoints between them.
        labels = np.searchsorted((centroids[:-1] + centroids[1:]) / 2, flat)
        counts = np.bincount(labels, minlength=len(centroids))
        sums = np.bincount(labels, weights=flat, minlength=len(centroids))
        moved = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        if np.allclose(moved, centroids):
            break
        centroids = np.sort(moved)
    labels = np.searchsorted((centroids[:-1] + centroids[1:]) / 2, flat)
    table = np.zeros(clusters)
    table[: len(centroids)] = centroids
    return table, labels.reshape(values.shape).astype(np.uint8)


@register_pass("palettize_weights", takes_options=True)
def palettize_weights(graph: Graph, options) -> bool:
    mode = options.quantize or ""
    grouped = mode.endswith("-grouped")
    digits = mode.removeprefix("palette").removesuffix("-grouped")
    bits = int(digits) if digits.isdigit() else 0
    if bits not in BITS:
        choices = ", ".join(f"palette{b}" for b in BITS)
        raise CoreMLCompileError(f"unknown palettisation {mode!r}; choose one of {choices}")
    pruned = pruned_weights(graph, options)
    for node in pruned:
        values, mask = (v.data for v in node.inputs)
        table, indices = kmeans_1d(values, 2**bits)
        parts = {"mask": mask, "indices": indices, "lut": table.astype(values.dtype)}
        replace_pruned(graph, node, "sparse_lut_to_dense", parts, {"nbits": bits})
    weights = select_weights(graph, options)
    for w in weights:
        channels = w.data.shape[0]
        if grouped and w.data.ndim > 1 and channels % GROUP == 0 and channels > GROUP:
            rows = w.data.reshape(channels // GROUP, -1)
            found = [kmeans_1d(row, 2**bits) for row in rows]
            table = np.stack([t for t, _ in found])
            indices = np.concatenate([i for _, i in found]).reshape(w.data.shape)
        else:
            table, indices = kmeans_1d(w.data, 2**bits)
        replace_weight(
            graph,
            w,
            "lut_to_dense",
            {"indices": indices, "lut": table.astype(w.data.dtype)},
            {"nbits": bits},
        )
    return bool(weights or pruned)
