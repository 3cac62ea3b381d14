"""When a value can be dropped: the one liveness rule every executor uses.

The IR interpreter, the reference executor (MIL programs) and the plan executor
(partitioned packages) all run a list of steps over named values and free each value
after its last reader, so peak memory is the live set, not the program's size.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from typing import TypeVar

K = TypeVar("K", bound=Hashable)


def release_after(reads: Sequence[Iterable[K]], keep: Iterable[K] = ()) -> list[list[K]]:
    """For each step (``reads[i]`` = the values step i reads), the values whose last
    reader it is: drop them once it has run. Values in ``keep`` (outputs, inputs the
    caller owns, constants) are never listed."""
    last: dict[K, int] = {}
    for i, names in enumerate(reads):
        for name in names:
            last[name] = i
    kept = set(keep)
    release: list[list[K]] = [[] for _ in reads]
    for name, i in last.items():
        if name not in kept:
            release[i].append(name)
    return release
