"""Lowering: IR graph → MIL program (coremltools' builder) → ML Program model.

Lowering translates; it does not optimise. Each node is lowered by its op record's
``lower``; this module supplies the context those functions use (constants, casts,
names) and the program's interface:

- ``precision="fp16"`` keeps fp32 model inputs and outputs and computes in fp16 inside,
  as coremltools does: a cast after each float input, fp16 weights, a cast before each
  output. ``"fp32"`` computes in fp32 throughout.
- int64 tensors become int32 (Core ML has no int64 tensors).
- bool inputs and outputs are int32 arrays of 0/1 (Core ML has no bool multiarrays);
  bool values inside the program stay bool.

coremltools' default pass pipeline is not run: optimisation belongs to our passes. The
serialiser still runs its small backend pipeline (naming, I/O types), which it needs.
"""

from __future__ import annotations

import shutil
from typing import Any

import numpy as np

from coreml_compile.compiler import dtypes, targets
from coreml_compile.compiler.ir import Graph, Node, Value
from coreml_compile.compiler.mil import (
    IR_TO_MIL,
    MIL_NUMPY,
    fp16_weights_without_copies,
    import_coremltools,
    io_dtype,
    quiet_coremltools,
)
from coreml_compile.compiler.ops import get_record, group_variadic, unsupported_reason
from coreml_compile.errors import LoweringError, UnsupportedOpError

PRECISIONS = ("fp16", "fp32")


class LowerContext:
    """What an op record's ``lower`` sees: the builder, the node, names and constants."""

    def __init__(self, precision: str, generation: int):
        from coremltools.converters.mil import Builder

        self.mb = Builder
        self.precision = precision
        self.generation = generation
        self.node: Node | None = None
        self.name = ""
        self._env: dict[int, Any] = {}
        # Things the user should know that do not stop the compile.
        self.warnings: list[str] = []

    # -- dtypes -----------------------------------------------------------------------

    def mil_dtype(self, ir_dtype: str) -> str:
        """The MIL dtype an IR dtype computes in."""
        if dtypes.is_float(ir_dtype):
            return self.precision
        return IR_TO_MIL[ir_dtype]

    @staticmethod
    def mil_dtype_of(var: Any) -> str:
        from coremltools.converters.mil.mil import types

        return types.builtin_to_string(var.dtype)

    # -- constants --------------------------------------------------------------------

    def scalar(self, value: float | int, like: Any = None) -> Any:
        """A scalar of ``like``'s dtype (or the float compute dtype)."""
        mil = self.mil_dtype_of(like) if like is not None else self.precision
        return MIL_NUMPY[mil](value)

    def const_like(self, array: np.ndarray, like: Any) -> Any:
        """A constant array in ``like``'s dtype."""
        return np.ascontiguousarray(array, dtype=MIL_NUMPY[self.mil_dtype_of(like)])

    def promote(self, *vars: Any) -> list[Any]:
        """Cast operands to the node's output dtype, as torch's type promotion would."""
        target = self.mil_dtype(self.node.outputs[0].type.dtype)
        out = []
        for i, v in enumerate(vars):
            if self.mil_dtype_of(v) == target:
                out.append(v)
            elif v.val is not None:
                out.append(self.mb.const(val=np.asarray(v.val).astype(MIL_NUMPY[target])))
            else:
                out.append(self.mb.cast(x=v, dtype=target, name=f"{self.name}_in{i}_cast"))
        return out

    def _constant(self, value: Value) -> Any:
        data = value.data
        mil = self.mil_dtype(value.type.dtype)
        if (
            value.type.dtype == "int64"
            and data.size
            and (data.max() > np.iinfo(np.int32).max or data.min() < np.iinfo(np.int32).min)
        ):
            raise LoweringError(f"constant {value.name} does not fit in int32")
        if mil == "fp16" and data.size and np.isfinite(data).all():
            largest = float(np.abs(data).max())
            if largest > float(np.finfo(np.float16).max):
                self.warnings.append(
                    f"constant {value.name} holds {largest:g}, beyond fp16's range: it is inf "
                    "in the fp16 program (compile with precision fp32 to keep it)"
                )
        with np.errstate(over="ignore"):
            array = np.asarray(data).astype(MIL_NUMPY[mil], copy=False)
        return self.mb.const(val=array, name=value.name)

    # -- values -----------------------------------------------------------------------

    def get(self, value: Value | None) -> Any:
        if value is None:
            return None
        key = id(value)
        if key not in self._env:
            if not value.is_constant:
                raise LoweringError(f"value {value.name} is used before it is lowered")
            self._env[key] = self._constant(value)
        return self._env[key]

    def set(self, value: Value, var: Any) -> None:
        self._env[id(value)] = var


def check_supported(graph: Graph, generation: int) -> None:
    """Raise UnsupportedOpError listing every node Core ML cannot run."""
    problems = []
    for node in graph.nodes:
        reason = unsupported_reason(node, generation)
        if reason:
            problems.append((node.name, reason))
    if problems:
        raise UnsupportedOpError(problems)


