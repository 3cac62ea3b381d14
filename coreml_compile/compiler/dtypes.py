"""The IR's element types and their torch / numpy / MIL spellings, in one table."""

from __future__ import annotations

from typing import Any

import ml_dtypes
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

# Narrow types ONNX models use (bfloat16, float8, float4, 4- and 2-bit integers), by
# their ml_dtypes names. The IR has no dtype for them: see ONNX_HELD.
NARROW_FLOATS = ("bfloat16", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2",
                 "float8_e5m2fnuz", "float8_e8m0fnu", "float4_e2m1fn")  # fmt: skip
NARROW_INTS = ("int4", "uint4", "int2", "uint2")
NARROW = frozenset(n for n in (*NARROW_FLOATS, *NARROW_INTS) if hasattr(ml_dtypes, n))

# The IR dtype an ONNX tensor type is held in, where it is not its own: what Core ML
# computes in, as coremltools converts (fp16/fp32, int32; the IR's int64 becomes int32
# when lowered). float64 loses precision in float32; uint32/uint64 values from 2**31 on
# do not fit Core ML's int32, as for int64. Every narrow value is exactly a float32
# (int32) value; arithmetic on bfloat16 is computed in float32, closer to exact than
# ONNX's bfloat16 results. Only onnx fallback nodes see these types, inside their kernel.
ONNX_HELD = {
    "int8": "int32",
    "uint8": "int32",
    "int16": "int32",
    "uint16": "int32",
    "uint32": "int64",
    "uint64": "int64",
    "float64": "float32",
    **{name: "float32" for name in NARROW_FLOATS if name in NARROW},
    **{name: "int32" for name in NARROW_INTS if name in NARROW},
}

# ONNX TensorProto element types -> numpy names (those the IR has, and those the ONNX
# frontend holds in a wider IR type: ONNX_HELD).
ONNX = {
    1: "float32",
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    6: "int32",
    7: "int64",
    9: "bool",
    10: "float16",
    11: "float64",
    12: "uint32",
    13: "uint64",
    16: "bfloat16",
    17: "float8_e4m3fn",
    18: "float8_e4m3fnuz",
    19: "float8_e5m2",
    20: "float8_e5m2fnuz",
    21: "uint4",
    22: "int4",
    23: "float4_e2m1fn",
    24: "float8_e8m0fnu",
    25: "uint2",
    26: "int2",
}
ONNX = {k: v for k, v in ONNX.items() if v in NUMPY or v in ONNX_HELD}
# numpy name -> ONNX TensorProto element type.
ONNX_ELEM = {name: elem for elem, name in ONNX.items()}


def numpy_dtype(name: str) -> np.dtype:
    """The numpy dtype of an IR or ONNX type name (narrow ones through ml_dtypes)."""
    if name in NUMPY:
        return NUMPY[name]
    return np.dtype(getattr(ml_dtypes, name) if name in NARROW else name)


def held(onnx_name: str) -> str:
    """The IR dtype an ONNX element type (numpy name) is held in."""
    return ONNX_HELD.get(onnx_name, onnx_name)


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
