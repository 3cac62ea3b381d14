"""The ONNX frontend: ``onnx.ModelProto`` → IR graph, onto the same op records as ATen.

Steps, in order:

1. load (``.onnx`` path with its external data, bytes, or a ModelProto);
2. ``onnx.checker``; models of a default-domain opset older than :data:`UPGRADE_BELOW`
   are upgraded to it with ``onnx.version_converter`` (if the converter cannot, a model of
   opset 7 onwards is read as it is, the table reads both forms; an older one is refused);
3. given input shapes replace the graph's (symbolic dims must be filled in), then
   ``onnx.shape_inference`` (strict);
4. initializers become IR constants; a node whose inputs are all constant (``Constant``,
   ``ConstantOfShape``, ``Shape``/``Gather``/``Unsqueeze`` on shapes...) is folded by
   running it with ``onnx.reference``, and ``Shape``/``Size`` of a static tensor fold
   to constants without running anything;
5. every other node goes through ``onnx_table.ONNX_TO_IR``; a node the table does not
   model (no entry, or the entry raises ``NotMapped``) becomes an ``onnx`` fallback node
   that keeps its NodeProto and runs through ``onnx.reference``
   (``compiler/ops/fallback.py``, which also says which ONNX ops a package may run);
6. graph inputs and outputs keep their ONNX names (made identifier-safe).

Element types: the IR holds each ONNX tensor in what Core ML computes in
(``dtypes.ONNX_HELD``): int8/uint8/int16/uint16 and int4/uint4/int2/uint2 in int32,
uint32/uint64 in int64, float64 in float32 (as coremltools converts; float64 loses
precision), bfloat16/float8/float4 in float32 (exactly). A small integer result wraps
around at its own width after every op that can leave its range, so the int32
arithmetic gives ONNX's values; a Cast that rounds to a narrow float runs in
onnx.reference. An ``onnx`` fallback node reads and makes its ONNX types: its
``input_types``/``output_types`` say which, and its kernel converts at its edges.

Failures of loading, the checker and shape inference are one-line ``ModelFileError``s,
and missing input shapes an ``InputSpecError``.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from coreml_compile.compiler import dtypes
from coreml_compile.compiler.frontends.onnx_table import (
    ONNX_DTYPES,
    ONNX_TO_IR,
    WRAPS,
    NotMapped,
    ir_dtype,
)
from coreml_compile.compiler.ir import _NAME_SAFE, Graph, Node, TensorType, Value
from coreml_compile.compiler.ops import get_record
from coreml_compile.errors import InputSpecError, ModelFileError, first_line

# The oldest default-domain opset the table reads when the converter cannot upgrade it.
OLDEST_OPSET = 7
# Models of an older default-domain opset are upgraded to this one first.
UPGRADE_BELOW = 13

# Ops never folded even with constant inputs: random ones.
_NO_FOLD = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
     "Bernoulli", "Dropout"}
)  # fmt: skip
# A folded constant bigger than this stays a node (as big as a tensor may be).
_FOLD_LIMIT_BYTES = 1 << 32
# Ops whose integer results stay within their inputs' range (they move, pick or bound
# values): a small integer type held in int32 needs no wrap after them.
_KEEPS_RANGE = frozenset(
    {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Split",
     "Slice", "Gather", "GatherElements", "GatherND", "Expand", "Tile", "Max", "Min", "Where",
     "MaxPool", "ReduceMax", "ReduceMin", "DepthToSpace", "SpaceToDepth", "Relu", "Clip",
     "Pad", "Sign", "Dropout", "Mod", "TopK", "Trilu"}
)  # fmt: skip


def is_onnx_source(model: Any) -> bool:
    """True for an ``onnx.ModelProto`` or a path ending in ``.onnx``."""
    if isinstance(model, str | os.PathLike):
        return str(model).lower().endswith(".onnx")
    return type(model).__name__ == "ModelProto" and hasattr(model, "graph")


def load(source: Any) -> Any:
    """A ModelProto from a path (external data beside it is loaded), bytes, or a ModelProto."""
    import onnx

    if isinstance(source, onnx.ModelProto):
        return source
    if isinstance(source, bytes):
        try:
            return onnx.load_model_from_string(source)
        except Exception as exc:
            raise ModelFileError(f"not an ONNX model: {first_line(exc)}") from exc
    path = Path(source)
    if not path.is_file():
        raise ModelFileError(f"ONNX model not found: {path}")
    try:
        return onnx.load(str(path), load_external_data=True)
    except Exception as exc:
        raise ModelFileError(f"{path} is not a loadable ONNX model: {first_line(exc)}") from exc


def _default_opset(model: Any) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise ModelFileError("the ONNX model imports no opset of the default domain")


def _shape_overrides(
    model: Any, shapes: Sequence[Any] | Mapping[str, Any] | None
) -> dict[str, tuple[int, ...]]:
    """Given shapes by input name: a list (in graph-input order) or a {name: shape} dict;
    each shape a tuple or an array/tensor whose shape is taken."""
    if shapes is None:
        return {}
    names = _input_names(model)
    if isinstance(shapes, Mapping):
        unknown = set(shapes) - set(names)
        if unknown:
            raise InputSpecError(
                f"no ONNX input named {', '.join(sorted(unknown))}; inputs: {', '.join(names)}"
            )
        items = list(shapes.items())
    else:
        shapes = list(shapes)
        if len(shapes) != len(names):
            raise InputSpecError(
                f"{len(shapes)} input shape(s) given but the model takes {len(names)} "
                f"input(s): {', '.join(names)}"
            )
        items = list(zip(names, shapes, strict=True))
    out = {}
    for name, shape in items:
        if hasattr(shape, "shape") and not isinstance(shape, tuple | list):
            shape = tuple(shape.shape)
        out[name] = tuple(int(d) for d in shape)
    return out


def _input_names(model: Any) -> list[str]:
    inits = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


def prepare(model: Any, input_shapes: Any = None) -> Any:
    """Checked, upgraded, shape-inferred copy of ``model`` with the given input shapes."""
    import onnx
    from onnx import helper, shape_inference, version_converter

    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ModelFileError(f"the ONNX checker refused the model: {first_line(exc)}") from exc
    opset = _default_opset(model)
    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise ModelFileError(
            f"ONNX opset {opset} is newer than the installed onnx knows ({newest})"
        )
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    if opset < UPGRADE_BELOW:
        if opset < OLDEST_OPSET:
            _channel_slopes(copy)
        try:
            upgraded = version_converter.convert_version(copy, UPGRADE_BELOW)
            # The converter keeps the IR version; an old one (3) wants every initializer
            # it adds listed as a graph input, which the opset it converts to does not.
            opsets = [helper.make_opsetid("", UPGRADE_BELOW)]
            upgraded.ir_version = max(upgraded.ir_version, helper.find_min_ir_version_for(opsets))
            onnx.checker.check_model(upgraded)
            copy = upgraded
        except Exception as exc:
            # The table reads the forms of opsets 7-12 too, but not older ones.
            if opset < OLDEST_OPSET:
                raise ModelFileError(
                    f"ONNX opset {opset} is older than the oldest read as it is "
                    f"({OLDEST_OPSET}) and onnx.version_converter cannot upgrade it: "
                    f"{first_line(exc)}"
                ) from exc
    overrides = _shape_overrides(copy, input_shapes)
    for value_info in copy.graph.input:
        shape = overrides.get(value_info.name)
        if shape is None:
            continue
        dims = value_info.type.tensor_type.shape.dim
        if len(dims) != len(shape):
            raise InputSpecError(
                f"input {value_info.name} has rank {len(dims)} but the shape given is {list(shape)}"
            )
        for dim, size in zip(dims, shape, strict=True):
            if dim.HasField("dim_value") and dim.dim_value != size:
                raise InputSpecError(
                    f"input {value_info.name}: dimension {dim.dim_value} cannot be {size} "
                    f"(shape given {list(shape)})"
                )
            dim.Clear()
            dim.dim_value = size
    _write_function_defaults(copy)
    try:
        return shape_inference.infer_shapes(copy, check_type=True, strict_mode=True, data_prop=True)
    except Exception as exc:
        raise ModelFileError(f"ONNX shape inference failed: {first_line(exc)}") from exc


def _channel_slopes(model: Any) -> None:
    """Give the PRelu slopes of an opset older than 7 the shape that broadcasts them along
    the channel axis (axis 1), as they were read then: from opset 7 a slope broadcasts
    against the trailing axes, and the version converter leaves it as it is."""
    import onnx
    from onnx import helper

    if not any(node.op_type == "PRelu" for node in model.graph.node):
        return
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        return
    g = inferred.graph
    ranks = {
        vi.name: len(vi.type.tensor_type.shape.dim)
        for vi in [*g.input, *g.value_info, *g.output]
        if vi.type.tensor_type.HasField("shape")
    }
    sizes = {vi.name: vi.type.tensor_type.shape.dim for vi in g.input}
    sizes.update({t.name: t.dims for t in g.initializer})
    nodes = []
    for node in model.graph.node:
        x, slope = (node.input[0], node.input[1]) if node.op_type == "PRelu" else ("", "")
        dims = sizes.get(slope)
        if ranks.get(x, 0) > 2 and dims is not None and len(dims) == 1:
            size = dims[0] if isinstance(dims[0], int) else dims[0].dim_value
            if size != 1:
                lifted = f"{slope}_per_channel_{len(nodes)}"
                axes = list(range(1, ranks[x] - 1))
                nodes.append(helper.make_node("Unsqueeze", [slope], [lifted], axes=axes))
                node.input[1] = lifted
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def _write_function_defaults(model: Any) -> None:
    """Write out the defaults of attributes left off nodes of function-defined ops.

    onnx's shape inference expands such a node's function body without the defaults of
    the attributes the body reads by reference, and fails on them
    (MeanVarianceNormalization without ``axes``); a default written out means the same.
    """
    import onnx

    opset = _default_opset(model)
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        try:
            schema = onnx.defs.get_schema(node.op_type, opset, "")
        except onnx.defs.SchemaError:
            continue
        if not schema.has_function:
            continue
        given = {a.name for a in node.attribute}
        for name, attribute in schema.attributes.items():
            default = attribute.default_value
            if name not in given and default.type != onnx.AttributeProto.UNDEFINED:
                written = node.attribute.add()
                written.CopyFrom(default)
                written.name = name


class _Node:
    """A NodeProto as the table reads it: attributes as Python values, its opset."""

    def __init__(self, proto: Any, opset: int, consumed: set[str] = frozenset()):
        from onnx import helper

        self.consumed = consumed
        self.proto = proto
        self.op_type = proto.op_type
        self.name = proto.name
        self.inputs = list(proto.input)
        self.outputs = list(proto.output)
        self.opset = opset
        self.attrs: dict[str, Any] = {}
        for a in proto.attribute:
            value = helper.get_attribute_value(a)
            if isinstance(value, bytes):
                value = value.decode()
            elif isinstance(value, list) and value and isinstance(value[0], bytes):
                value = [v.decode() for v in value]
            self.attrs[a.name] = value

    def used(self, *indices: int) -> bool:
        """True if any of these outputs is read (by a node or as a graph output)."""
        return any(i < len(self.outputs) and self.outputs[i] in self.consumed for i in indices)

    def has(self, name: str) -> bool:
        return name in self.attrs

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)


class _Context:
    """What a table entry sees: the node's inputs, and a way to add IR nodes."""

    def __init__(self, importer: _Importer, node: _Node):
        self.importer = importer
        self.graph = importer.graph
        self.node = node
        self.added: list[Node] = []
        self.base = node.outputs[0] if node.outputs and node.outputs[0] else node.op_type

    def input(self, i: int) -> Value | None:
        if i >= len(self.node.inputs) or not self.node.inputs[i]:
            return None
        return self.importer.env[self.node.inputs[i]]

    def inputs(self) -> list[Value]:
        values = [self.input(i) for i in range(len(self.node.inputs))]
        while values and values[-1] is None:
            values.pop()
        return values

    def onnx_type(self, i: int) -> str | None:
        """Input ``i``'s ONNX element type (numpy name), where ONNX says it."""
        if i >= len(self.node.inputs):
            return None
        return ONNX_DTYPES.get(self.importer.elem.get(self.node.inputs[i], 0))

    def const(self, i: int) -> np.ndarray | None:
        v = self.input(i)
        return None if v is None else v.data

    def constant(self, array: np.ndarray) -> Value:
        return self.graph.add_constant(f"{self.base}_const", np.asarray(array))

    def scalar(self, value: Any, like: Value) -> Value:
        dtype = like.type.dtype
        if isinstance(value, float) and not dtype.startswith("float"):
            dtype = "float32"
        return self.constant(np.array(value, dtype=dtype))

    def add_multi(self, op: str, inputs: Sequence[Value | None], **attrs: Any) -> list[Value]:
        record = get_record(op)
        attrs = record.bind_attrs(attrs)
        node = self.graph.add_node(op, list(inputs), attrs, name=self.base)
        self.added.append(node)
        return list(node.outputs)

    def add(self, op: str, inputs: Sequence[Value | None], **attrs: Any) -> Value:
        return self.add_multi(op, inputs, **attrs)[0]

    def undo(self) -> None:
        for node in reversed(self.added):
            for out in node.outputs:
                if out.users:
                    return
            self.graph.remove_node(node)


