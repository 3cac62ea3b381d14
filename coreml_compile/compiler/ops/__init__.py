"""The op table: one record per IR op, and the one place that says what Core ML can run.

A record is a subclass of :class:`Op` and holds everything about its op:

- ``name``, ``inputs`` (tensor inputs in order; ``"bias?"`` is optional,
  ``"*tensors"`` takes a list) and ``attrs`` (attribute names with their defaults;
  :data:`REQUIRED` marks the ones without),
- ``kernel(*inputs, **attrs)``: the torch reference kernel, used by the IR interpreter
  and by fallback execution. Run on ``meta`` tensors it is also the default shape and
  dtype inference, so a record states its semantics once;
- ``lower(c, *inputs, **attrs)``: the MIL lowering (``c`` is the
  :class:`~coreml_compile.compiler.lower.LowerContext`; ``None`` if Core ML has none),
- ``min_target`` and ``check(node, generation)``: when Core ML can run it,
- ``accelerated`` and ``macs(node)``: for convolutions and matrix products, the work the
  hybrid execution strategy weighs.

Records register themselves when their module is imported; the family modules are
imported at the bottom of this file. Adding an op means adding a record here, a line in a
frontend's mapping, and sample inputs in tests/ops/samples.py.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Protocol

from coreml_compile.compiler import dtypes
from coreml_compile.compiler.tensor_type import TensorType


class Value(Protocol):
    """What the op table reads of a value (``compiler/ir.py``'s Value is one): the
    table is below the IR, which asks it for type rules, and never imports it."""

    name: str
    type: TensorType

    @property
    def is_constant(self) -> bool: ...

    @property
    def data(self) -> Any: ...

    @property
    def users(self) -> Any: ...


class Node(Protocol):
    """What the op table reads of a node (``compiler/ir.py``'s Node is one)."""

    op: str
    name: str
    attrs: dict[str, Any]
    inputs: list[Value | None]
    outputs: list[Value]

    @property
    def output(self) -> Value: ...

    def present_inputs(self) -> Iterable[Value]: ...


REQUIRED = object()

# Core ML's tensors have at most five dimensions.
MAX_RANK = 5

_REGISTRY: dict[str, type[Op]] = {}


class Op:
    """Base of every op record; subclasses are registered by ``name``."""

    name: ClassVar[str]
    inputs: ClassVar[tuple[str, ...]] = ()
    attrs: ClassVar[dict[str, Any]] = {}
    num_outputs: ClassVar[int] = 1
    # The Core ML generation (iOS release) that first runs this op.
    min_target: ClassVar[int] = 15
    # False for ops whose point is to stay unevaluated (compressed weights).
    foldable: ClassVar[bool] = True
    # Purity, read by passes through :func:`is_pure` and :func:`has_effects`. A pure op's
    # outputs depend only on its inputs and attributes and running it does nothing else:
    # it may be merged, folded, or dropped when unread. A ``nondeterministic`` op (random)
    # is not pure but has no other effect: never merged or folded, dropped when unread.
    # ``pure = False`` alone means effects: never dropped. ``nondeterministic`` may be a
    # function of the node (dropout is random only with train=True).
    pure: ClassVar[bool] = True
    nondeterministic: ClassVar[Any] = False
    # True if ``lower`` takes its (constant) inputs as numpy arrays, not MIL values:
    # compressed weights are built from raw arrays and must not also be stored as consts.
    lowers_from_data: ClassVar[bool] = False
    # True if the kernel reads only its inputs' shapes and dtypes (full_like): constant
    # folding evaluates such a node without constant inputs.
    shape_only: ClassVar[bool] = False
    kernel: ClassVar[Any]
    lower: ClassVar[Any] = None
    check: ClassVar[Any] = None
    # True if ``lower`` handles symbolic dimensions (in its values' types or as
    # :class:`~coreml_compile.compiler.symbolic.Expr` sizes in its attributes): it reads
    # sizes at run time, never from the static types.
    dynamic: ClassVar[bool] = False
    # True if each output element comes from the input elements at its own (broadcast)
    # position and no attribute names an axis: the op gives the same values on any
    # layout, so passes may move layout changes past it (sink_transposes) or merge axes
    # through it (lower_rank).
    elementwise: ClassVar[bool] = False
    # "convolution" or "matmul" for the ops accelerators are built for, with
    # ``macs(node)`` counting a node's multiply-accumulates: the hybrid execution
    # strategy keeps such work on Core ML.
    accelerated: ClassVar[str | None] = None
    macs: ClassVar[Any] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            if cls.name in _REGISTRY:
                raise TypeError(f"op {cls.name!r} is defined twice")
            _REGISTRY[cls.name] = cls

    @classmethod
    def bind_attrs(cls, attrs: dict[str, Any]) -> dict[str, Any]:
        """Attributes with defaults filled in; unknown or missing ones raise."""
        unknown = set(attrs) - set(cls.attrs)
        if unknown:
            raise TypeError(f"op {cls.name} has no attribute(s) {sorted(unknown)}")
        bound = {}
        for key, default in cls.attrs.items():
            if key in attrs:
                bound[key] = attrs[key]
            elif default is REQUIRED:
                raise TypeError(f"op {cls.name} needs attribute {key!r}")
            else:
                bound[key] = default
        return bound

    @classmethod
    def run(cls, inputs: Sequence[Any], attrs: dict[str, Any]) -> tuple[Any, ...]:
        """Run the reference kernel; always returns a tuple of outputs."""
        args = group_variadic(cls, list(inputs))
        out = cls.kernel(*args, **attrs)
        return tuple(out) if isinstance(out, tuple | list) else (out,)

    @classmethod
    def infer(cls, inputs: Sequence[Value | None], attrs: dict[str, Any]) -> list[TensorType]:
        """Output types, by running the kernel on meta tensors of the input types."""
        import torch

        from coreml_compile.compiler import symbolic

        if symbolic.has_expr(attrs) or not all(v.type.is_static for v in inputs if v is not None):
            return cls._infer_symbolic(inputs, attrs)
        metas = []
        for v in inputs:
            if v is None:
                metas.append(None)
            else:
                metas.append(
                    torch.empty(v.type.shape, dtype=dtypes.to_torch(v.type.dtype), device="meta")
                )
        outs = cls.run(metas, attrs)
        return [TensorType(dtypes.from_torch(o.dtype), tuple(o.shape)) for o in outs]

    @classmethod
    def _infer_symbolic(
        cls, inputs: Sequence[Value | None], attrs: dict[str, Any]
    ) -> list[TensorType]:
        """The kernel's shape rule on symbolic dimensions (compiler/symbolic.py)."""
        from coreml_compile.compiler import symbolic

        shapes = [
            None if v is None else (v.type.shape, dtypes.to_torch(v.type.dtype)) for v in inputs
        ]
        outs = symbolic.infer(
            lambda tensors, symbols: cls.run(tensors, symbolic.resolve(attrs, symbols)),
            shapes,
            symbolic.expr_names(attrs),
        )
        return [
            TensorType(dtypes.from_torch(o.dtype), tuple(to_dim(d) for d in o.shape))
            for o, to_dim in outs
        ]


def op_label(node: Node) -> str:
    """The op's name for people: its record, or for the fallback, the ATen overload."""
    if node.op == "onnx":
        return f"onnx::{node.attrs.get('op_type', '?')}"
    return node.attrs.get("target", node.op) if node.op == "aten" else node.op


def is_pure(node: Node) -> bool:
    """True if ``node`` may be merged with an equal node, folded, or dropped when unread:
    its outputs depend only on its inputs and attributes, and it does nothing else.

    Random ops are not pure. For the ``aten`` fallback the answer comes from torch's
    schema and tags (``nondeterministic_seeded``, mutable arguments); an overload that
    cannot be resolved is impure.
    """
    return _purity(node) == "pure"


def has_effects(node: Node) -> bool:
    """True if running ``node`` does more than compute its outputs (writes an argument,
    asserts), so it must not be dropped even when nothing reads it. Random ops have no
    effects: an unread one may go."""
    return _purity(node) == "effects"


def _purity(node: Node) -> str:
    """ "pure", "nondeterministic" or "effects"."""
    if node.op == "aten":
        return _aten_purity(node.attrs.get("target", ""))
    record = get_record(node.op)
    random = record.nondeterministic
    if random(node) if callable(random) else random:
        return "nondeterministic"
    return "pure" if record.pure else "effects"


# Overloads whose result is uninitialised memory: its values are not determined either.
_UNINITIALISED = frozenset(
    {"empty", "empty_like", "empty_strided", "empty_permuted", "new_empty", "new_empty_strided"}
)


@functools.cache
def _aten_purity(target: str) -> str:
    import torch

    from coreml_compile.compiler.ops.fallback import resolve_overload

    try:
        overload = resolve_overload(target)
        schema = overload._schema
    except Exception:  # refused or unknown: nothing is known about it
        return "effects"
    if schema.is_mutable or not schema.returns:
        return "effects"  # writes an argument, or exists for its effect (asserts)
    packet = target.split("::", 1)[-1].partition(".")[0]
    if torch.Tag.nondeterministic_seeded in overload.tags or packet in _UNINITIALISED:
        return "nondeterministic"
    return "pure"


def macs(node: Node) -> int:
    """Multiply-accumulates one run of ``node`` does (0 for ops that are not products)."""
    record = get_record(node.op)
    if record.macs is None or not all(v.type.is_static for v in node.present_inputs()):
        return 0  # dynamic sizes: the work is not known before the run
    return int(record.macs(node))


def group_variadic(record: type[Op], inputs: list[Any]) -> list[Any]:
    """Turn the flat input list back into the kernel's arguments (a list for ``*name``)."""
    if any(n.startswith("*") for n in record.inputs):
        fixed = [n for n in record.inputs if not n.startswith("*")]
        # By convention the variadic input comes first (cat's tensors, the aten fallback).
        return [inputs[: len(inputs) - len(fixed)], *inputs[len(inputs) - len(fixed) :]]
    return inputs


def get_record(name: str) -> type[Op]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no op record named {name!r}") from None


def all_records() -> dict[str, type[Op]]:
    return dict(sorted(_REGISTRY.items()))


def unsupported_reason(node: Node, generation: int) -> str | None:
    """Why Core ML cannot run ``node`` for a target generation, or None if it can.

    This is the one place the question is answered: the lowering refuses what it says,
    and the partitioner asks it.
    """
    from coreml_compile.compiler import symbolic

    record = get_record(node.op)
    label = op_label(node)
    if record.lower is None:
        return f"{label}: no Core ML lowering"
    if generation < record.min_target:
        return f"{label}: needs deployment target iOS{record.min_target} or later"
    for v in [*node.present_inputs(), *node.outputs]:
        if v.type.dtype == "float64":
            return f"{label}: Core ML has no float64 tensors ({v.name})"
        if v.type.rank > MAX_RANK:
            return f"{label}: rank {v.type.rank} exceeds Core ML's limit of {MAX_RANK} ({v.name})"
        if not v.type.is_static and not record.dynamic:
            return f"{label}: no lowering for dynamic shapes yet"
    if not record.dynamic and symbolic.has_expr(node.attrs):
        return f"{label}: no lowering for sizes computed from dynamic shapes yet"
    if record.check is not None:
        reason = record.check(node, generation)
        if reason:
            return f"{label}: {reason}"
    return None


# Importing the family modules registers their records.
from coreml_compile.compiler.ops import (  # noqa: E402,F401
    activation,
    attention,
    compression,
    elementwise,
    factory,
    fallback,
    im2col,
    indexing,
    linalg,
    logic,
    normalization,
    pooling,
    recurrent,
    reduction,
    resize,
    shape,
    triangular,
)