def build_function(
    graph: Graph,
    precision: str = "fp16",
    target: str | int = targets.DEFAULT,
    warnings: list[str] | None = None,
) -> Any:
    """Lower ``graph`` to one MIL Function; every node must be supported for ``target``.

    Warnings (constants beyond fp16's range...) are appended to ``warnings`` if given.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    generation = targets.generation(target)
    check_supported(graph, generation)
    ct = import_coremltools()
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import Function, types

    placeholders = {
        v.name: mb.placeholder(
            shape=list(v.type.shape),
            dtype=types.string_to_builtin(io_dtype(v.type.dtype)),
            allow_rank0_input=v.type.rank == 0,
        )
        for v in graph.inputs
    }
    opset = getattr(ct.target, f"iOS{generation}")
    c = LowerContext(precision, generation)
    with Function(placeholders, opset_version=opset) as function:
        for v in graph.inputs:
            var = function.inputs[v.name]
            want = c.mil_dtype(v.type.dtype)
            if c.mil_dtype_of(var) != want:
                var = mb.cast(x=var, dtype=want, name=f"{v.name}_to_{want}")
            c.set(v, var)
        output_names = {id(v): v.name for v in graph.outputs}
        for node in graph.nodes:
            _lower_node(c, node, output_names)
        outs = []
        for v in graph.outputs:
            var = c.get(v)
            want = io_dtype(v.type.dtype)
            if c.mil_dtype_of(var) != want:
                var = mb.cast(x=var, dtype=want, name=v.name)
            elif var.name != v.name:
                var = mb.identity(x=var, name=v.name)
            outs.append(var)
        function.set_outputs(outs)
    if warnings is not None:
        warnings.extend(c.warnings)
    return function


def build_program(
    graph: Graph,
    precision: str = "fp16",
    target: str | int = targets.DEFAULT,
    warnings: list[str] | None = None,
) -> Any:
    """Lower ``graph`` to a MIL Program whose one function is "main" (see build_function)."""
    return single_function_program(build_function(graph, precision, target, warnings))


def single_function_program(function: Any) -> Any:
    from coremltools.converters.mil.mil import Program

    program = Program()
    program.add_function("main", function)
    return program


def build_multifunction_program(functions: dict[str, Any], default: str) -> Any:
    """One MIL Program holding several functions (Core ML runs them from iOS18/macOS15)."""
    from coremltools.converters.mil.mil import Program

    program = Program()
    for name, function in functions.items():
        program.add_function(name, function)
    program.default_function_name = default
    program.export_as_multifunction = True
    return program


def _lower_node(c: LowerContext, node: Node, output_names: dict[int, str]) -> None:
    record = get_record(node.op)
    c.node = node
    out = node.outputs[0]
    # A graph output computed in fp16 is cast to fp32 under its own name at the end.
    needs_cast = id(out) in output_names and c.mil_dtype(out.type.dtype) != io_dtype(out.type.dtype)
    c.name = f"{out.name}_{c.precision}" if needs_cast else out.name
    if record.lowers_from_data:
        args = [None if v is None else v.data for v in node.inputs]
    else:
        args = [c.get(v) for v in node.inputs]
    args = group_variadic(record, args)
    try:
        result = record.lower(c, *args, **node.attrs)
    except UnsupportedOpError:
        raise
    except Exception as exc:
        raise LoweringError(f"lowering {node.name} ({node.op}) failed: {exc}") from exc
    results = result if isinstance(result, tuple) else (result,)
    for value, var in zip(node.outputs, results, strict=False):
        if var is not None:
            c.set(value, var)


def to_mlmodel(
    program: Any, target: str | int = targets.DEFAULT, metadata: dict[str, str] | None = None
) -> Any:
    """Serialise a MIL program into an in-memory ML Program model (coremltools.MLModel)."""
    from coreml_compile import artifact

    ct = import_coremltools()
    # coremltools' package and its temporary files go in a folder of ours (TMPDIR),
    # removed on failure, once saved or when the model is dropped (artifact.py).
    scratch = artifact.scratch_dir()
    try:
        with (
            quiet_coremltools(),
            fp16_weights_without_copies(),
            artifact.coremltools_temp_files_in(scratch),
        ):
            model = ct.convert(
                program,
                convert_to="mlprogram",
                minimum_deployment_target=targets.to_coremltools(target),
                # Precision was applied during lowering; ask coremltools for no fp16 pass.
                compute_precision=ct.precision.FLOAT32,
                pass_pipeline=ct.PassPipeline.EMPTY,
                skip_model_load=True,
                package_dir=str(scratch / "model.mlpackage"),
            )
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    # Once saved, the model reads from the saved package; should that go, it rebuilds.
    metadata = dict(metadata or {})
    artifact.own(model, scratch, lambda: to_mlmodel(program, target, metadata))
    # Dates in the metadata would make two compiles of the same model differ.
    user_defined = model._spec.description.metadata.userDefined
    user_defined.pop("com.github.apple.coremltools.conversion_date", None)
    user_defined["com.github.apple.coremltools.source"] = "coreml_compile"
    for key, value in metadata.items():
        user_defined[key] = value
    return model
