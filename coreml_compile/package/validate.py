"""Checking a package's execution plan whole, before any of it runs.

``read_plan`` turns ``plan.json`` into the plan objects, checking every field's type;
``check_plan`` then checks that the steps fit together:

- steps have unique names ``partition_<i>``, a known kind, and run in an order where
  each tensor a step reads is a model input or made by an earlier step, and no tensor
  is made twice; every model output is made;
- every tensor a step reads or writes has a declared type, and the model's inputs and
  outputs agree with it;
- a fallback step's graph reads and makes exactly its step's tensors, with the declared
  types; each node is an op of the table with the attributes it takes, each ``aten``
  node passes the allow-rule (``compiler/ops/fallback.py``), and so does each ``onnx``
  node (its own rule there: standard-domain ONNX ops only), and each node's declared
  output types are what the op computes from its inputs (on fake tensors, so nothing
  is allocated), within the size cap;
- a Core ML step's function takes and returns exactly its step's tensors, with the
  declared shapes and kinds (float, integer, bool).

A defect is a :class:`~coreml_compile.errors.PackageError` naming the step, node or
tensor.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from coreml_compile.compiler.ir import Graph, TensorType
from coreml_compile.compiler.mil import io_dtype
from coreml_compile.compiler.serialize import graph_from_json, tensor_type_from_json
from coreml_compile.errors import CoreMLCompileError, PackageError, PlanFormatError, first_line

_STEP_NAME = re.compile(r"partition_\d{1,6}")
KINDS = ("coreml", "fallback")
LOCATIONS = ("root", "nested")
MAX_STEPS = 100_000


def _fail(message: str) -> PackageError:
    return PlanFormatError(f"the package's plan is malformed: {message}")


def _expect(value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    # bool is an int to Python; a count or a size must not be one.
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _tuple(kind)):
        raise _fail(f"{what} is {value!r}, not {_kind_name(kind)}")
    return value


def _tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in _tuple(kind))


def _names(value: Any, what: str) -> list[str]:
    _expect(value, list, what)
    for v in value:
        _expect(v, str, f"an entry of {what}")
    return value


def _tensors(value: Any, what: str) -> dict[str, TensorType]:
    out: dict[str, TensorType] = {}
    for item in _expect(value, list, what):
        _expect(item, dict, f"an entry of {what}")
        name = _expect(item.get("name"), str, f"a tensor name in {what}")
        if name in out:
            raise _fail(f"{what} lists {name} twice")
        out[name] = _type(item, f"{what}: {name}")
    return out


def _type(doc: Any, what: str) -> TensorType:
    try:
        return tensor_type_from_json(doc)
    except PackageError as exc:
        raise _fail(f"{what}: {exc}") from None


def read_plan(plan_cls: type, step_cls: type, doc: Any, blob: bytearray) -> Any:
    """A ``plan_cls`` from a plan document, with every field's type checked."""
    _expect(doc, dict, "the plan")
    steps = []
    for i, item in enumerate(_expect(doc.get("steps"), list, "steps")):
        if i >= MAX_STEPS:
            raise _fail(f"more than {MAX_STEPS:,} steps")
        _expect(item, dict, f"step {i}")
        name = _expect(item.get("name"), str, f"step {i}'s name")
        if not _STEP_NAME.fullmatch(name):
            raise _fail(f"step name {name!r} is not partition_<number>")
        kind = item.get("kind")
        if kind not in KINDS:
            raise _fail(f"step {name} has kind {kind!r}; the kinds are {', '.join(KINDS)}")
        ops = _expect(item.get("ops", {}), dict, f"{name}'s op counts")
        for op, count in ops.items():
            _expect(count, int, f"{name}'s count of {op}")
        reasons = _expect(item.get("reasons", {}), dict, f"{name}'s reasons")
        for node, reason in reasons.items():
            _expect(reason, str, f"{name}'s reason for {node}")
        location = item.get("location", "root")
        if location not in LOCATIONS:
            raise _fail(f"step {name} has location {location!r}")
        graph = None
        if kind == "fallback":
            graph = graph_from_json(item.get("graph"), blob)
        steps.append(
            step_cls(
                name,
                kind,
                _names(item.get("inputs"), f"{name}'s inputs"),
                _names(item.get("outputs"), f"{name}'s outputs"),
                ops,
                reasons,
                _expect(item.get("decision", ""), str, f"{name}'s decision"),
                location,
                graph,
            )
        )
    strategy = _expect(doc.get("strategy", {}), dict, "the strategy")
    return plan_cls(
        steps,
        _tensors(doc.get("inputs"), "the model's inputs"),
        _tensors(doc.get("outputs"), "the model's outputs"),
        _expect(doc.get("multifunction"), bool, "multifunction"),
        strategy,
        _tensors(doc.get("tensors"), "the declared tensors"),
    )


