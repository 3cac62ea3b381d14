"""IR graphs as JSON plus raw arrays: how fallback partitions are stored in a package.

No pickle: the JSON names ops, attributes and tensor types; constants live in one
binary blob (each array's bytes at a 64-byte aligned offset, little-endian, C order),
described in the JSON by offset, dtype and shape. Loading maps arrays out of the blob
without copying them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from coreml_compile.compiler import dtypes
from coreml_compile.compiler.ir import Graph, Node, TensorType, Value
from coreml_compile.errors import PackageError

FORMAT_VERSION = 1
_ALIGN = 64


class GraphFormatError(PackageError):
    """A stored graph cannot be read (corrupt, or written by a newer version)."""


class ArrayWriter:
    """Collects arrays into one aligned blob; an array written twice is stored once."""

    def __init__(self) -> None:
        self._chunks: list[bytes | memoryview] = []
        self._size = 0
        self._seen: dict[int, dict[str, Any]] = {}

    def add(self, array: np.ndarray) -> dict[str, Any]:
        known = self._seen.get(id(array))
        if known is not None:
            return known
        contiguous = np.ascontiguousarray(array)
        pad = -self._size % _ALIGN
        if pad:
            self._chunks.append(bytes(pad))
            self._size += pad
        ref = {
            "offset": self._size,
            "dtype": dtypes.from_numpy(array.dtype),
            "shape": list(array.shape),
        }
        data = memoryview(contiguous.reshape(-1).view(np.uint8)) if contiguous.size else b""
        self._chunks.append(data)
        self._size += len(data)
        self._seen[id(array)] = ref
        return ref

    @property
    def size(self) -> int:
        return self._size

    def getvalue(self) -> bytes:
        return b"".join(self._chunks)


def read_array(blob: bytes | memoryview | np.ndarray, ref: dict[str, Any]) -> np.ndarray:
    """The array ``ref`` describes, as a view of ``blob`` (writable if ``blob`` is)."""
    if not isinstance(ref, dict) or type(ref.get("offset")) is not int:
        raise GraphFormatError(f"bad array reference {ref!r}")
    t = tensor_type_from_json(ref)
    dtype = np.dtype(dtypes.NUMPY[t.dtype])
    offset, count = ref["offset"], t.numel()
    if offset < 0 or offset + count * dtype.itemsize > len(blob):
        raise GraphFormatError(f"array at offset {offset} runs past the end of the blob")
    return np.frombuffer(blob, dtype=dtype, count=count, offset=offset).reshape(t.shape)


def _type_json(t: TensorType) -> dict[str, Any]:
    return {"dtype": t.dtype, "shape": list(t.shape)}


# What a stored tensor type may declare: a bounded rank and size (the cap is the one on
# what a fallback op may allocate), so reading a package never asks for absurd memory.
MAX_STORED_RANK = 32


def tensor_type_from_json(doc: Any) -> TensorType:
    """A stored ``{"dtype", "shape"}``, checked: a known dtype, non-negative integer dims,
    and a size within :data:`~coreml_compile.compiler.ops.fallback.MAX_TENSOR_BYTES`."""
    from coreml_compile.compiler.ops.fallback import MAX_TENSOR_BYTES

    if not isinstance(doc, dict):
        raise GraphFormatError(f"tensor type {doc!r} is not an object")
    dtype, shape = doc.get("dtype"), doc.get("shape")
    if not isinstance(dtype, str) or dtype not in dtypes.NUMPY:
        raise GraphFormatError(f"unknown dtype {dtype!r}")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_STORED_RANK
        or not all(type(d) is int and d >= 0 for d in shape)
    ):
        raise GraphFormatError(f"shape {shape!r} is not a list of non-negative integers")
    nbytes = int(np.prod(shape, dtype=object)) * np.dtype(dtypes.NUMPY[dtype]).itemsize
    if nbytes > MAX_TENSOR_BYTES:
        raise GraphFormatError(
            f"a {dtype}{shape} tensor is {nbytes:,} bytes, over the limit of {MAX_TENSOR_BYTES:,}"
        )
    return TensorType(dtype, tuple(shape))


def _type_from_json(doc: dict[str, Any]) -> TensorType:
    return tensor_type_from_json(doc)


def _attr_json(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_attr_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _attr_json(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"attribute value {value!r} ({type(value).__name__}) cannot be stored")


def graph_to_json(graph: Graph, arrays: ArrayWriter) -> dict[str, Any]:
    """``graph`` as a JSON-able dict; its constants go to ``arrays``."""
    nodes = []
    for node in graph.nodes:
        try:
            attrs = _attr_json(node.attrs)
        except TypeError as exc:
            raise GraphFormatError(f"node {node.name} ({node.op}): {exc}") from exc
        nodes.append(
            {
                "op": node.op,
                "name": node.name,
                "inputs": [None if v is None else v.name for v in node.inputs],
                "attrs": attrs,
                "outputs": [{"name": o.name, **_type_json(o.type)} for o in node.outputs],
            }
        )
    return {
        "format": FORMAT_VERSION,
        "name": graph.name,
        "inputs": [{"name": v.name, **_type_json(v.type)} for v in graph.inputs],
        "constants": [{"name": v.name, **arrays.add(v.data)} for v in graph.constants.values()],
        "nodes": nodes,
        "outputs": [v.name for v in graph.outputs],
    }


def graph_from_json(doc: dict[str, Any], blob: bytes | memoryview | np.ndarray) -> Graph:
    """The graph :func:`graph_to_json` described, with constants viewed out of ``blob``."""
    if not isinstance(doc, dict):
        raise GraphFormatError("a stored graph is not a JSON object")
    if doc.get("format") != FORMAT_VERSION:
        raise GraphFormatError(
            f"stored graph has format {doc.get('format')!r}; this version reads {FORMAT_VERSION}"
        )
    from coreml_compile.compiler.ops import get_record

    graph = Graph(doc["name"])
    values: dict[str, Value] = {}

    def define(value: Value) -> Value:
        if not isinstance(value.name, str):
            raise GraphFormatError(f"value name {value.name!r} is not a string")
        if value.name in values:
            raise GraphFormatError(f"value {value.name} is defined twice")
        values[value.name] = value
        graph.claim_name(value.name)
        return value

    try:
        for item in doc["inputs"]:
            graph.inputs.append(define(Value(item["name"], _type_from_json(item))))
        for item in doc["constants"]:
            data = read_array(blob, item)
            graph.constants[item["name"]] = define(
                Value(item["name"], TensorType(item["dtype"], data.shape), data)
            )
        for item in doc["nodes"]:
            get_record(item["op"])  # an unknown op fails here, by name
            missing = [n for n in item["inputs"] if n is not None and n not in values]
            if missing:
                raise GraphFormatError(f"node {item['name']} reads undefined {missing[0]}")
            ins = [None if n is None else values[n] for n in item["inputs"]]
            outs = [define(Value(o["name"], _type_from_json(o))) for o in item["outputs"]]
            graph.add_existing_node(Node(item["op"], item["name"], ins, item["attrs"], outs))
        graph.outputs = [values[name] for name in doc["outputs"]]
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise GraphFormatError(f"stored graph {doc.get('name')!r} is malformed: {exc}") from exc
    return graph
