"""The one place the project reaches into coremltools' internals, and MIL's dtypes.

Everything else imports coremltools through :func:`import_coremltools` (which keeps its
import-time warnings quiet) or builds MIL through the lowering context. Two contexts
here temporarily replace a coremltools attribute, restored on exit, because coremltools
offers no option for either: its pass pipeline's progress bar, and its fp16 weight
writer (which copies each weight twice). Both are used only around one conversion,
under a lock, so two threads never see each other's replacement.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from coreml_compile.compiler import dtypes

# The compute precisions a program can have (inputs and outputs stay fp32 in both).
PRECISIONS = ("fp16", "fp32")

_PATCH_LOCK = threading.RLock()

IR_TO_MIL = {
    "int64": "int32",
    "int32": "int32",
    "int16": "int16",
    "int8": "int8",
    "uint8": "uint8",
    "bool": "bool",
}
# Integers narrower than int32, with their bits: MIL casts to them from iOS17 on.
NARROW_INTS = {"int8": 8, "uint8": 8, "int16": 16}
MIL_NUMPY = {
    "fp16": np.float16,
    "fp32": np.float32,
    "int32": np.int32,
    "int16": np.int16,
    "int8": np.int8,
    "uint8": np.uint8,
    "bool": np.bool_,
}


@contextlib.contextmanager
def quiet_coremltools() -> Iterator[None]:
    """Silence coremltools' import warnings and progress bars (they are not ours to show)."""
    logger = logging.getLogger("coremltools")
    _PATCH_LOCK.acquire()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        import coremltools.converters.mil.mil.passes.pass_pipeline as pipeline

        real_tqdm = pipeline.tqdm
        pipeline.tqdm = lambda iterable, *a, **k: iterable
        try:
            yield
        finally:
            pipeline.tqdm = real_tqdm
    finally:
        logger.setLevel(level)
        _PATCH_LOCK.release()


def import_coremltools() -> Any:
    with quiet_coremltools():
        import coremltools

    return coremltools


def new_program() -> Any:
    """An empty MIL Program that writes itself out in full only for a debug log."""
    return _program_class()()


@functools.cache
def _program_class() -> type:
    from coremltools.converters.mil.mil import Program

    class Program(Program):
        """coremltools formats the whole program into its debug messages before the
        logger drops them (twice per pass pipeline, three pipelines per conversion):
        a third of the time BERT takes to serialise, more with dynamic shapes, whose
        sizes print through sympy. Nothing else reads the text."""

        def __str__(self) -> str:
            if logging.getLogger("coremltools").isEnabledFor(logging.DEBUG):
                return super().__str__()
            return f"<MIL program: {', '.join(self.functions)}>"

    return Program


def io_dtype(ir_dtype: str) -> str:
    """The MIL dtype of a program input or output of IR dtype ``ir_dtype``.

    Floats are fp32 at the interface (computed in the precision inside). Core ML has no
    bool multiarrays: a bool input or output is an int32 array of 0 and 1, cast to and
    from bool inside the program (coremltools would otherwise make it fp32); 8- and
    16-bit integers are int32 arrays too.
    """
    if dtypes.is_float(ir_dtype):
        return "fp32"
    if ir_dtype == "bool" or ir_dtype in NARROW_INTS:
        return "int32"
    return IR_TO_MIL[ir_dtype]


@contextlib.contextmanager
def fp16_weights_without_copies() -> Iterator[None]:
    """Write fp16 weights from a view of the array instead of two temporary copies.

    coremltools 9 writes each fp16 weight as ``val.flatten().tobytes()``: two full
    copies of the largest weight at once (+400 MB peak for VGG-16's classifier). The
    blob writer only needs the bits as uint16, which a view of a contiguous array gives.
    Other dtypes go through coremltools' own writer.
    """
    from coremltools.converters.mil.backend.mil import helper

    original = getattr(helper, "_get_offset_by_writing_data", None)
    if original is None:  # a coremltools without this hook: nothing to improve
        yield
        return

    def write(output_var: Any, blob_writer: Any) -> int:
        val = output_var.val
        if isinstance(val, np.ndarray) and val.dtype == np.float16 and val.flags.c_contiguous:
            return blob_writer.write_fp16_data(val.reshape(-1).view(np.uint16))
        return original(output_var, blob_writer)

    with _PATCH_LOCK:
        helper._get_offset_by_writing_data = write
        try:
            yield
        finally:
            helper._get_offset_by_writing_data = original
