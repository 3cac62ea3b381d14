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

from coreml_compile.compiler import dtypes, symbolic, targets
from coreml_compile.compiler.ir import Graph, Node, Value
from coreml_compile.compiler.mil import (
    IR_TO_MIL,
    MIL_NUMPY,
    NARROW_INTS,
    PRECISIONS,
    fp16_weights_without_copies,
    import_coremltools,
    io_dtype,
    new_program,
    quiet_coremltools,
)
from coreml_compile.compiler.ops import get_record, group_variadic, unsupported_reason
from coreml_compile.errors import LoweringError, UnsupportedOpError


class _MilInt:
    """An int32 MIL scalar that Python arithmetic builds on: evaluating a size's text
    (``2*s0 + 1``) on these emits the MIL ops computing it."""

    def __init__(self, c: LowerContext, var: Any):
        self.c, self.var = c, var

    def _op(self, fn: str, a: Any, b: Any) -> _MilInt:
        a = a.var if isinstance(a, _MilInt) else np.int32(a)
        b = b.var if isinstance(b, _MilInt) else np.int32(b)
        return _MilInt(self.c, getattr(self.c.mb, fn)(x=a, y=b))

    def __add__(self, o: Any) -> _MilInt:
        return self._op("add", self, o)

    def __radd__(self, o: Any) -> _MilInt:
        return self._op("add", o, self)

    def __sub__(self, o: Any) -> _MilInt:
        return self._op("sub", self, o)

    def __rsub__(self, o: Any) -> _MilInt:
        return self._op("sub", o, self)

    def __mul__(self, o: Any) -> _MilInt:
        return self._op("mul", self, o)

    def __rmul__(self, o: Any) -> _MilInt:
        return self._op("mul", o, self)

    def __floordiv__(self, o: Any) -> _MilInt:
        return self._op("floor_div", self, o)

    def __rfloordiv__(self, o: Any) -> _MilInt:
        return self._op("floor_div", o, self)

    def __mod__(self, o: Any) -> _MilInt:
        return self._op("mod", self, o)

    def __neg__(self) -> _MilInt:
        return self._op("mul", self, -1)


class _NamingBuilder:
    """coremltools' Builder, giving each op it is not given a name for one after the IR
    node being lowered (``<node>__<op>_<k>``).

    The Builder's own names (``reshape_0``, ...) come from a counter shared by the
    whole process: a second compile names the same program differently, and an
    auto-named helper can take the name of an IR node (torch calls nodes ``reshape_1``
    too). Two ops of one name make a package the milproto loader reads wrongly.
    """

    def __init__(self, c: LowerContext):
        from coremltools.converters.mil import Builder

        self._c = c
        self._builder = Builder
        self._counts: dict[str, int] = {}
        self._ops: dict[str, Any] = {}

    def __getattr__(self, op: str) -> Any:
        if op not in self._ops:
            build = getattr(self._builder, op)

            def named(*args: Any, **kwargs: Any) -> Any:
                if "name" not in kwargs:
                    base = f"{self._c.name or 'program'}__{op}"
                    k = self._counts.get(base, 0)
                    self._counts[base] = k + 1
                    kwargs["name"] = f"{base}_{k}"
                return build(*args, **kwargs)

            self._ops[op] = named
        return self._ops[op]


