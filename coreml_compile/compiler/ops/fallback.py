"""The ``aten`` op: an ATen operator the table has no record for, kept as it was traced.

It runs through torch (``torch.ops.aten.<name>.<overload>``) in the interpreter and in
fallback partitions, and has no Core ML lowering, so the support check names it. Its
non-tensor arguments are kept as JSON-able data with ``{"input": i}`` where the i-th
tensor input goes, so a package can store it without pickle.
"""

from __future__ import annotations

from typing import Any

import torch

from coreml_compile.compiler.ops import Op


def resolve_overload(target: str) -> Any:
    """``"aten::linalg_inv.default"`` -> ``torch.ops.aten.linalg_inv.default``."""
    namespace, rest = target.split("::", 1)
    packet, _, overload = rest.partition(".")
    return getattr(getattr(getattr(torch.ops, namespace), packet), overload or "default")


# Keys that are not Python identifiers, so no keyword argument's dict can look like one.
_TORCH_OBJECT_KINDS = ("torch.dtype", "torch.layout", "torch.memory_format", "torch.device")


def encode_torch_object(obj: Any) -> dict[str, str]:
    """A dtype, layout, memory format or device as JSON: ``{"torch.dtype": "float32"}``..."""
    if isinstance(obj, torch.device):
        return {"torch.device": str(obj)}
    kind = {torch.dtype: "dtype", torch.layout: "layout", torch.memory_format: "memory_format"}
    return {f"torch.{kind[type(obj)]}": str(obj).removeprefix("torch.")}


def _decode_torch_object(template: dict[str, str]) -> Any:
    ((kind, name),) = template.items()
    return torch.device(name) if kind == "torch.device" else getattr(torch, name)


def _rebuild(template: Any, tensors: list[Any]) -> Any:
    if isinstance(template, dict):
        if set(template) == {"input"}:
            return tensors[template["input"]]
        if len(template) == 1 and next(iter(template)) in _TORCH_OBJECT_KINDS:
            return _decode_torch_object(template)
        return {k: _rebuild(v, tensors) for k, v in template.items()}
    if isinstance(template, list):
        return [_rebuild(v, tensors) for v in template]
    return template


class Aten(Op):
    name = "aten"
    inputs = ("*tensors",)
    attrs = {"target": "", "args": [], "kwargs": {}}

    def kernel(tensors, *, target, args, kwargs):
        kwargs = {key: _rebuild(value, tensors) for key, value in kwargs.items()}
        return resolve_overload(target)(*_rebuild(args, tensors), **kwargs)
