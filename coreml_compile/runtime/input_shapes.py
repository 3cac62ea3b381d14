"""Which shapes a model input accepts: one shape, a range per dimension, or a list of shapes.

A package declares flexible inputs the way coremltools writes them into the model
description: ``multiArrayType.shapeRange.sizeRanges`` (a lower and upper bound per
dimension, upper -1 for no bound) or ``multiArrayType.enumeratedShapes.shapes``, with
``multiArrayType.shape`` holding the default shape. :class:`InputShape` reads that once,
and every place that checks an input (``CompiledModel.predict``, the reference, plan and
Core ML executors) asks it, and :func:`check_input_names` for the names, so a refused
input reads the same everywhere.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from coreml_compile.errors import InputSpecError

# An upper bound of None: the dimension may be as large as the caller likes.
Bound = tuple[int, int | None]


@dataclass(frozen=True)
class InputShape:
    """The shapes one input accepts.

    ``default`` is the shape to use when any will do (random inputs for ``run``/``verify``).
    With neither ``ranges`` nor ``shapes`` the input is fixed at ``default``.
    """

    default: tuple[int, ...]
    ranges: tuple[Bound, ...] = ()  # one (lower, upper) per dimension
    shapes: tuple[tuple[int, ...], ...] = ()  # the enumerated shapes, default among them

    @classmethod
    def fixed(cls, shape: Sequence[int]) -> InputShape:
        return cls(tuple(int(d) for d in shape))

    @classmethod
    def from_mil(cls, shape: Sequence[Any]) -> InputShape:
        """From a MIL function input's shape: a symbolic dimension takes any size.

        The MIL program does not record the declared bounds (only the model description
        does), so this is the loosest check that still keeps the rank and fixed sizes.
        """
        # numbers.Integral: numpy's and sympy's integers too; a symbol is not one.
        if all(isinstance(d, numbers.Integral) for d in shape):
            return cls.fixed(shape)
        ranges = tuple(
            (int(d), int(d)) if isinstance(d, numbers.Integral) else (1, None) for d in shape
        )
        return cls(tuple(lower for lower, _ in ranges), ranges=ranges)

    @classmethod
    def from_description(cls, feature: Any) -> InputShape | None:
        """From a spec's input FeatureDescription; None for inputs that are not arrays
        (images), which are left for Core ML to check."""
        if feature.type.WhichOneof("Type") != "multiArrayType":
            return None
        array = feature.type.multiArrayType
        default = tuple(int(d) for d in array.shape)
        flexibility = array.WhichOneof("ShapeFlexibility")
        if flexibility == "shapeRange":
            ranges = tuple(
                (int(r.lowerBound), None if r.upperBound < 0 else int(r.upperBound))
                for r in array.shapeRange.sizeRanges
            )
            if len(default) != len(ranges):  # no default written: the smallest shape
                default = tuple(lower for lower, _ in ranges)
            return cls(default, ranges=ranges)
        if flexibility == "enumeratedShapes":
            shapes = tuple(tuple(int(d) for d in s.shape) for s in array.enumeratedShapes.shapes)
            if shapes and default not in shapes:
                default = shapes[0]
            return cls(default, shapes=shapes)
        return cls(default)

    @property
    def is_flexible(self) -> bool:
        return bool(self.ranges or self.shapes)

    def refusal(self, shape: Sequence[int]) -> str | None:
        """Why ``shape`` is not accepted (one clause), or None if it is."""
        shape = tuple(int(d) for d in shape)
        if self.shapes:
            if shape in self.shapes:
                return None
            return f"shape {list(shape)} is not one of the shapes the model accepts: {self}"
        if not self.ranges:
            # Core ML's descriptions have no rank 0: a scalar input is declared [1].
            if shape == self.default or (shape == () and self.default == (1,)):
                return None
            return f"expected shape {list(self.default)}, got {list(shape)}"
        if len(shape) != len(self.ranges):
            return (
                f"shape {list(shape)} has {len(shape)} dimension(s), the model takes "
                f"{len(self.ranges)}: {self}"
            )
        for axis, (size, (lower, upper)) in enumerate(zip(shape, self.ranges, strict=True)):
            if lower == upper and size != lower:
                return f"dimension {axis} is {size}, the model takes only {lower}"
            if upper is None and size < lower:
                return f"dimension {axis} is {size}, the model accepts {lower} or more"
            if size < lower or (upper is not None and size > upper):
                span = f"{lower}..{upper}"
                return f"dimension {axis} is {size}, outside the range {span} the model accepts"
        return None

    def check(self, name: str, shape: Sequence[int]) -> None:
        """Raise InputSpecError in one line if input ``name`` cannot have ``shape``."""
        reason = self.refusal(shape)
        if reason is not None:
            raise InputSpecError(f"input {name}: {reason}")

    def __str__(self) -> str:
        if self.shapes:
            # Sorted: coremltools writes the default first, a reader looks for an order.
            return ", ".join("[" + ",".join(map(str, s)) + "]" for s in sorted(self.shapes))
        if self.ranges:
            dims = [
                str(lower) if lower == upper else f"{lower}..{'' if upper is None else upper}"
                for lower, upper in self.ranges
            ]
            return "[" + ", ".join(dims) + "]"
        return str(list(self.default))


def description_shapes(description: Any) -> dict[str, InputShape]:
    """{input name: InputShape} for a model description's array inputs."""
    shapes = {}
    for feature in description.input:
        shape = InputShape.from_description(feature)
        if shape is not None:
            shapes[feature.name] = shape
    return shapes


class _Pair(NamedTuple):
    shape: list[int]
    is_float: bool


class InputSpec(_Pair):
    """An input as ``CompiledModel.input_specs()`` describes it.

    It unpacks and compares as the ``(shape, is_float)`` pair callers have always used;
    ``shape`` is the default shape of a flexible input. ``accepts`` says which shapes
    the input takes (None: not an array input, left to the executor).
    """

    accepts: InputShape | None

    def __new__(cls, shape: list[int], is_float: bool, accepts: InputShape | None = None):
        spec = super().__new__(cls, shape, is_float)
        spec.accepts = accepts
        return spec


def check_input_names(expected: Iterable[str], given: Iterable[str]) -> None:
    """Raise InputSpecError naming missing and unknown inputs, if any."""
    expected, given = list(expected), list(given)
    missing = [n for n in expected if n not in given]
    extra = [n for n in given if n not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing input(s) {', '.join(missing)}")
        if extra:
            parts.append(f"unknown input(s) {', '.join(extra)}")
        raise InputSpecError(f"{'; '.join(parts)} (the model takes {', '.join(expected)})")
