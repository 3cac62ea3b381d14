"""The IR's element types and their torch / numpy / MIL spellings, in one table."""

from __future__ import annotations

from typing import Any

import numpy as np

# IR dtype name -> numpy dtype. The IR spells dtypes as short strings so that graphs
# print readably and serialise to JSON without a custom encoder.
NUMPY = {
    "float64": np.dtype("float64"),
    "float32": np.dtype("float32"),
    "float16": np.dtype("float16"),
    "int64": np.dtype("int64"),
    "int32": np.dtype("int32"),
    "int16": np.dtype("int16"),
    "int8": np.dtype("int8"),
    "uint8": np.dtype("uint8"),
    "bool": np.dtype("bool"),
}

SHORT = {
    "float64": "f64",
    "float32": "f32",
    "float16": "f16",
    "int64": "i64",
    "int32": "i32",
    "int16": "i16",
    "int8": "i8",
    "uint8": "u8",
    "bool": "bool",
}

FLOATS = frozenset({"float16", "float32", "float64"})


def from_numpy(dtype: Any) -> str:
    name = np.dtype(dtype).name
    if name not in NUMPY:
        raise TypeError(f"dtype {name} has no IR equivalent")
    return name


def from_torch(dtype: Any) -> str:
    name = str(dtype).removeprefix("torch.")
    if name not in NUMPY:
        raise TypeError(f"dtype {dtype} has no IR equivalent")
    return name


def to_torch(name: str) -> Any:
    import torch

    return getattr(torch, name)


def is_float(name: str) -> bool:
    return name in FLOATS
