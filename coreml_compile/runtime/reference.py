"""The reference executor: runs a MIL program (ours or coremltools') with torch kernels.

It is how a package is checked on a machine without Core ML. The program comes from a
compile or from a saved package through coremltools' milproto loader.

Dtypes are honoured: a value the program types as fp16 is rounded to fp16 after the op
that produces it, so overflow to inf and fp16 rounding show here as on a device. The
arithmetic itself runs in fp32 (exact for fp16 operands; CPUs are slow at fp16), which
is also what Core ML's CPU path does for most ops.

Everything that does not depend on the inputs is resolved once when the executor is
built: constants become torch tensors, op parameters become Python values, and each step
knows which values it may drop after it runs.

A stateful program (iOS18 states) keeps its states' values in a ``TorchState`` that the
caller makes with ``make_state()`` and passes to every run; the program's state inputs
are bound to it while it runs (``runtime/state.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from coreml_compile.compiler.liveness import release_after
from coreml_compile.errors import CoreMLCompileError, ExecutionError, InputSpecError, with_type
from coreml_compile.runtime.input_shapes import InputShape, check_input_names
from coreml_compile.runtime.mil_kernels import KERNELS, UnknownMILOp
from coreml_compile.runtime.state import (
    NO_STATE_TO_MAKE,
    StateSpec,
    TorchState,
    check_state,
    function_states,
)

_TORCH_OF_MIL = {
    "fp16": torch.float16,
    "fp32": torch.float32,
    "fp64": torch.float64,
    "int32": torch.int32,
    "int64": torch.int64,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "uint16": torch.int32,
    "bool": torch.bool,
}


def _mil_dtype(var: Any) -> str:
    from coremltools.converters.mil.mil import types

    dtype = var.dtype if types.is_tensor(var.sym_type) or types.is_scalar(var.sym_type) else None
    return types.builtin_to_string(dtype) if dtype is not None else "unknown"


# Ops whose outputs only select or move input values (or compare them with constants of
# the same dtype): fed fp16 values, they produce fp16 values, so rounding them again
# would be a no-op. Skipping it is what makes fp16 packages cheap to run here.
VALUE_PRESERVING = frozenset(
    {
        "relu", "relu6", "clip", "max_pool", "reduce_max", "reduce_min", "maximum", "minimum",
        "abs", "identity", "reshape", "transpose", "squeeze", "expand_dims", "slice_by_index",
        "slice_by_size", "concat", "stack", "split", "tile", "gather", "gather_along_axis",
        "select", "flatten2d", "upsample_nearest_neighbor", "slice_update",
        # A state keeps its declared dtype, so an fp16 state holds fp16 values already.
        "read_state", "coreml_update_state",
    }
)  # fmt: skip


def _store(tensor: Any, mil: str) -> Any:
    """Bring a kernel result to the value's declared dtype (fp16 rounding happens here)."""
    if not isinstance(tensor, torch.Tensor):
        return tensor
    if mil == "fp16":
        # Round to fp16, keep fp32 storage: exactly the fp16 value, fast to compute on.
        return tensor.to(torch.float16).to(torch.float32)
    if mil == "fp16-exact":
        return tensor if tensor.dtype == torch.float32 else tensor.to(torch.float32)
    if mil == "fp32":
        return tensor if tensor.dtype == torch.float32 else tensor.to(torch.float32)
    want = _TORCH_OF_MIL.get(mil)
    if want is not None and want in (torch.int32, torch.int16, torch.int8, torch.uint8):
        # Integers are computed in int64 (torch indexes with it) and stored as such.
        return tensor.to(torch.int64) if tensor.dtype != torch.int64 else tensor
    if want is torch.bool and tensor.dtype != torch.bool:
        return tensor.to(torch.bool)
    return tensor


