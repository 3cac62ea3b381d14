"""Small helpers shared by the op records (argument normalisation, record factories)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from coreml_compile.compiler.ops import Op


def as_tuple(value: int | Sequence[int], n: int) -> tuple[int, ...]:
    """A per-spatial-dim tuple from an int or a 1-element list, as torch accepts them."""
    if isinstance(value, int):
        return (value,) * n
    value = tuple(int(v) for v in value)
    return value * n if len(value) == 1 else value


def as_int32(c, idx, tag: str) -> Any:
    """``idx`` as int32 for MIL's gathers (int64 values already are; narrower integer
    inputs are cast)."""
    if c.mil_dtype_of(idx) == "int32":
        return idx
    return c.mb.cast(x=idx, dtype="int32", name=f"{c.name}_{tag}_i32")


def normalize_axes(dims: int | Sequence[int] | None, rank: int) -> list[int]:
    if dims is None or (not isinstance(dims, int) and len(dims) == 0):
        return list(range(rank))
    if isinstance(dims, int):
        dims = [dims]
    return sorted(d % rank if rank else 0 for d in dims)


def unary(
    name: str,
    kernel: Callable[..., Any],
    lower: Callable[..., Any] | None,
    attrs: dict[str, Any] | None = None,
    min_target: int = 15,
    doc: str = "",
) -> type[Op]:
    """Define (and so register) the record of a one-input op."""
    return type(
        name.title().replace("_", ""),
        (Op,),
        {
            "__doc__": doc or f"{name}(x)",
            "name": name,
            "inputs": ("x",),
            "attrs": dict(attrs or {}),
            "min_target": min_target,
            "kernel": kernel,
            "lower": lower,
            # Element-wise: the MIL op reads no sizes.
            "dynamic": True,
            "elementwise": True,
        },
    )


def pad_exactly(c, x, full: Sequence[tuple[int, int]], mode: str, value: Any, name: str) -> Any:
    """``x`` padded by (before, after) ``full`` per axis, axis by axis, by gathering its own
    elements (reflect, replicate) or joining constant slabs of ``value`` to it, so any
    dtype pads exactly (MIL's pad takes floats only); the last op is called ``name``."""
    from coreml_compile.compiler.mil import MIL_NUMPY

    dtype = MIL_NUMPY[c.mil_dtype_of(x)]
    shape = list(x.shape)
    padded = [(axis, before, after) for axis, (before, after) in enumerate(full) if before or after]
    for k, (axis, before, after) in enumerate(padded):
        step = name if k == len(padded) - 1 else f"{name}_axis{axis}"
        size = shape[axis]
        if mode == "constant":
            slabs = []
            for count in (before, after):
                slab_shape = shape[:axis] + [count] + shape[axis + 1 :]
                slabs.append(np.full(slab_shape, value or 0, dtype) if count else None)
            parts = [p for p in (slabs[0], x, slabs[1]) if p is not None]
            x = c.mb.concat(values=parts, axis=axis, name=step)
        else:
            edge = [0] * before, [size - 1] * after
            if mode == "reflect":
                edge = list(range(before, 0, -1)), list(range(size - 2, size - 2 - after, -1))
            index = np.array([*edge[0], *range(size), *edge[1]], np.int32)
            x = c.mb.gather(x=x, indices=index, axis=axis, name=step)
        shape[axis] = size + before + after
    return x