class LowerContext:
    """What an op record's ``lower`` sees: the builder, the node, names and constants."""

    def __init__(self, precision: str, generation: int):
        self.mb = _NamingBuilder(self)
        self.precision = precision
        self.generation = generation
        self.node: Node | None = None
        self.name = ""
        self._env: dict[int, Any] = {}
        # Things the user should know that do not stop the compile.
        self.warnings: list[str] = []
        # Each dynamic dimension's source, (input var, axis), and sizes computed from them.
        # A symbol that is no input's whole dimension (``s0`` when the input is ``8*s0``)
        # is solved from a derived dimension, an input's size that is ``a*s0 + b``.
        self.symbol_sources: dict[str, tuple[Any, int]] = {}
        self.derived_sources: dict[str, tuple[Any, int]] = {}
        self._sizes: dict[str, Any] = {}

    # -- sizes computed from dynamic dimensions ------------------------------------------

    def size(self, dim: Any) -> Any:
        """An int stays an int; a symbolic size (an Expr, or a dimension of a value's
        type) becomes an int32 scalar computed at run time from the inputs' shapes."""
        if isinstance(dim, int):
            return dim
        key = str(dim)
        if key not in self._sizes and key in self.derived_sources:
            self._sizes[key] = self._input_size(*self.derived_sources[key], key)
        if key not in self._sizes:
            values = {name: _MilInt(self, self._symbol(name)) for name in symbolic.names(key)}
            result = symbolic.resolve(symbolic.Expr(key), values)
            self._sizes[key] = result.var if isinstance(result, _MilInt) else int(result)
        return self._sizes[key]

    def sizes(self, dims: Any) -> Any:
        """A list of sizes: a Python list if all are ints, else an int32 vector."""
        dims = list(dims)
        if all(isinstance(d, int) for d in dims):
            return dims
        key = "[" + ",".join(str(d) for d in dims) + "]"
        if key not in self._sizes:
            self._sizes[key] = self._vector(dims)
        return self._sizes[key]

    def _vector(self, dims: list[Any]) -> Any:
        pieces: list[Any] = []
        for d in dims:
            if isinstance(d, int):
                if pieces and isinstance(pieces[-1], list):
                    pieces[-1].append(d)
                else:
                    pieces.append([d])
            else:
                pieces.append(self._one(d))
        values = [np.array(p, dtype=np.int32) if isinstance(p, list) else p for p in pieces]
        if len(values) == 1:
            return values[0]
        return self.mb.concat(values=values, axis=0)

    def _one(self, dim: Any) -> Any:
        """A dynamic size as a 1-element vector, made once for all the vectors it is in."""
        key = f"[{dim}]"
        if key not in self._sizes:
            # reshape, not expand_dims: coremltools keeps the size's symbol through it,
            # so a reshape to a vector of it needs no sympy solve (see _slice_lists).
            self._sizes[key] = self.mb.reshape(x=self.size(dim), shape=[1])
        return self._sizes[key]

    def _symbol(self, name: str) -> Any:
        if name not in self._sizes:
            if name in self.symbol_sources:
                self._sizes[name] = self._input_size(*self.symbol_sources[name], name)
            else:
                self._sizes[name] = self._solve(name)
        return self._sizes[name]

    def _solve(self, name: str) -> Any:
        """A symbol from a derived input dimension ``a*name + b``: (size - b) // a."""
        for dim in sorted(self.derived_sources):
            if symbolic.names(dim) != {name}:
                continue
            linear = symbolic.linear(dim, name)
            if linear is None:
                continue
            a, b = linear
            size = _MilInt(self, self.size(dim))
            return ((size - b) // a).var if b else (size // a).var
        raise LoweringError(f"dynamic dimension {name} is not the size of any input")

    def _input_size(self, var: Any, axis: int, name: str) -> Any:
        return self.mb.gather(
            x=self.mb.shape(x=var), indices=np.int32(axis), axis=0, name=f"{_safe(name)}_size"
        )

    # -- dtypes -----------------------------------------------------------------------

    def mil_dtype(self, ir_dtype: str) -> str:
        """The MIL dtype an IR dtype computes in."""
        if dtypes.is_float(ir_dtype):
            return self.precision
        if ir_dtype in NARROW_INTS and self.generation < 17:
            return "int32"  # MIL's cast makes narrow integers from iOS17 on
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

    def lowest(self, like: Any) -> Any:
        """The lowest finite value of ``like``'s float dtype: a stand-in for -inf where
        -inf minus -inf would make nan (masked maxima, log-sum-exp scans)."""
        dtype = MIL_NUMPY[self.mil_dtype_of(like)]
        return dtype(np.finfo(dtype).min)

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


def _safe(name: str) -> str:
    """A dimension's text as a MIL op name (``8*s0`` is ``dim_8_s0``)."""
    safe = "".join(ch if ch.isalnum() else "_" for ch in name).strip("_")
    return safe if safe[:1].isalpha() else f"dim_{safe}"


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
    from coremltools.converters.mil.mil import Function, get_new_symbol, types

    mil_symbols: dict[str, Any] = {}
    sources: dict[str, tuple[str, int]] = {}
    derived: dict[str, tuple[str, int]] = {}
    placeholders = {}
    for v in graph.inputs:
        if v.name in graph.states:
            placeholders[v.name] = _state_placeholder(graph, v, precision)
            continue
        shape: list[Any] = []
        for axis, d in enumerate(v.type.shape):
            if isinstance(d, int):
                shape.append(d)
            elif d in symbolic.names(d):  # a plain symbol
                shape.append(mil_symbols.setdefault(d, get_new_symbol()))
                sources.setdefault(d, (v.name, axis))
            else:
                # A derived dimension (2*n): Core ML knows it only as its own range; the
                # relation is checked before each run (api: input_dims metadata).
                shape.append(mil_symbols.setdefault(d, get_new_symbol()))
                derived.setdefault(d, (v.name, axis))
        placeholders[v.name] = mb.placeholder(
            shape=shape,
            dtype=types.string_to_builtin(io_dtype(v.type.dtype)),
            allow_rank0_input=v.type.rank == 0,
        )
    opset = getattr(ct.target, f"iOS{generation}")
    c = LowerContext(precision, generation)
    with Function(placeholders, opset_version=opset) as function:
        c.symbol_sources = {
            name: (function.inputs[input_name], axis)
            for name, (input_name, axis) in sources.items()
        }
        c.derived_sources = {
            dim: (function.inputs[input_name], axis) for dim, (input_name, axis) in derived.items()
        }
        written = {out: state for state, out in graph.states.items()}
        for v in graph.inputs:
            var = function.inputs[v.name]
            if v.name in graph.states:
                read = mb.read_state(input=var, name=f"{v.name}_read")
                if c.mil_dtype(v.type.dtype) != "fp16":
                    read = mb.cast(x=read, dtype=c.mil_dtype(v.type.dtype), name=f"{v.name}_fp32")
                c.set(v, read)
                continue
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
            if v.name in written:
                state = function.inputs[written[v.name]]
                if c.mil_dtype_of(var) != "fp16":
                    var = mb.cast(x=var, dtype="fp16", name=f"{v.name}_fp16")
                mb.coreml_update_state(state=state, value=var, name=v.name)
                continue
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


def _state_placeholder(graph: Graph, value: Value, precision: str) -> Any:
    """A Core ML state holding ``value``'s buffer, in the program's compute dtype."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    if not value.type.is_static:
        raise LoweringError(
            f"state {value.name} has dynamic shape {value.type}: a state's shape is fixed"
        )
    if not dtypes.is_float(value.type.dtype):
        raise LoweringError(
            f"state {value.name} holds {value.type.dtype}: Core ML states hold fp16 only"
        )
    # Core ML keeps states in fp16 whatever the program computes in.
    dtype = "fp16"
    return mb.state_tensor_placeholder(
        shape=list(value.type.shape), dtype=types.string_to_builtin(dtype)
    )


def build_program(
    graph: Graph,
    precision: str = "fp16",
    target: str | int = targets.DEFAULT,
    warnings: list[str] | None = None,
) -> Any:
    """Lower ``graph`` to a MIL Program whose one function is "main" (see build_function)."""
    return single_function_program(build_function(graph, precision, target, warnings))


def single_function_program(function: Any) -> Any:
    program = new_program()
    program.add_function("main", function)
    return program


def build_multifunction_program(functions: dict[str, Any], default: str) -> Any:
    """One MIL Program holding several functions (Core ML runs them from iOS18/macOS15)."""
    program = new_program()
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


def flexible_inputs(
    graph: Graph, enumerated_shapes: dict[str, Any] | None = None
) -> list[Any] | None:
    """coremltools input types declaring the shapes each input with dynamic dimensions
    takes: a range per dynamic dimension, or the listed ``enumerated_shapes``. None if
    every input is static."""
    enumerated_shapes = dict(enumerated_shapes or {})
    unknown = set(enumerated_shapes) - {v.name for v in graph.inputs}
    if unknown:
        names = ", ".join(v.name for v in graph.inputs)
        raise LoweringError(
            f"enumerated_shapes names unknown input(s) {', '.join(sorted(unknown))} "
            f"(the model takes {names})"
        )
    inputs = [v for v in graph.inputs if v.name not in graph.states]
    if all(v.type.is_static for v in inputs):
        if enumerated_shapes:
            raise LoweringError(
                "enumerated_shapes needs the dimensions that differ to be dynamic: "
                "declare them in dynamic_shapes"
            )
        return None
    ct = import_coremltools()
    types = []
    ranges: dict[str, Any] = {}
    for v in inputs:
        dtype = MIL_NUMPY[io_dtype(v.type.dtype)]
        if v.name in enumerated_shapes:
            shapes = [tuple(int(d) for d in s) for s in enumerated_shapes[v.name]]
            for s in shapes:
                if symbolic.bind(v.type.shape, s, {}) is not None or not all(
                    _in_range(graph, d, n) for d, n in zip(v.type.shape, s, strict=True)
                ):
                    raise LoweringError(
                        f"enumerated shape {list(s)} for input {v.name} does not fit its "
                        f"traced shape {list(v.type.shape)} and ranges"
                    )
            shape = ct.EnumeratedShapes(shapes=[list(s) for s in shapes], default=list(shapes[0]))
        elif v.type.is_static:
            shape = ct.Shape(list(v.type.shape))
        else:
            dims: list[Any] = []
            for d in v.type.shape:
                if isinstance(d, int):
                    dims.append(d)
                    continue
                if d not in ranges:  # inputs sharing a dimension share its RangeDim
                    low, high, default = _dim_range(graph, v.name, d)
                    ranges[d] = ct.RangeDim(low, high, default)
                dims.append(ranges[d])
            shape = ct.Shape(dims)
        types.append(ct.TensorType(name=v.name, shape=shape, dtype=dtype))
    return types


def _dim_range(graph: Graph, input_name: str, dim: str) -> tuple[int, int, int]:
    """(lowest, highest, traced) size of a dynamic input dimension: a symbol's range, or
    for a derived one (2*n + 1) its value at its symbols' ends."""
    symbols = [graph.symbols.get(n) for n in symbolic.names(dim)]
    for name, symbol in zip(symbolic.names(dim), symbols, strict=True):
        if symbol is None or symbol.max is None:
            raise LoweringError(
                f"input {input_name}: dynamic dimension {name} has no upper bound; give its "
                "torch.export.Dim a max (Core ML needs bounded shapes to plan memory)"
            )
    at = [
        symbolic.evaluate(dim, {s.name: getattr(s, end) for s in symbols}) for end in ("min", "max")
    ]
    low, high = max(min(at), 0), max(at)
    examples = {s.name: s.example for s in symbols if s.example is not None}
    traced = symbolic.evaluate(dim, examples) if len(examples) == len(symbols) else low
    return low, high, min(max(traced, low), high)


def _in_range(graph: Graph, dim: Any, size: int) -> bool:
    symbol = graph.symbols.get(dim) if isinstance(dim, str) else None
    return symbol is None or symbol.contains(size)


def to_mlmodel(
    program: Any,
    target: str | int = targets.DEFAULT,
    metadata: dict[str, str] | None = None,
    inputs: list[Any] | None = None,
) -> Any:
    """Serialise a MIL program into an in-memory ML Program model (coremltools.MLModel).

    ``inputs`` (from :func:`flexible_inputs`) declares flexible input shapes."""
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
                **({"inputs": inputs} if inputs else {}),
            )
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    # Once saved, the model reads from the saved package; should that go, it rebuilds.
    metadata = dict(metadata or {})
    artifact.own(model, scratch, lambda: to_mlmodel(program, target, metadata, inputs))
    # Dates in the metadata would make two compiles of the same model differ.
    user_defined = model._spec.description.metadata.userDefined
    user_defined.pop("com.github.apple.coremltools.conversion_date", None)
    user_defined["com.github.apple.coremltools.source"] = "coreml_compile"
    for key, value in metadata.items():
        user_defined[key] = value
    return model