def input_tensor(
    name: str, x: Any, shape: tuple | InputShape, dtype: str, is_float: bool
) -> torch.Tensor:
    """``x`` as a tensor (a view of a numpy array), or InputSpecError if its shape or kind
    (float or integer) is not the input's. ``shape`` is a fixed shape or the shapes a
    flexible input accepts."""
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    allowed = shape if isinstance(shape, InputShape) else InputShape.fixed(shape)
    allowed.check(name, t.shape)
    if t.is_floating_point() != is_float:
        got = str(t.dtype).removeprefix("torch.")
        raise InputSpecError(f"input {name}: expected {dtype} data, got {got}")
    return t


def const_value(val: Any) -> Any:
    """A MIL constant as the kernels want it: tensors for arrays, Python values for params."""
    if isinstance(val, np.ndarray) and val.ndim > 0:
        array = np.ascontiguousarray(val)
        if array.dtype == np.float16 or array.dtype == np.float64:
            array = array.astype(np.float32)
        elif array.dtype.kind in "iu":
            array = array.astype(np.int64)
        return torch.from_numpy(array)
    if isinstance(val, np.generic):
        return val.item()
    if isinstance(val, np.ndarray):
        return val.item()
    return val


def _var_names(step: _Step) -> list[str]:
    """The variables a step reads (constants are not variables)."""
    names: list[str] = []
    for kind, ref in step.args.values():
        if kind == "vars":
            names.extend(ref)
        elif kind == "var":
            names.append(ref)
    return names


class _Step:
    __slots__ = ("op_type", "name", "kernel", "args", "outputs", "release")

    def __init__(self, op_type: str, name: str, kernel: Callable, args: dict, outputs: list):
        self.op_type = op_type
        self.name = name
        self.kernel = kernel
        self.args = args  # input name -> ("var", name) | ("vars", [..]) | ("const", value)
        self.outputs = outputs  # [(var name, mil dtype)]
        self.release: list[str] = []


