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
from typing import Any

import torch

from coreml_compile.compiler import dtypes
from coreml_compile.compiler.ir import TensorType
from coreml_compile.compiler.ops import Op

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
        with FakeTensorMode(allow_non_fake_inputs=False):
            fakes = [
                None
                if v is None
                else torch.empty(v.type.shape, dtype=dtypes.to_torch(v.type.dtype))
                for v in inputs
            ]
            outs = call(attrs["target"], fakes, attrs["args"], attrs["kwargs"])
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
