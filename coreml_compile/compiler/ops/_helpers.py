"""Small helpers shared by the op records (argument normalisation, record factories)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from coreml_compile.compiler.ops import Op


def as_tuple(value: int | Sequence[int], n: int) -> tuple[int, ...]:
    """A per-spatial-dim tuple from an int or a 1-element list, as torch accepts them."""
    if isinstance(value, int):
        return (value,) * n
    value = tuple(int(v) for v in value)
    return value * n if len(value) == 1 else value


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