class ReferenceExecutor:
    """Runs one function of a MIL program; ``predict({name: array}) -> {name: array}``.

    ``input_shapes`` are the shapes each input accepts, as the model description declares
    them (``input_shapes.description_shapes``); without them an input with a symbolic
    dimension takes any size there, since the MIL program does not record its bounds.

    A program with states runs with ``predict(inputs, state=executor.make_state())``; its
    states are not among ``inputs``.
    """

    def __init__(
        self,
        program: Any,
        function: str = "main",
        device: str = "cpu",
        input_shapes: Mapping[str, InputShape] | None = None,
    ):
        self.device = torch.device(device)
        self.function = program.functions[function]
        declared = input_shapes or {}
        self.states: dict[str, StateSpec] = function_states(self.function)
        self.inputs = {
            name: (declared.get(name) or InputShape.from_mil(var.shape), _mil_dtype(var))
            for name, var in self.function.inputs.items()
            if name not in self.states
        }
        self.output_names = [v.name for v in self.function.outputs]
        self.constants: dict[str, Any] = {}
        self.steps = self._plan()

    def _plan(self) -> list[_Step]:
        steps = []
        for op in self.function.operations:
            if op.op_type == "const":
                out = op.outputs[0]
                self.constants[out.name] = self._on_device(const_value(out.val))
                continue
            if op.op_type.startswith("constexpr_"):
                # Compressed weights (quantised, palettised, sparse) are constants: they
                # are decompressed once here, by the op's own definition in coremltools.
                self._materialise(op)
                continue
            kernel = KERNELS.get(op.op_type)
            if kernel is None:
                raise UnknownMILOp(
                    f"the reference executor has no kernel for MIL op {op.op_type!r} ({op.name})"
                )
            args: dict[str, Any] = {}
            for key, var in op.inputs.items():
                if isinstance(var, list | tuple):
                    args[key] = ("vars", [v.name for v in var])
                elif var.name in self.constants:
                    args[key] = ("const", self.constants[var.name])
                elif var.op is None or var.op.op_type != "const" or var.val is None:
                    args[key] = ("var", var.name)
                else:
                    args[key] = ("const", self._on_device(const_value(var.val)))
            outputs = [(v.name, _mil_dtype(v)) for v in op.outputs]
            if op.op_type in VALUE_PRESERVING and all(self._is_fp16(v) for v in op.inputs.values()):
                outputs = [(n, "fp16-exact" if m == "fp16" else m) for n, m in outputs]
            steps.append(_Step(op.op_type, op.name, kernel, args, outputs))
        # Free each intermediate after its last reader, so peak memory is the live set.
        reads = [
            [
                n
                for kind, ref in step.args.values()
                for n in (ref if kind == "vars" else [ref] if kind == "var" else [])
            ]
            for step in steps
        ]
        keep = set(self.output_names) | set(self.constants)
        for step, dropped in zip(steps, release_after(reads, keep), strict=True):
            step.release = dropped
        return steps

    @staticmethod
    def _is_fp16(var: Any) -> bool:
        """True unless ``var`` (or one of a list of vars) is a float other than fp16."""
        vars = var if isinstance(var, list | tuple) else [var]
        return all(_mil_dtype(v) not in ("fp32", "fp64") for v in vars)

    def _materialise(self, op: Any) -> None:
        try:
            values = op.materialized_val_inference()
        except Exception as exc:
            raise UnknownMILOp(
                f"cannot decompress {op.op_type} ({op.name}) for the reference executor: {exc}"
            ) from exc
        values = values if isinstance(values, tuple | list) else (values,)
        for out, val in zip(op.outputs, values, strict=True):
            self.constants[out.name] = self._on_device(const_value(np.asarray(val)))

    def _on_device(self, value: Any) -> Any:
        if isinstance(value, torch.Tensor) and self.device.type != "cpu":
            return value.to(self.device)
        return value

    def _check_inputs(self, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        check_input_names(self.inputs, inputs)
        env = {}
        for name, (shape, mil) in self.inputs.items():
            t = input_tensor(name, inputs[name], shape, mil, mil.startswith("fp"))
            t = t.to(torch.float32) if t.is_floating_point() else t.to(torch.int64)
            env[name] = _store(self._on_device(t), mil)
        return env

    def make_state(self) -> TorchState:
        """A new state for this program (zeros), to pass to ``run``/``predict``."""
        if not self.states:
            raise InputSpecError(NO_STATE_TO_MAKE)
        return TorchState(self.states, self.device)

    def run(
        self, inputs: dict[str, Any], state: TorchState | None = None
    ) -> dict[str, torch.Tensor]:
        """Run the program; a stateful program reads and updates ``state`` (made by
        ``make_state()``), which keeps its old values if the run fails."""
        check_state(self.states, state, TorchState)
        env: dict[str, Any] = self._check_inputs(inputs)
        env.update(self.constants)
        slots = state.slots(self.device) if state is not None else {}
        env.update(slots)
        with torch.no_grad():
            for step in self.steps:
                kwargs = {}
                for key, (kind, ref) in step.args.items():
                    if kind == "var":
                        kwargs[key] = env[ref]
                    elif kind == "const":
                        kwargs[key] = ref
                    else:
                        kwargs[key] = [env[r] for r in ref]
                try:
                    result = step.kernel(**kwargs)
                except CoreMLCompileError:
                    raise
                except Exception as exc:  # bad values (an index out of range) or a bad program
                    raise ExecutionError(
                        f"MIL op {step.name} ({step.op_type}) failed: {with_type(exc)}"
                    ) from exc
                results = result if isinstance(result, tuple | list) else (result,)
                if len(results) != len(step.outputs):
                    raise ExecutionError(
                        f"MIL op {step.name} ({step.op_type}) made {len(results)} outputs, "
                        f"the program declares {len(step.outputs)}"
                    )
                for (name, mil), value in zip(step.outputs, results, strict=True):
                    env[name] = _store(value, mil)
                for name in step.release:
                    env.pop(name, None)
        for slot in slots.values():
            slot.commit()
        return {name: env[name] for name in self.output_names}

    def predict(
        self, inputs: dict[str, Any], state: TorchState | None = None
    ) -> dict[str, np.ndarray]:
        outputs = self.run(inputs, state)
        result = {}
        for var in self.function.outputs:
            t = outputs[var.name]
            mil = _mil_dtype(var)
            want = _TORCH_OF_MIL.get(mil, t.dtype)
            result[var.name] = t.to(want).cpu().numpy()
        return result