class _Importer:
    def __init__(self, model: Any, name: str):
        self.model = model
        self.graph = Graph(name)
        self.env: dict[str, Value] = {}
        self.opset = _default_opset(model)
        self.declared: dict[str, TensorType | None] = {}

    def run(self) -> Graph:
        g = self.model.graph
        for vi in [*g.value_info, *g.output]:
            self.declared[vi.name] = self._declared_type(vi)
        # Each value's ONNX element type (the IR may hold it wider: dtypes.ONNX_HELD).
        self.elem: dict[str, int] = {
            vi.name: vi.type.tensor_type.elem_type
            for vi in [*g.input, *g.value_info, *g.output]
            if vi.type.HasField("tensor_type")
        }
        # Constants' values in their ONNX dtypes, for folding nodes of constant inputs.
        self.exact: dict[str, np.ndarray] = {}
        self.consumed = {n for proto in g.node for n in proto.input} | {o.name for o in g.output}
        self._initializers()
        self._inputs()
        for proto in g.node:
            self._node(proto)
        for out in g.output:
            value = self.env.get(out.name)
            if value is None:
                raise ModelFileError(f"ONNX output {out.name} is not computed by the graph")
            self.graph.outputs.append(self._name_output(value, out.name))
        return self.graph

    # -- inputs, constants, outputs -----------------------------------------------------

    @staticmethod
    def _declared_type(vi: Any) -> TensorType | None:
        t = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or not t.HasField("shape"):
            return None
        if not all(d.HasField("dim_value") for d in t.shape.dim):
            return None
        try:
            return TensorType(ir_dtype(t.elem_type), tuple(d.dim_value for d in t.shape.dim))
        except NotMapped:
            return None

    def _initializers(self) -> None:
        from onnx import numpy_helper

        for tensor in self.model.graph.initializer:
            if tensor.data_type not in ONNX_DTYPES:
                self._bad_type(tensor)
            self.elem[tensor.name] = tensor.data_type
            self._bind_constant(tensor.name, numpy_helper.to_array(tensor))

    def _bad_type(self, tensor: Any) -> None:
        import onnx

        kind = onnx.TensorProto.DataType.Name(tensor.data_type)
        raise ModelFileError(f"initializer {tensor.name} holds {kind}, which has no IR equivalent")

    def _inputs(self) -> None:
        missing = []
        for vi in self.model.graph.input:
            if vi.name in self.env:
                continue  # an initializer listed as an input (older exporters): a constant
            t = vi.type.tensor_type
            if not vi.type.HasField("tensor_type"):
                raise InputSpecError(f"input {vi.name} is not a tensor")
            try:
                dtype = ir_dtype(t.elem_type)
            except NotMapped as exc:
                raise InputSpecError(f"input {vi.name}: {exc}") from None
            dims = []
            for axis, d in enumerate(t.shape.dim):
                if d.HasField("dim_value"):
                    dims.append(int(d.dim_value))
                else:
                    missing.append(f"{vi.name} axis {axis} ({d.dim_param or '?'})")
                    dims.append(1)
            self.env[vi.name] = self.graph.add_input(vi.name, TensorType(dtype, tuple(dims)))
        if missing:
            raise InputSpecError(
                f"symbolic input dimension(s) {', '.join(missing)}: give the input shapes "
                "(--input-shape, one per input, or example_inputs)"
            )

    def _name_output(self, value: Value, name: str) -> Value:
        """Give an output its ONNX name (identifier-safe); an intermediate value or node
        that took the name first gets another one."""
        g = self.graph
        if value.producer is None or value in g.outputs:
            value = g.add_node("identity", [value], output_types=[value.type], name=name).output
        safe = _NAME_SAFE.sub("_", name) or "v"
        safe = "_" + safe if safe[0].isdigit() else safe
        if value.name == safe:
            return value
        for v in list(g.values()):
            if v.name == safe:
                if v.is_constant:  # constants are kept by name
                    del g.constants[v.name]
                    self._rename(v, f"{safe}_0")
                    g.constants[v.name] = v
                else:
                    self._rename(v, f"{safe}_0")
        for n in g.nodes:
            if n.name == safe:
                n.name = g.fresh_name(f"{safe}_0")
        self._rename(value, safe)
        return value

    def _rename(self, value: Value, name: str) -> None:
        """Rename a value, and its producer when the node is named after it."""
        producer, old = value.producer, value.name
        self.graph.rename(value, name)
        if producer is not None and producer.name == old:
            producer.name = value.name

    # -- nodes ----------------------------------------------------------------------------

    def _node(self, proto: Any) -> None:
        node = _Node(proto, self.opset, self.consumed)
        if proto.domain in ("", "ai.onnx") and self._fold(node):
            return
        translate = ONNX_TO_IR.get(node.op_type) if proto.domain in ("", "ai.onnx") else None
        reason = f"{node.op_type}: no mapping onto an op record"
        if translate is not None:
            ctx = _Context(self, node)
            try:
                outputs = self._wrap(ctx, node, translate(ctx, node))
                self._check_types(node, outputs)
            except NotMapped as exc:
                ctx.undo()
                reason = f"{node.op_type}: {exc}"
            else:
                for name, value in zip(node.outputs, outputs, strict=False):
                    if name and value is not None:
                        self.env[name] = value
                return
        self._fallback(node, reason)

    def _check_types(self, node: _Node, outputs: list[Value | None]) -> None:
        """The IR's output types must be what ONNX's shape inference says, where it says."""
        for name, value in zip(node.outputs, outputs, strict=False):
            declared = self.declared.get(name)
            if not name or value is None or declared is None:
                continue
            if value.type != declared:
                raise NotMapped(f"the IR computes {value.type} where ONNX infers {declared}")

    def _fold(self, node: _Node) -> bool:
        """Replace a node of constant inputs (or a Shape of a static tensor) by constants."""
        if node.op_type in _NO_FOLD:
            return False
        present = [n for n in node.inputs if n]
        if node.op_type in ("Shape", "Size") and present:
            shape = self.env[present[0]].type.shape
            if node.op_type == "Size":
                self._bind_constant(node.outputs[0], np.array(int(np.prod(shape)), np.int64))
                return True
            start, end = node.attr("start", 0), node.attr("end", None)
            self._bind_constant(node.outputs[0], np.array(shape[start:end], dtype=np.int64))
            return True
        # CastLike reads only the element type of its second input: with a constant first
        # input it folds (a -inf cast like the attention scores is a Pad's constant value).
        typed_only = {node.inputs[1]} if node.op_type == "CastLike" and len(present) == 2 else set()
        if any(not self.env[n].is_constant for n in present if n not in typed_only):
            return False
        if any(a.type == a.GRAPH or a.type == a.GRAPHS for a in node.proto.attribute):
            return False
        from onnx import helper
        from onnx.reference import ReferenceEvaluator

        feeds = {}
        for n in present:
            if n in typed_only and not self.env[n].is_constant:
                if n not in self.elem:
                    return False
                feeds[n] = np.zeros(0, helper.tensor_dtype_to_np_dtype(self.elem[n]))
            else:
                feeds[n] = self.exact.get(n, self.env[n].data)
        try:
            evaluator = ReferenceEvaluator(node.proto, opsets={"": self.opset})
            results = evaluator.run(None, feeds)
        except Exception:
            return False
        if sum(np.asarray(r).nbytes for r in results) > _FOLD_LIMIT_BYTES:
            return False
        for name, result in zip(node.outputs, results, strict=False):
            if name:
                self._bind_constant(name, np.asarray(result))
        return True

    def _bind_constant(self, name: str, array: np.ndarray) -> None:
        """A constant in the dtype the IR holds it in; its ONNX value is kept for folding."""
        self.exact[name] = array
        held = dtypes.held(array.dtype.name)
        if held not in dtypes.NUMPY:
            held = "float32" if array.dtype.kind == "f" else held
        array = array.astype(dtypes.NUMPY[held]) if held in dtypes.NUMPY else array
        self.env[name] = self.graph.add_constant(name, np.array(array, order="C"))

    def _wrap(self, ctx: _Context, node: _Node, outputs: list[Value | None]) -> list[Value | None]:
        """Small integer results held in int32, brought back into their type's range
        (``lowest + (x - lowest) mod span``) after ops that can leave it."""
        if node.op_type in _KEEPS_RANGE:
            return outputs
        wrapped = []
        for name, value in zip(node.outputs, outputs, strict=False):
            kind = ONNX_DTYPES.get(self.elem.get(name, 0))
            if value is None or kind not in WRAPS or value.type.dtype != "int32":
                wrapped.append(value)
                continue
            lowest, span = WRAPS[kind]
            low = ctx.constant(np.array(lowest, np.int32))
            shifted = ctx.add("sub", [value, low]) if lowest else value
            value = ctx.add("remainder", [shifted, ctx.constant(np.array(span, np.int32))])
            wrapped.append(ctx.add("add", [value, low]) if lowest else value)
        return wrapped

    def _fallback(self, node: _Node, reason: str) -> None:
        """An ``onnx`` node keeping the NodeProto, run by onnx.reference."""
        from coreml_compile.compiler.ops.fallback import onnx_refusal

        refused = onnx_refusal(node.proto.domain, node.op_type, self.opset, node.proto)
        if refused is not None:
            raise ModelFileError(
                f"node {node.name or node.outputs[0]} ({node.op_type}) has no Core ML mapping "
                f"and may not run from a package either: {refused}"
            )
        ins = [self.env[n] if n else None for n in node.inputs]
        proto = node.proto
        label = next((n for n in node.outputs if n), node.op_type)
        if not all(node.outputs):
            # An absent optional output ('') between present ones (an LSTM's Y): onnx.reference
            # computes it anyway, so the stored node names it and the IR keeps it unread.
            proto = type(proto)()
            proto.CopyFrom(node.proto)
            for j, name in enumerate(proto.output):
                proto.output[j] = name or f"{label}_unused_{j}"
        # Where the IR holds a value in another type than ONNX's (an int8 in int32), the
        # node's kernel converts it at its edges: ONNX ops are typed strictly.
        in_types = [
            self._onnx_elem(n) if v is not None and self._onnx_elem(n) != _elem(v.type.dtype) else 0
            for n, v in zip(node.inputs, ins, strict=True)
        ]
        attrs: dict[str, Any] = {
            "op_type": node.op_type,
            "opset": self.opset,
            "node": base64.b64encode(proto.SerializeToString()).decode(),
        }
        typed = {**attrs, "input_types": in_types, "output_types": [0] * len(node.outputs)}
        types: list[TensorType] = []
        for j, name in enumerate(node.outputs):
            declared = self.declared.get(name) if name else self._unused_type(ins, typed, j)
            if declared is None:
                raise ModelFileError(
                    f"node {node.name or label} ({node.op_type}) has no Core ML "
                    f"mapping ({reason}) and ONNX cannot infer a static type for its output "
                    f"{name!r}"
                )
            types.append(declared)
        out_types = [
            self._onnx_elem(n) if n and self._onnx_elem(n) != _elem(t.dtype) else 0
            for n, t in zip(node.outputs, types, strict=True)
        ]
        if any(in_types) or any(out_types):
            attrs.update(input_types=in_types, output_types=out_types)
        created = self.graph.add_node("onnx", ins, attrs, output_types=types, name=label)
        for name, value in zip(node.outputs, created.outputs, strict=True):
            if name:
                self.env[name] = value

    @staticmethod
    def _unused_type(ins: list[Value | None], attrs: dict[str, Any], j: int) -> TensorType | None:
        """The type of output ``j`` of a fallback node, by ONNX's inference on it alone."""
        from coreml_compile.compiler.ops.fallback import FallbackOpRefused

        try:
            return get_record("onnx").infer(ins, attrs)[j]
        except (FallbackOpRefused, NotImplementedError, IndexError):
            return None

    def _onnx_elem(self, name: str) -> int:
        """A value's ONNX element type (0 where ONNX does not say)."""
        return self.elem.get(name, 0)


def _elem(ir_dtype: str) -> int:
    """The ONNX element type of an IR dtype."""
    return dtypes.ONNX_ELEM[ir_dtype]


def to_ir(model: Any, name: str = "main", input_shapes: Any = None) -> Graph:
    """Translate an ONNX model (path, bytes or ModelProto) into an IR graph."""
    proto = prepare(load(model), input_shapes)
    return _Importer(proto, name).run()
