"""Zero the smallest weights and store only the rest, with a bit mask.

    const %w: f32[256,256]
        ⇒   const %w_values: f32[k]   const %w_mask: bool[256,256]
            %w = sparse_to_dense(%w_values, %w_mask)

"0.5" zeroes the half of each tensor with the smallest magnitudes (unstructured);
"2:4" keeps the 2 largest of every 4 consecutive weights along the input dimension
(n:m structured). Lowered to Core ML's constexpr_sparse_to_dense (iOS16+): the package
keeps the non-zero values and one bit per weight.
"""

from __future__ import annotations

import numpy as np

from coreml_compile.compiler.ir import Graph
from coreml_compile.errors import CoreMLCompileError
from coreml_compile.passes import register_pass
from coreml_compile.passes._weights import replace_weight, select_weights


def parse(spec: str) -> tuple[float, tuple[int, int] | None]:
    """ "0.5" -> (0.5, None); "2:4" -> (0.5, (2, 4)); raises on anything else."""
    try:
        if ":" in spec:
            n, m = (int(p) for p in spec.split(":"))
            if not 0 < n < m:
                raise ValueError
            return 1 - n / m, (n, m)
        sparsity = float(spec)
        if not 0 < sparsity < 1:
            raise ValueError
        return sparsity, None
    except ValueError:
        raise CoreMLCompileError(
            f"malformed prune setting {spec!r}: give a sparsity like 0.5 or an n:m pattern like 2:4"
        ) from None


def magnitude_mask(w: np.ndarray, sparsity: float, pattern: tuple[int, int] | None) -> np.ndarray:
    """True where a weight is kept."""
    magnitude = np.abs(w)
    if pattern is None:
        drop = int(round(sparsity * w.size))
        mask = np.ones(w.size, dtype=bool)
        mask[np.argpartition(magnitude.reshape(-1), drop - 1)[:drop]] = False
        return mask.reshape(w.shape)
    n, m = pattern
    # Groups of m along the input dim: move it last, group, keep the n largest per group.
    moved = np.moveaxis(magnitude, 1 if w.ndim > 1 else 0, -1)
    if moved.shape[-1] % m:
        return np.ones(w.shape, dtype=bool)
    groups = moved.reshape(-1, m)
    keep = np.zeros_like(groups, dtype=bool)
    top = np.argpartition(-groups, n - 1, axis=1)[:, :n]
    np.put_along_axis(keep, top, True, axis=1)
    return np.moveaxis(keep.reshape(moved.shape), -1, 1 if w.ndim > 1 else 0)


@register_pass("prune_weights", takes_options=True)
def prune_weights(graph: Graph, options) -> bool:
    sparsity, pattern = parse(options.prune)
    weights = select_weights(graph, options)
    for w in weights:
        mask = magnitude_mask(w.data, sparsity, pattern)
        replace_weight(graph, w, "sparse_to_dense", {"values": w.data[mask], "mask": mask}, {})
    return bool(weights)