def strategy_from_plan(strategy_cls: type, settings: dict[str, Any]) -> Any:
    """The stored strategy settings as ``strategy_cls``; unknown keys (a newer writer's)
    are left out, and each known one must have its field's type."""
    fields = {f.name: f for f in dataclasses.fields(strategy_cls)}
    kwargs = {}
    for key, value in settings.items():
        if key not in fields:
            continue
        default = fields[key].default
        if default is None and value is None:
            kwargs[key] = None
            continue
        # An optional setting is a number; a number setting takes an int as well.
        numeric = default is None or isinstance(default, float)
        expected = (int, float) if numeric else (type(default),)
        _expect(value, expected, f"the strategy setting {key}")
        kwargs[key] = value
    try:
        return strategy_cls(**kwargs)
    except CoreMLCompileError as exc:
        raise _fail(f"the stored strategy: {exc}") from None


# -- the steps fit together ---------------------------------------------------------


def check_plan(plan: Any, signatures: dict[str, tuple[dict, dict]]) -> None:
    """Raise PackageError unless ``plan``'s steps fit together (see the module docstring).

    ``signatures``: Core ML step name -> (inputs, outputs) of its function, each a dict
    name -> (shape, MIL dtype).
    """
    declared = plan.tensors
    for where, tensors in (("input", plan.inputs), ("output", plan.outputs)):
        for name, t in tensors.items():
            if declared.get(name) != t:
                raise _fail(
                    f"the model {where} {name} is {t} but the plan declares {declared.get(name)}"
                )
    defined = set(plan.inputs)
    names = set()
    if plan.multifunction and any(s.location == "nested" for s in plan.steps):
        raise _fail("a multifunction package has no nested partitions")
    for step in plan.steps:
        if step.name in names:
            raise _fail(f"two steps are named {step.name}")
        names.add(step.name)
        for name in step.inputs:
            if name not in defined:
                raise _fail(f"{step.name} reads {name} before any step makes it")
        if len(set(step.inputs)) != len(step.inputs):
            raise _fail(f"{step.name} lists an input twice")
        for name in step.outputs:
            if name in defined:
                raise _fail(f"{step.name} makes {name}, which is already defined")
            if name not in declared:
                raise _fail(f"{step.name} makes {name}, whose type the plan does not declare")
            defined.add(name)
        if step.kind == "fallback":
            _check_fallback(step, declared)
        else:
            if step.name not in signatures:
                raise _fail(f"the package has no Core ML function for {step.name}")
            _check_coreml(step, declared, *signatures[step.name])
    for name in plan.outputs:
        if name not in defined:
            raise _fail(f"no step makes the model output {name}")


def _check_coreml(step: Any, declared: dict[str, TensorType], ins: dict, outs: dict) -> None:
    for role, names, signature in (("input", step.inputs, ins), ("output", step.outputs, outs)):
        if set(names) != set(signature):
            raise _fail(
                f"{step.name}'s Core ML function has {role}s {sorted(signature)}, "
                f"the plan says {sorted(names)}"
            )
        for name in names:
            shape, mil_dtype = signature[name]
            t = declared[name]
            if tuple(shape) != t.shape or mil_dtype != io_dtype(t.dtype):
                raise _fail(
                    f"{step.name}'s Core ML {role} {name} is {mil_dtype}{list(shape)}, "
                    f"the plan declares {t}"
                )


def _check_fallback(step: Any, declared: dict[str, TensorType]) -> None:
    graph: Graph = step.graph
    for role, values, names in (
        ("input", graph.inputs, step.inputs),
        ("output", graph.outputs, step.outputs),
    ):
        if [v.name for v in values] != names:
            raise _fail(
                f"{step.name}'s graph has {role}s {[v.name for v in values]}, the plan says {names}"
            )
        for v in values:
            if v.type != declared[v.name]:
                raise _fail(
                    f"{step.name}'s graph {role} {v.name} is {v.type}, the plan declares "
                    f"{declared[v.name]}"
                )
    check_fallback_graph(graph, step.name)


def check_fallback_graph(graph: Graph, where: str) -> None:
    """Each node an allowed op whose declared outputs are what it computes."""
    from coreml_compile.compiler.ops import get_record
    from coreml_compile.compiler.ops.fallback import FallbackOpRefused, onnx_node, refusal

    for node in graph.nodes:
        record = get_record(node.op)
        label = f"{where}: node {node.name} ({node.op})"
        if node.op == "aten":
            reason = refusal(node.attrs.get("target"))
            if reason is not None:
                raise PackageError(f"{label} may not run: {reason}")
        elif node.op == "onnx":
            try:
                attrs = node.attrs
                onnx_node(attrs.get("op_type"), attrs.get("opset"), attrs.get("node"))
            except FallbackOpRefused as exc:
                raise PackageError(f"{label} may not run: {exc}") from None
        try:
            node.attrs = record.bind_attrs(node.attrs)
        except TypeError as exc:
            raise _fail(f"{label}: {exc}") from None
        try:
            inferred = record.infer(node.inputs, node.attrs)
        except FallbackOpRefused as exc:
            raise PackageError(f"{label} may not run: {exc}") from None
        except Exception as exc:  # the kernel refused these inputs or attributes
            raise _fail(f"{label} cannot run on its inputs: {first_line(exc)}") from None
        recorded = [o.type for o in node.outputs]
        if list(inferred) != recorded:
            raise _fail(
                f"{label} declares outputs {', '.join(map(str, recorded))} but computes "
                f"{', '.join(map(str, inferred))}"
            )
    try:
        graph.verify(check_types=False)
    except CoreMLCompileError as exc:
        raise _fail(f"{where}: {exc}") from None
