"""Deployment targets: the OS releases a package may require, ordered by Core ML generation.

Users name a target the way coremltools does (``iOS16``, ``macOS13``); the op table
compares generations (an op new in iOS17 is unavailable when the target is iOS16).
"""

from __future__ import annotations

from typing import Any

# name -> Core ML generation, counted as the iOS release that introduced it.
GENERATIONS = {
    "iOS15": 15, "macOS12": 15, "watchOS8": 15, "tvOS15": 15,
    "iOS16": 16, "macOS13": 16, "watchOS9": 16, "tvOS16": 16,
    "iOS17": 17, "macOS14": 17, "watchOS10": 17, "tvOS17": 17,
    "iOS18": 18, "macOS15": 18, "watchOS11": 18, "tvOS18": 18,
}  # fmt: skip

DEFAULT = "iOS16"


def generation(target: str | int) -> int:
    """The Core ML generation of a target name (or a generation number, passed through)."""
    if isinstance(target, int):
        if target not in GENERATIONS.values():
            raise ValueError(f"unknown deployment target generation {target}")
        return target
    key = next((k for k in GENERATIONS if k.lower() == str(target).lower()), None)
    if key is None:
        raise ValueError(
            f"unknown deployment target {target!r}; choose one of {', '.join(GENERATIONS)}"
        )
    return GENERATIONS[key]


def to_coremltools(target: str | int) -> Any:
    import coremltools as ct

    return getattr(ct.target, f"iOS{generation(target)}")
