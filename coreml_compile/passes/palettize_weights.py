"""Store weights as n-bit indices into a table of 2**n values (k-means palettisation).

    const %w: f32[512,512]
        ⇒   const %w_indices: u8[512,512]  (values < 2**n)   const %w_lut: f32[2**n]
            %w = lut_to_dense(%w_indices, %w_lut) nbits=n

One table per tensor, found by 1-d k-means: the values are sorted once, so each Lloyd
iteration costs O(k log n) (cluster boundaries by bisection, sums from prefix sums).
Starts: quantiles, even spacing and k-means++ (and, for small tensors, the exact
optimum by dynamic programming over split points, O(k n^2)). Lloyd's iterations run
each to convergence on a sketch of the sorted values (evenly spaced order statistics),
the best is polished on all the values.
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
_MAX_ITERATIONS = 20000
_PLUS_PLUS_STARTS = 6
_SKETCH = 16384
# Largest clusters x values^2 solved exactly (on bigger tensors Lloyd's iterations from
# several starts came within 0.2% of the exact optimum of a sketch, at a tenth the time).
_EXACT_WORK = 1e7


class _Sorted:
    """Sorted values with prefix sums: any run's count, sum and squared error in O(1)."""

    def __init__(self, flat: np.ndarray, is_sorted: bool = False):
        self.x = (flat if is_sorted else np.sort(flat)).astype(np.float64)
        self.s1 = np.concatenate([[0.0], np.cumsum(self.x)])
        self.s2 = np.concatenate([[0.0], np.cumsum(self.x * self.x)])

    def bounds(self, centroids: np.ndarray) -> np.ndarray:
        """Start of each centroid's run of values (and n at the end): nearest by midpoint."""
        mids = np.searchsorted(self.x, (centroids[:-1] + centroids[1:]) / 2)
        return np.concatenate([[0], mids, [len(self.x)]])

    def lloyd(self, centroids: np.ndarray) -> tuple[np.ndarray, float]:
        """Lloyd's iterations to convergence; (centroids, squared error)."""
        for _ in range(_MAX_ITERATIONS):
            b = self.bounds(centroids)
            counts = np.diff(b)
            sums = self.s1[b[1:]] - self.s1[b[:-1]]
            moved = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
            moved = self._reseed_empty(moved, counts)
            if np.array_equal(moved, centroids):
                break
            centroids = np.sort(moved)
        return centroids, self.error(centroids)

    def _reseed_empty(self, centroids: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Move centroids with no values to the middle of the widest-spread cluster."""
        empty = np.flatnonzero(counts == 0)
        if not len(empty) or len(np.unique(self.x[[0, -1]])) < 2:
            return centroids
        b = self.bounds(np.sort(centroids))
        spread = self.s2[b[1:]] - self.s2[b[:-1]]
        spread -= (self.s1[b[1:]] - self.s1[b[:-1]]) ** 2 / np.maximum(np.diff(b), 1)
        for i in empty:
            worst = int(np.argmax(spread))
            lo, hi = b[worst], b[worst + 1]
            if hi - lo < 2:
                break
            centroids[i] = self.x[(lo + hi) // 2] + 1e-12 * (self.x[hi - 1] - self.x[lo])
            spread[worst] = -1.0
        return centroids

    def error(self, centroids: np.ndarray) -> float:
        b = self.bounds(centroids)
        counts = np.diff(b)
        sums = self.s1[b[1:]] - self.s1[b[:-1]]
        squares = self.s2[b[1:]] - self.s2[b[:-1]]
        return float(np.sum(squares - 2 * centroids * sums + counts * centroids**2))


def _optimal(data: _Sorted, clusters: int) -> np.ndarray:
    """The centroids of least squared error for ``data`` (sorted), by dynamic programming
    over where each cluster's run of values ends: O(k n^2) time, O(k n) memory."""
    n = len(data.x)
    s1, s2 = data.s1, data.s2
    starts = np.arange(n + 1)[:, None]

    def cost(ends: np.ndarray) -> np.ndarray:  # [start, end) -> squared error of the run
        count = ends[None, :] - starts
        sums = s1[ends][None, :] - s1[starts]
        err = s2[ends][None, :] - s2[starts] - sums**2 / np.maximum(count, 1)
        return np.where(count > 0, np.maximum(err, 0.0), np.inf)

    best = cost(np.arange(n + 1))[0]
    back = np.zeros((clusters, n + 1), dtype=np.int64)
    chunk = max(1, 4_000_000 // (n + 1))
    for layer in range(1, clusters):
        nxt = np.full(n + 1, np.inf)
        for lo in range(0, n + 1, chunk):
            ends = np.arange(lo, min(n + 1, lo + chunk))
            total = best[:, None] + cost(ends)
            arg = np.argmin(total, axis=0)
            nxt[ends] = total[arg, np.arange(len(ends))]
            back[layer, ends] = arg
        best = nxt
    edges = [n]
    for layer in range(clusters - 1, 0, -1):
        edges.append(back[layer, edges[-1]])
    edges = np.array([0, *reversed(edges)])
    counts = np.diff(edges)
    return (s1[edges[1:]] - s1[edges[:-1]]) / np.maximum(counts, 1)


def _plus_plus(sample: np.ndarray, clusters: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ starting centroids from ``sample``."""
    centroids = [sample[rng.integers(len(sample))]]
    nearest = (sample - centroids[0]) ** 2
    for _ in range(1, clusters):
        total = nearest.sum()
        if total <= 0:
            break
        pick = sample[rng.choice(len(sample), p=nearest / total)]
        centroids.append(pick)
        nearest = np.minimum(nearest, (sample - pick) ** 2)
    return np.array(centroids)


def kmeans_1d(values: np.ndarray, clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """(sorted centroids, index of each value's centroid): the best of several k-means runs."""
    flat = values.reshape(-1)
    if flat.dtype not in (np.float32, np.float64):
        flat = flat.astype(np.float32)
    data = _Sorted(flat)  # the one sort of the values
    x = data.x
    table = np.zeros(clusters)
    if np.count_nonzero(np.diff(x)) < clusters:  # no more distinct values than entries
        distinct = np.unique(x)
        table[: len(distinct)] = distinct
        labels = np.searchsorted(distinct, flat)
        return table, labels.reshape(values.shape).astype(np.uint8)
    low, high = x[0], x[-1]
    rng = np.random.default_rng(0)
    # Evenly spaced order statistics stand for the values while the starts compete.
    size = max(_SKETCH, 32 * clusters)
    sketch = data
    if len(x) > 2 * size:
        sketch = _Sorted(x[((np.arange(size) + 0.5) * (len(x) / size)).astype(np.int64)], True)
    starts = [
        x[((np.arange(clusters) + 0.5) / clusters * len(x)).astype(np.int64)],
        np.linspace(low, high, clusters + 2)[1:-1],
    ]
    starts += [_plus_plus(sketch.x, clusters, rng) for _ in range(_PLUS_PLUS_STARTS)]
    if clusters * len(x) ** 2 <= _EXACT_WORK:
        # Small tensors, where Lloyd's local optima are far apart: the exact optimum.
        starts.insert(0, _optimal(data, clusters))
    best, best_error = None, np.inf
    for start in starts:
        centroids = np.unique(start)
        if len(centroids) < clusters:  # ties in the start: spread the rest evenly
            extra = np.linspace(low, high, clusters - len(centroids) + 2)[1:-1]
            centroids = np.sort(np.concatenate([centroids, extra]))
        centroids, error = sketch.lloyd(centroids)
        if error < best_error:
            best, best_error = centroids, error
    if sketch is not data:
        best, _ = data.lloyd(best)
    labels = np.searchsorted((best[:-1] + best[1:]) / 2, flat)
    table[:] = best
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
