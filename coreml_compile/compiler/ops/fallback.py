"""The ``aten`` op: an ATen operator the table has no record for, kept as it was traced.

It runs through torch (``torch.ops.aten.<name>.<overload>``) in the interpreter and in
fallback partitions, and has no Core ML lowering, so the support check names it. Its
non-tensor arguments are kept as JSON-able data with ``{"input": i}`` where the i-th
tensor input goes, so a package can store it without pickle.

A package is untrusted input, and an ``aten`` node names the function it calls. So
which operators may run is one rule, :func:`refusal`, asked by the frontend before it
records a node (a model needing a refused op does not compile) and by the package
loader before anything runs (a package naming one does not load):

- the ``aten`` namespace only, and an overload that exists there;
- functional tensor ops only: no argument or result in the schema that aliases or
  mutates (views, in-place and ``out=`` forms);
- arguments of plain kinds only: tensors, numbers, booleans, dtypes, layouts, memory
  formats, devices; nothing that takes strings (paths), storages, streams or libraries;
- tensor results only.

Sizes are bounded separately: :meth:`Aten.infer` computes a node's output types on
fake tensors (nothing is allocated), so a factory asked for a huge tensor is caught
before it runs, by comparing with the types the graph declares and with
:data:`MAX_TENSOR_BYTES`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

import torch
from torch._subclasses import fake_tensor

from coreml_compile.compiler import dtypes
from coreml_compile.compiler.ops import Op
from coreml_compile.compiler.symbolic import Specialised
from coreml_compile.compiler.tensor_type import TensorType
from coreml_compile.errors import with_type

# The largest tensor a fallback node may produce (and a package may declare): 4 GiB.
MAX_TENSOR_BYTES = 1 << 32

_NAME = r"(?!__)[A-Za-z_][A-Za-z0-9_]*"
_TARGET = re.compile(rf"({_NAME})::({_NAME})(?:\.({_NAME}))?")
# Argument kinds a package may pass (as torch prints schema types; dtype, layout and
# memory format print as int).
_PLAIN_TYPES = {"Tensor", "int", "SymInt", "float", "bool", "number", "Device", "Generator"}
_WRAPPED = re.compile(r"(?:Optional|List)\[(.*)\]")


def _base_type(type_text: str) -> str:
    while True:
        m = _WRAPPED.fullmatch(type_text)
        if m is None:
            return type_text
        type_text = m.group(1)


@functools.cache
def refusal(target: str) -> str | None:
    """Why ``target`` ("aten::name.overload") may not run from a package, or None."""
    if not isinstance(target, str):
        return f"{target!r} is not an operator name"
    m = _TARGET.fullmatch(target)
    if m is None:
        return f"{target!r} is not an operator name of the form aten::name.overload"
    namespace, packet_name, overload_name = m.group(1), m.group(2), m.group(3) or "default"
    if namespace != "aten":
        return f"{target}: only aten operators may run, not the {namespace!r} namespace"
    try:
        packet = getattr(torch.ops.aten, packet_name)
    except (AttributeError, RuntimeError):
        packet = None
    if not isinstance(packet, torch._ops.OpOverloadPacket):
        return f"{target}: no such aten operator"
    if overload_name not in packet.overloads():
        return f"{target}: aten::{packet_name} has no overload {overload_name!r}"
    schema = getattr(packet, overload_name)._schema
    for arg in schema.arguments:
        if arg.alias_info is not None:
            kind = "writes into" if arg.alias_info.is_write else "aliases"
            return f"{target}: it {kind} its argument {arg.name!r} (only functional ops may run)"
        base = _base_type(str(arg.type))
        if base not in _PLAIN_TYPES:
            return f"{target}: it takes a {arg.type} argument {arg.name!r}"
    for ret in schema.returns:
        if ret.alias_info is not None:
            return f"{target}: its result aliases an argument (only functional ops may run)"
        if _base_type(str(ret.type)) != "Tensor":
            return f"{target}: it returns a {ret.type}, not tensors"
    return None


def resolve_overload(target: str) -> Any:
    """``"aten::linalg_inv.default"`` -> ``torch.ops.aten.linalg_inv.default``, if allowed."""
    reason = refusal(target)
    if reason is not None:
        raise FallbackOpRefused(reason)
    _namespace, rest = target.split("::", 1)
    packet, _, overload = rest.partition(".")
    return getattr(getattr(torch.ops.aten, packet), overload or "default")


def allowed_twin(target: str) -> str | None:
    """An allowed overload computing what ``target`` computes, for a traced graph.

    In a functionalised graph an in-place op's result replaces its first argument's
    value, so its functional twin (``cumsum_`` -> ``cumsum``) computes the same thing;
    a view op (``unfold``) has a copying twin (``unfold_copy``).
    """
    if refusal(target) is None:
        return target
    namespace, rest = target.split("::", 1)
    packet, _, overload = rest.partition(".")
    candidates = []
    if packet.endswith("_") and not packet.startswith("_"):
        candidates.append(f"{namespace}::{packet[:-1]}.{overload}")
    candidates.append(f"{namespace}::{packet}_copy.{overload}")
    return next((c for c in candidates if refusal(c) is None), None)


class FallbackOpRefused(Exception):
    """Raised (as a PackageError or a compile error by the caller) for a refused op."""


# Keys that are not Python identifiers, so no keyword argument's dict can look like one.
_TORCH_OBJECT_KINDS = {
    "torch.dtype": torch.dtype,
    "torch.layout": torch.layout,
    "torch.memory_format": torch.memory_format,
    "torch.device": torch.device,
}


def encode_torch_object(obj: Any) -> dict[str, str]:
    """A dtype, layout, memory format or device as JSON: ``{"torch.dtype": "float32"}``..."""
    if isinstance(obj, torch.device):
        return {"torch.device": str(obj)}
    kind = {torch.dtype: "dtype", torch.layout: "layout", torch.memory_format: "memory_format"}
    return {f"torch.{kind[type(obj)]}": str(obj).removeprefix("torch.")}


def _decode_torch_object(kind: str, name: Any) -> Any:
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_:]+", name):
        raise FallbackOpRefused(f"{kind} value {name!r} is not a name")
    if kind == "torch.device":
        try:
            return torch.device(name)
        except RuntimeError:
            raise FallbackOpRefused(f"{name!r} is not a torch device") from None
    value = getattr(torch, name, None)
    if not isinstance(value, _TORCH_OBJECT_KINDS[kind]):
        raise FallbackOpRefused(f"{name!r} is not a {kind}")
    return value


def _rebuild(template: Any, tensors: list[Any]) -> Any:
    """An argument from its JSON template; anything but the forms it was written in is refused."""
    if isinstance(template, dict):
        if set(template) == {"input"}:
            index = template["input"]
            if type(index) is not int or not 0 <= index < len(tensors):
                raise FallbackOpRefused(f"argument reads tensor input {index!r}, which is absent")
            return tensors[index]
        if len(template) == 1 and next(iter(template)) in _TORCH_OBJECT_KINDS:
            ((kind, name),) = template.items()
            return _decode_torch_object(kind, name)
        raise FallbackOpRefused(f"argument {template!r} is neither a tensor nor a torch object")
    if isinstance(template, list):
        return [_rebuild(v, tensors) for v in template]
    if template is None or isinstance(template, bool | int | float):
        return template
    raise FallbackOpRefused(f"argument {template!r} ({type(template).__name__}) is not allowed")


def call(target: str, tensors: list[Any], args: Any, kwargs: Any) -> Any:
    """Run ``target`` on ``tensors`` with the recorded arguments (refused ops raise)."""
    op = resolve_overload(target)
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise FallbackOpRefused(f"{target}: arguments must be a list and keyword arguments a dict")
    if not all(isinstance(k, str) and k.isidentifier() for k in kwargs):
        raise FallbackOpRefused(f"{target}: keyword argument names must be identifiers")
    return op(*_rebuild(args, tensors), **{k: _rebuild(v, tensors) for k, v in kwargs.items()})


class NoFakeRun(Specialised):
    """Fake tensors cannot run the op, so no rule gives its output types: an ATen op with
    no fake or meta kernel ("Cannot copy out of meta tensor; no data!"), or one whose
    output shape depends on its inputs' values (``bincount``, ``masked_select`` of a
    constant that torch.export ran on the real data).

    The types torch.export recorded for the node then stand, as for a shape rule that only
    holds at the traced sizes (``Graph.verify`` takes the recorded types on this error).
    A package loader, which must bound what a node computes before it runs, refuses it.
    """


# What FakeTensorMode raises for an op it cannot run (a wrong argument still raises).
_NO_FAKE_RUN = (
    NotImplementedError,
    fake_tensor.DynamicOutputShapeException,
    fake_tensor.DataDependentOutputException,
    fake_tensor.UnsupportedOperatorException,
)


class Aten(Op):
    name = "aten"
    inputs = ("*tensors",)
    attrs = {"target": "", "args": [], "kwargs": {}}

    def kernel(tensors, *, target, args, kwargs):
        return call(target, tensors, args, kwargs)

    @classmethod
    def infer(cls, inputs, attrs):
        """Output types from fake tensors: nothing runs, nothing is allocated."""
        from torch._subclasses.fake_tensor import FakeTensorMode

        for v in inputs:
            if v is not None and not v.type.is_static:
                raise NotImplementedError("aten fallback: symbolic shapes need the export's types")
        try:
            with FakeTensorMode(allow_non_fake_inputs=False):
                fakes = [
                    None
                    if v is None
                    else torch.empty(v.type.shape, dtype=dtypes.to_torch(v.type.dtype))
                    for v in inputs
                ]
                outs = call(attrs["target"], fakes, attrs["args"], attrs["kwargs"])
        except _NO_FAKE_RUN as exc:
            raise NoFakeRun(
                f"{attrs['target']}: fake tensors cannot compute its output types "
                f"({with_type(exc)})"
            ) from exc
        outs = list(outs) if isinstance(outs, tuple | list) else [outs]
        types = []
        for o in outs:
            if not isinstance(o, torch.Tensor):
                raise FallbackOpRefused(f"{attrs['target']} returned a {type(o).__name__}")
            t = TensorType(dtypes.from_torch(o.dtype), tuple(int(d) for d in o.shape))
            nbytes = t.numel() * dtypes.NUMPY[t.dtype].itemsize
            if nbytes > MAX_TENSOR_BYTES:
                raise FallbackOpRefused(
                    f"{attrs['target']} would make a {t} tensor of {nbytes:,} bytes, over the "
                    f"limit of {MAX_TENSOR_BYTES:,}"
                )
            types.append(t)
        return types


# -- the ``onnx`` fallback: an ONNX node with no record, run by onnx.reference ------------

# The ONNX domains whose ops a package may run: the standard operator set only.
ONNX_DOMAINS = ("", "ai.onnx")
_ONNX_RANDOM = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
     "Bernoulli", "Dropout"}
)  # fmt: skip


def onnx_refusal(domain: Any, op_type: Any, opset: Any, proto: Any = None) -> str | None:
    """Why an ONNX node may not run from a package, or None: the ONNX allow-rule.

    - the standard domain only (no custom domains, no model-local functions);
    - an op the installed onnx defines at that opset (``onnx.defs.get_schema``);
    - no subgraph or reference attributes (If/Loop/Scan bodies), so the node is the
      whole of what runs; ``onnx.reference`` runs it on numpy arrays (no file access).
    """
    import onnx

    if domain not in ONNX_DOMAINS:
        return f"{domain}::{op_type}: only standard ONNX ops may run, not domain {domain!r}"
    if not isinstance(op_type, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", op_type):
        return f"{op_type!r} is not an ONNX op name"
    if type(opset) is not int or not 1 <= opset <= onnx.defs.onnx_opset_version():
        return f"{op_type}: opset {opset!r} is not one the installed onnx knows"
    try:
        onnx.defs.get_schema(op_type, opset, "")
    except Exception:
        return f"{op_type}: no such standard ONNX op at opset {opset}"
    if proto is not None:
        if proto.op_type != op_type or proto.domain not in ONNX_DOMAINS:
            return f"{op_type}: the stored node is a {proto.domain}::{proto.op_type}"
        for a in proto.attribute:
            if a.type in (a.GRAPH, a.GRAPHS) or a.ref_attr_name:
                return f"{op_type}: attribute {a.name!r} is a subgraph or a reference"
    return None


def onnx_node(op_type: Any, opset: Any, node: Any) -> Any:
    """The NodeProto an ``onnx`` node stores (base64 text), if the allow-rule passes."""
    import base64
    import binascii

    import onnx

    if not isinstance(node, str):
        raise FallbackOpRefused("an onnx node must store its NodeProto as base64 text")
    try:
        proto = onnx.NodeProto.FromString(base64.b64decode(node, validate=True))
    except (binascii.Error, ValueError, Exception) as exc:  # protobuf's DecodeError
        raise FallbackOpRefused(f"the stored ONNX node does not decode: {exc}") from None
    reason = onnx_refusal(proto.domain, op_type, opset, proto)
    if reason is not None:
        raise FallbackOpRefused(reason)
    return proto


class Onnx(Op):
    """An ONNX node the table has no record for, kept as its NodeProto (base64 in
    ``node``) and run by ``onnx.reference``; output types from ONNX shape inference.

    ``input_types``/``output_types`` (ONNX element types, 0 for "the IR's own") say
    where ONNX's type is not the one the IR holds the value in (an int8 held in int32, a
    bfloat16 in float32): the kernel converts there, so the IR never holds those types.
    """

    name = "onnx"
    inputs = ("*tensors",)
    attrs = {"op_type": "", "opset": 0, "node": "", "input_types": [], "output_types": []}

    def nondeterministic(node):
        return node.attrs.get("op_type") in _ONNX_RANDOM

    def kernel(tensors, *, op_type, opset, node, input_types=(), output_types=()):
        import numpy as np
        from onnx.reference import ReferenceEvaluator

        proto = onnx_node(op_type, opset, node)
        feeds = {}
        for i, (name, t) in enumerate(zip(proto.input, tensors, strict=False)):
            if name and t is not None:
                feeds[name] = _to_onnx(t.detach().cpu().numpy(), input_types, i)
        outs = ReferenceEvaluator(proto, opsets={"": opset}).run(None, feeds)
        return tuple(
            torch.from_numpy(np.array(_to_held(o, output_types, j), order="C"))
            for j, o in enumerate(outs)
        )

    @classmethod
    def infer(cls, inputs, attrs):
        """Output types by ONNX shape inference on the node alone (nothing runs)."""
        import onnx
        from onnx import helper

        proto = onnx_node(attrs["op_type"], attrs["opset"], attrs["node"])
        in_types = _edge_types(attrs, "input_types", len(proto.input))
        out_types = _edge_types(attrs, "output_types", len(proto.output))
        value_infos = []
        for i, (name, v) in enumerate(zip(proto.input, inputs, strict=False)):
            if not name or v is None:
                continue
            if not v.type.is_static:
                raise NotImplementedError("onnx fallback: symbolic shapes")
            if in_types and in_types[i] and dtypes.held(dtypes.ONNX[in_types[i]]) != v.type.dtype:
                raise FallbackOpRefused(
                    f"{attrs['op_type']}: input {name!r} is {v.type.dtype}, which does not "
                    f"hold ONNX's {dtypes.ONNX[in_types[i]]}"
                )
            value_infos.append(
                helper.make_tensor_value_info(
                    name, (in_types and in_types[i]) or dtypes.ONNX_ELEM[v.type.dtype], v.type.shape
                )
            )
        outputs = [helper.make_empty_tensor_value_info(n) for n in proto.output if n]
        # Constant inputs go in as initializers: an output shape may come from their
        # values (OneHot's depth, Range's bounds, CenterCropPad's shape).
        initializers = [
            onnx.numpy_helper.from_array(_to_onnx(v.data, in_types, i), name)
            for i, (name, v) in enumerate(zip(proto.input, inputs, strict=False))
            if name and v is not None and v.is_constant
        ]
        graph = helper.make_graph([proto], "node", value_infos, outputs, initializer=initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", attrs["opset"])])
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        found = {vi.name: vi for vi in [*inferred.graph.value_info, *inferred.graph.output]}
        types = []
        for j, name in enumerate(proto.output):
            vi = found.get(name)
            t = vi.type.tensor_type if vi is not None else None
            converted = bool(out_types and out_types[j])
            if converted and t is not None and t.elem_type != out_types[j]:
                raise FallbackOpRefused(
                    f"{attrs['op_type']}: output {name!r} is declared ONNX type "
                    f"{out_types[j]} but ONNX infers {t.elem_type}"
                )
            known = _ONNX_ELEM if not converted else dtypes.ONNX
            shape_from = _SHAPE_INPUT.get(attrs["op_type"], {}).get(j)
            if t is not None and shape_from is not None and shape_from < len(inputs):
                given = inputs[shape_from]
                if given is not None and given.is_constant:
                    t.shape.Clear()
                    for size in given.data.reshape(-1):
                        t.shape.dim.add().dim_value = int(size)
            if (
                t is None
                or t.elem_type not in known
                or not t.HasField("shape")
                or not all(d.HasField("dim_value") for d in t.shape.dim)
            ):
                raise FallbackOpRefused(
                    f"{attrs['op_type']}: ONNX cannot infer a static type for output {name!r}"
                )
            dtype = dtypes.held(known[t.elem_type]) if converted else known[t.elem_type]
            tt = TensorType(dtype, tuple(d.dim_value for d in t.shape.dim))
            if tt.numel() * dtypes.NUMPY[tt.dtype].itemsize > MAX_TENSOR_BYTES:
                raise FallbackOpRefused(
                    f"{attrs['op_type']} would make a {tt} tensor, over the size limit"
                )
            types.append(tt)
        return types


# Outputs whose shape is the value of an input, which ONNX's shape inference does not
# read (MaxUnpool's output_shape): op -> {output index: input index}.
_SHAPE_INPUT = {"MaxUnpool": {0: 2}}

# ONNX TensorProto element types the IR has.
_ONNX_ELEM = {elem: name for elem, name in dtypes.ONNX.items() if name in dtypes.NUMPY}


def _edge_types(attrs: dict, key: str, count: int) -> list[int]:
    """An onnx node's ``input_types``/``output_types``: none, or one known ONNX element
    type (or 0) per NodeProto input/output (they come from packages: checked)."""
    types = attrs.get(key) or []
    if types and (
        len(types) != count
        or not all(isinstance(t, int) and (t == 0 or t in dtypes.ONNX) for t in types)
    ):
        raise FallbackOpRefused(
            f"{attrs.get('op_type')}: {key} must give a known ONNX element type (or 0) for "
            f"each of the node's {count}"
        )
    return list(types)


def _to_onnx(array: Any, types: Sequence[int], i: int) -> Any:
    """An input array in the ONNX type the node reads, from the IR dtype holding it."""
    if not types or not types[i]:
        return array
    return array.astype(dtypes.numpy_dtype(dtypes.ONNX[types[i]]))


def _to_held(array: Any, types: Sequence[int], j: int) -> Any:
    """An output array in the IR dtype that holds its ONNX type."""
    if not types or not types[j]:
        return array
    return array.astype(dtypes.NUMPY[dtypes.held(dtypes.ONNX[types[j]])])
