"""The Python API: ``compile(model, example_inputs) -> CompiledModel`` and ``load(path)``."""

from __future__ import annotations

import dataclasses
import functools
import gc
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from coreml_compile.compiler import targets
from coreml_compile.compiler.ir import Graph
from coreml_compile.errors import CoreMLCompileError, ExecutionError, InputSpecError
from coreml_compile.version import __version__

if TYPE_CHECKING:
    from coreml_compile.compiler.plan import HybridPlan
    from coreml_compile.compiler.strategy import HybridExecutionStrategy
    from coreml_compile.runtime.input_shapes import InputSpec


def _heap_frozen(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn`` with the objects that exist before it frozen out of the garbage
    collector (``gc.freeze``), and thawed after.

    With torch loaded a process tracks about 400,000 objects, and every full collection
    walks them all: the automatic ones while the compiler allocates, and the one
    coremltools forces while it writes the program. Freezing them halves a transformer's
    compile time (benchmarks/coverage.py). Garbage made during the call is collected as
    usual. A caller that froze objects itself is left as it is.
    """

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        if gc.get_freeze_count():
            return fn(*args, **kwargs)
        gc.freeze()
        try:
            return fn(*args, **kwargs)
        finally:
            gc.unfreeze()

    return run


@dataclass
class CompileReport:
    """What a compile did and how long each stage took (seconds)."""

    stages: dict[str, float] = field(default_factory=dict)
    ir_ops: dict[str, int] = field(default_factory=dict)
    mil_ops: dict[str, int] = field(default_factory=dict)
    weight_bytes: int = 0
    warnings: list[str] = field(default_factory=list)
    # One record per pass run: time, nodes and weight bytes before and after.
    passes: list[Any] = field(default_factory=list)
    # Partitioned models: share of IR nodes on Core ML, one line per partition, and
    # for each node that fell back, why. A model Core ML runs whole has one partition.
    coreml_share: float = 1.0
    partitions: list[str] = field(default_factory=list)
    fallback_reasons: dict[str, str] = field(default_factory=dict)

    @property
    def total_seconds(self) -> float:
        return sum(self.stages.values())

    @property
    def mil_op_count(self) -> int:
        return sum(self.mil_ops.values())

    def to_dict(self) -> dict[str, Any]:
        """Everything in the report as JSON-ready values (``coreml-compile --json``)."""
        return {
            "stages": dict(self.stages),
            "total_seconds": self.total_seconds,
            "ir_ops": dict(self.ir_ops),
            "mil_ops": dict(self.mil_ops),
            "mil_op_count": self.mil_op_count,
            "weight_bytes": self.weight_bytes,
            "warnings": list(self.warnings),
            "passes": [
                dataclasses.asdict(r) if dataclasses.is_dataclass(r) else r for r in self.passes
            ],
            "coreml_share": self.coreml_share,
            "partitions": list(self.partitions),
            "fallback_reasons": dict(self.fallback_reasons),
        }


class _Stopwatch:
    def __init__(self, report: CompileReport, progress: Callable[[str], None] | None):
        self.report = report
        self.progress = progress

    def stage(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.progress:
            self.progress(name)
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        self.report.stages[name] = time.perf_counter() - start
        return result


def mil_op_counts(*programs: Any) -> dict[str, int]:
    """Op types of MIL programs (all their functions), as coremltools counts them.

    Constants are left out, and so are compressed weights (``constexpr_*``): Core ML
    decompresses those once at load time; they compute nothing per prediction.
    """
    counts: dict[str, int] = {}
    for program in programs:
        for function in program.functions.values():
            for op in function.operations:
                if op.op_type != "const" and not op.op_type.startswith("constexpr_"):
                    counts[op.op_type] = counts.get(op.op_type, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


class CompiledModel:
    """A compiled model: its IR graph, its Core ML program, and a way to run it.

    ``save(path)`` writes the ``.mlpackage``; ``predict({name: array})`` and
    ``model(*tensors)`` run it (on the reference executor off Apple systems).

    A stateful model (Core ML states, iOS18+: a KV cache, say) keeps values between
    predictions: ``state = model.make_state()`` starts a set of them at zeros, and
    ``predict(inputs, state=state)`` reads and updates it, as coremltools' MLModel does.
    States are not inputs: ``input_names`` and ``input_specs()`` leave them out.

    A partitioned model (ops Core ML cannot run) also has ``plan``: its partitions in
    order; ``program``/``mlmodel`` are then the package's root model, and
    ``placements()`` says where each partition runs on this machine.
    """

    def __init__(
        self,
        graph: Graph | None,
        mlmodel: Any,
        program: Any,
        *,
        precision: str,
        target: str,
        report: CompileReport | None = None,
        path: Path | None = None,
        backend: str | None = None,
        compute_units: str | None = None,
        device: str | None = None,
        plan: HybridPlan | None = None,
        nested: dict[str, tuple[Any, Any]] | None = None,
        strategy: HybridExecutionStrategy | None = None,
    ):
        from coreml_compile.compiler.strategy import HybridExecutionStrategy
        from coreml_compile.runtime.devices import choose

        self.graph = graph
        self.mlmodel = mlmodel
        self.program = program
        self.precision = precision
        self.target = target
        self.report = report or CompileReport()
        self.path = path
        self.plan = plan
        # Step name -> (MIL program, MLModel) of Core ML partitions in nested packages.
        self._nested = nested or {}
        self.strategy = strategy or HybridExecutionStrategy()
        # Resolved now, so asking for a missing backend fails at load, not at first call.
        self.choice = choose(backend, compute_units, device)
        if self.choice.backend == "coreml" and compute_units is None:
            preferred = self.strategy.compute_units(None)  # battery: the Neural Engine
            if preferred is not None:
                self.choice = dataclasses.replace(self.choice, compute_units=preferred)
        self._executor: Any = None
        # How the inputs' dynamic dimensions relate, checked before each run.
        self._input_dims = read_input_dims(mlmodel._spec.description.metadata.userDefined)
        if plan is not None:
            self._runner()  # a missing fallback device also fails now

    # -- interface --------------------------------------------------------------------

    @property
    def input_names(self) -> list[str]:
        """The inputs ``predict`` takes, in order (a stateful model's states are not
        among them: the model description lists those apart)."""
        if self.plan is not None:
            return list(self.plan.inputs)
        return [i.name for i in self.mlmodel._spec.description.input]

    @property
    def output_names(self) -> list[str]:
        if self.plan is not None:
            return list(self.plan.outputs)
        return [o.name for o in self.mlmodel._spec.description.output]

    def input_specs(self) -> dict[str, InputSpec]:
        """Each input's shape and whether it takes floats (else integers).

        Each unpacks as ``(shape, is_float)``. A flexible input (a range per dimension,
        or a list of shapes) gives its default shape, and ``.accepts`` says which shapes
        it takes.
        """
        from coreml_compile.runtime.input_shapes import InputShape, InputSpec

        if self.plan is not None:
            from coreml_compile.compiler import dtypes

            return {
                n: InputSpec(list(t.shape), dtypes.is_float(t.dtype), InputShape.fixed(t.shape))
                for n, t in self.plan.inputs.items()
            }
        specs = {}
        for spec in self.mlmodel._spec.description.input:
            array_type = spec.type.multiArrayType
            accepts = InputShape.from_description(spec)
            shape = list(accepts.default) if accepts is not None else list(array_type.shape)
            is_float = array_type.dataType != array_type.INT32
            specs[spec.name] = InputSpec(shape, is_float, accepts)
        return specs

    @_heap_frozen
    def save(self, path: str | os.PathLike) -> Path:
        """Write the package to ``path`` (built beside it, then swapped into place).

        The same model and options give the same bytes. coremltools' scratch copy of the
        package (in TMPDIR) is removed once saved: the model then reads from ``path``.
        """
        from coreml_compile import artifact
        from coreml_compile.compiler.mil import quiet_coremltools
        from coreml_compile.reproducible import item_path

        models = {name: model for name, (_program, model) in self._nested.items()}
        written: list[tuple] = []

        def write(tmp: Path) -> None:
            with quiet_coremltools():
                self.mlmodel.save(str(tmp))
            if self.plan is not None:
                from coreml_compile.package.items import write_items

                write_items(tmp, self.plan, models)

        self.path = artifact.write_atomically(path, write, written.append)
        if artifact.package_identity(self.path) == written[-1]:  # not replaced since
            artifact.adopt(self.mlmodel, self.path)
            for name, mlmodel in models.items():
                nested = item_path(self.path, f"{name}.mlpackage")
                if nested is not None:
                    artifact.adopt(mlmodel, nested)
        return self.path

    # -- running ----------------------------------------------------------------------

    @property
    def backend(self) -> str:
        """Where the Core ML program runs: "coreml:<compute units>" or "reference:<device>".

        Fallback partitions of a partitioned model run on torch: see ``placements()``.
        """
        c = self.choice
        return f"coreml:{c.compute_units}" if c.backend == "coreml" else f"reference:{c.device}"

    def placements(self) -> list[Any]:
        """Where each partition runs here and why (empty for a model Core ML runs whole)."""
        return self._runner().placements if self.plan is not None else []

    def _runner(self) -> Any:
        if self._executor is None:
            if self.plan is not None:
                from coreml_compile.runtime.plan_executor import PlanExecutor

                programs, models = {}, {}
                for step in self.plan.steps:
                    if step.kind == "coreml":
                        program, model = self._nested.get(step.name, (self.program, self.mlmodel))
                        programs[step.name], models[step.name] = program, model
                self._executor = PlanExecutor(
                    self.plan, programs, models, self.choice, self.strategy
                )
            elif self.choice.backend == "coreml":
                from coreml_compile.runtime.coreml_executor import CoreMLExecutor

                self._executor = CoreMLExecutor(self.mlmodel, self.choice.compute_units)
                # States are only for models Core ML runs whole: read_package refuses
                # partitioned packages that declare any.
            else:
                from coreml_compile.runtime.input_shapes import description_shapes
                from coreml_compile.runtime.reference import ReferenceExecutor

                self._executor = ReferenceExecutor(
                    self.program,
                    device=self.choice.device,
                    input_shapes=description_shapes(self.mlmodel._spec.description),
                )
        return self._executor

    @property
    def state_names(self) -> list[str]:
        """The states the model keeps between calls (empty for most models)."""
        return list(self._state_specs())

    def _state_specs(self) -> dict[str, Any]:
        """{state name: StateSpec} the model keeps (none for a partitioned model)."""
        from coreml_compile.runtime.state import description_states

        if self.plan is not None:
            return {}
        return description_states(self.mlmodel._spec.description)

    def make_state(self) -> Any:
        """A new set of the model's state values, all zeros, for ``predict(state=...)``.

        Each call starts an independent set; ``read_state(name)`` and
        ``write_state(name, value)`` on it read and set values as numpy arrays.
        """
        from coreml_compile.runtime.state import NO_STATE_TO_MAKE

        if not self._state_specs():
            raise InputSpecError(NO_STATE_TO_MAKE)
        return self._runner().make_state()

    def predict(self, inputs: Any, state: Any = None) -> dict[str, Any]:
        """Run on named numpy arrays; returns named numpy arrays (like MLModel.predict).

        A model with one input also takes the array itself, and a list or tuple gives
        the inputs in order. Inputs must be numbers: float64 is refused for a float
        input (Core ML has no float64; cast to float32), big-endian arrays are converted.
        A stateful model needs ``state`` (from ``make_state()``), which it updates in
        place; a model without states takes none.
        """
        from coreml_compile.runtime.state import check_state

        check_state(self._state_specs(), state)  # before the inputs: the call is wrong
        feeds = self._feeds(inputs)
        runner = self._runner()
        try:
            if state is None:
                return runner.predict(feeds)
            return runner.predict(feeds, state=state)
        except (IndexError, ExecutionError) as exc:
            # An index out of range (a gather or embedding) comes from the inputs' values.
            cause = exc if isinstance(exc, IndexError) else exc.__cause__
            ranges = [
                f"{name} holds {int(x.min())}..{int(x.max())}"
                for name, x in ((n, np.asarray(v)) for n, v in feeds.items())
                if x.size and x.dtype.kind in "iu"
            ]
            if not ranges or not isinstance(cause, IndexError):
                raise
            raise InputSpecError(
                f"an index is out of range while running the model ({'; '.join(ranges)}): "
                "integer inputs such as token ids must be below the size of the table "
                "they index"
            ) from exc

    def _feeds(self, inputs: Any) -> dict[str, Any]:
        """``inputs`` as {name: array}, each array checked and made native-endian."""
        import torch

        names = self.input_names
        takes = f"the model takes {len(names)} input(s): {', '.join(names)}"
        if isinstance(inputs, np.ndarray | torch.Tensor):
            if len(names) != 1:
                raise InputSpecError(f"one array given but {takes}; pass {{name: array}}")
            inputs = {names[0]: inputs}
        elif isinstance(inputs, list | tuple):
            if len(inputs) != len(names):
                raise InputSpecError(f"{len(inputs)} array(s) given but {takes}")
            inputs = dict(zip(names, inputs, strict=True))
        elif not isinstance(inputs, Mapping):
            raise InputSpecError(
                f"predict() takes {{name: array}}, not {type(inputs).__name__} ({takes})"
            )
        from coreml_compile.runtime.input_shapes import check_input_names

        check_input_names(names, inputs)  # missing and unknown names first
        specs = self.input_specs()
        feeds = {name: _input_array(name, x, specs.get(name)) for name, x in inputs.items()}
        _check_related_dims(self._input_dims, feeds)
        return feeds

    def __call__(self, *args: Any, state: Any = None) -> Any:
        """Run on tensors in input order, like the source nn.Module (torch in, torch out);
        ``state`` as for ``predict``."""
        import torch

        names = self.input_names
        if len(args) != len(names):
            raise InputSpecError(
                f"expected {len(names)} input(s) ({', '.join(names)}), got {len(args)}"
            )
        feeds = {}
        for name, x in zip(names, args, strict=True):
            feeds[name] = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x
        outs = self.predict(feeds, state=state)
        results = [torch.from_numpy(outs[n]) for n in self.output_names]
        return results[0] if len(results) == 1 else tuple(results)

    def __repr__(self) -> str:
        ops = self.report.mil_op_count
        parts = f", partitions={len(self.plan.steps)}" if self.plan is not None else ""
        return (
            f"CompiledModel(inputs={self.input_names}, outputs={self.output_names}, "
            f"precision={self.precision}, target={self.target}, backend={self.backend}, "
            f"mil_ops={ops}{parts})"
        )


INPUT_DIMS_KEY = "coreml_compile.input_dims"


def read_input_dims(metadata: Mapping[str, str]) -> dict[str, list[Any]] | None:
    """The inputs' dimensions as the compiler traced them (ints, symbol expressions),
    from a package's metadata; PackageError if that text is not what we write."""
    from coreml_compile.compiler import symbolic
    from coreml_compile.errors import PackageError

    text = metadata.get(INPUT_DIMS_KEY)
    if text is None:
        return None
    try:
        dims = json.loads(text)
        if not isinstance(dims, dict) or len(text) > 1 << 16:
            raise ValueError("not an object")
        for name, shape in dims.items():
            if not isinstance(name, str) or not isinstance(shape, list):
                raise ValueError(f"bad entry {name!r}")
            for d in shape:
                if isinstance(d, bool) or not isinstance(d, int | str):
                    raise ValueError(f"bad dimension {d!r}")
                if isinstance(d, str):
                    symbolic.evaluate(d, dict.fromkeys(symbolic.names(d), 1))
    except (ValueError, TypeError, ZeroDivisionError) as exc:
        raise PackageError(f"metadata {INPUT_DIMS_KEY} is malformed: {exc}") from None
    return dims


def _check_related_dims(dims: dict[str, list[Any]] | None, feeds: Mapping[str, Any]) -> None:
    """InputSpecError unless the inputs' sizes agree with how their dimensions relate
    (the same dynamic dimension in two inputs, one twice another, a multiple of 8...)."""
    from coreml_compile.compiler import symbolic

    if dims:
        shapes = {name: tuple(np.shape(x)) for name, x in feeds.items()}
        reason = symbolic.bind_shapes(dims, shapes)
        if reason is not None:
            raise InputSpecError(reason)


def _input_array(name: str, x: Any, spec: InputSpec | None) -> Any:
    """One input checked for predict(): numbers only, no float64 for a float input, and a
    shape the input accepts (any of a flexible input's)."""
    import torch

    accepts = getattr(spec, "accepts", None)
    if isinstance(x, torch.Tensor):
        if x.dtype == torch.float64 and (spec is None or spec[1]):
            raise InputSpecError(
                f"input {name}: float64 data, but Core ML has no float64; "
                "convert it with .float() first"
            )
        if accepts is not None:
            accepts.check(name, x.shape)
        return x
    try:
        array = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise InputSpecError(f"input {name}: not an array of numbers ({exc})") from None
    if array.dtype.kind not in "biuf":
        raise InputSpecError(
            f"input {name}: {array.dtype} data ({_KINDS.get(array.dtype.kind, 'not numbers')}); "
            "give a float32 or integer array"
        )
    if array.dtype.kind == "f" and array.dtype.itemsize == 8 and (spec is None or spec[1]):
        raise InputSpecError(
            f"input {name}: float64 data, but Core ML has no float64; "
            "convert it with .astype(np.float32) first"
        )
    if accepts is not None:
        accepts.check(name, array.shape)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return array


_KINDS = {"O": "Python objects", "U": "strings", "S": "bytes", "M": "dates", "m": "time spans"}


def _as_tuple(example_inputs: Any) -> tuple:
    import torch

    if example_inputs is None:
        raise InputSpecError("example_inputs are needed to trace an nn.Module")
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    return tuple(example_inputs)


def _onnx_shapes(example_inputs: Any) -> Any:
    """Shapes for an ONNX model's inputs from example inputs: a tensor, a sequence of
    tensors/arrays/shape tuples, or {name: ...}; None keeps the graph's shapes."""
    if example_inputs is None or isinstance(example_inputs, Mapping):
        return example_inputs
    if hasattr(example_inputs, "shape"):
        return [example_inputs]
    return list(example_inputs)


def _check_compressed_weights(
    graph: Graph, generation: int, quantize: str | None, prune: Any, target: str
) -> None:
    """Compressed weights never fall back (they would be expanded on the CPU at every
    call): one Core ML cannot store for ``target`` is an error, in its record's words
    (the records state which targets each storage form needs)."""
    from coreml_compile.compiler.ops import get_record, unsupported_reason

    for node in graph.nodes:
        if get_record(node.op).foldable:
            continue
        reason = unsupported_reason(node, generation)
        if reason is not None:
            asked = " and ".join(
                f"--{name} {value}" for name, value in (("quantize", quantize), ("prune", prune))
                if value is not None
            )  # fmt: skip
            raise CoreMLCompileError(
                f"{asked or 'compressed weights'} cannot be stored for {target}: {reason}"
            )


@_heap_frozen
def compile(  # noqa: A001 - mirrors coreml_compile.compile
    model: Any,
    example_inputs: Any = None,
    *,
    precision: str = "fp16",
    minimum_deployment_target: str = targets.DEFAULT,
    name: str = "main",
    progress: Callable[[str], None] | None = None,
    optimize: str | int | Sequence[str] = "O2",
    skip_passes: Sequence[str] = (),
    quantize: str | None = None,
    prune: str | float | None = None,
    compress_min_elements: int = 2048,
    compress_skip_first_last: bool = False,
    compress_op_types: Sequence[str] | None = None,
    ane_layout: bool = False,
    backend: str | None = None,
    compute_units: str | None = None,
    device: str | None = None,
    allow_fallback: bool = True,
    strategy: str | HybridExecutionStrategy = "auto",
    fallback: str | None = None,
    min_coreml_nodes: int | None = None,
    dynamic_shapes: Any = None,
    enumerated_shapes: Mapping[str, Sequence[Sequence[int]]] | None = None,
) -> CompiledModel:
    """Compile a PyTorch model into a Core ML ML Program.

    ``model`` is an ``nn.Module`` (traced on ``example_inputs``, a tensor or a tuple of
    them), a ``torch.export.ExportedProgram``, or an ONNX model (a path ending in
    ``.onnx`` or an ``onnx.ModelProto``; ``example_inputs`` are then optional and give
    or override input shapes: tensors, arrays or shape tuples, in order or by name).
    ``precision`` is "fp16" (default) or "fp32"; ``minimum_deployment_target`` a name
    like "iOS16" or "macOS13".
    ``optimize`` is an -O level ("O0", "O1", "O2" = default, or 0/1/2) or an explicit
    list of pass names; ``skip_passes`` leaves some out (see coreml_compile.passes).
    ``quantize`` ("int8" = per channel, "int8-per-tensor", "...-asym", "palette1/2/4/6/8") and
    ``prune`` (0.5, "2:4") compress weights of at least ``compress_min_elements``
    elements (skipping the first and last layer if ``compress_skip_first_last``); they
    need a target of iOS16 or later; ``compress_op_types`` limits them to some op types
    (default: conv, conv_transpose, linear, matmul, embedding). ``ane_layout`` runs linear
    layers on sequence data as 1x1 convolutions in the Neural Engine's (B, C, 1, S) layout
    (inputs and outputs keep theirs).
    Ops Core ML cannot run (no lowering, float64, rank > 5, too old a target...) make
    the model partitioned: the supported parts go to Core ML and the rest runs on torch
    ("fallback"), all in one package; ``report`` says what fell back and why.
    ``allow_fallback=False`` makes such ops an UnsupportedOpError listing each one.
    ``strategy`` ("auto", "battery" or a HybridExecutionStrategy) decides which small
    Core ML partitions are worth their hand-offs and where fallbacks run; ``fallback``
    ("auto", "mps", "cuda", "cpu") and ``min_coreml_nodes`` override its settings.
    ``progress`` is called with each stage's name as it starts. ``backend``,
    ``compute_units`` and ``device`` choose where calling the result runs (see
    :func:`load`).
    ``dynamic_shapes`` is torch.export's own argument (``torch.export.Dim`` with
    ``min``/``max``): those dimensions stay symbolic, and the package's inputs take any
    size in each range (iOS16+). ``enumerated_shapes`` ({input name: [shape, ...]})
    declares a fixed set of shapes instead, which the Neural Engine prefers; the
    dimensions that differ between them must be dynamic in ``dynamic_shapes``.
    """
    from coreml_compile.passes import CompressionOptions, pipeline, run_pipeline
    from coreml_compile.runtime.devices import choose

    # Bad options fail before any work is done.
    choose(backend, compute_units, device)
    policy = _strategy(strategy, fallback, min_coreml_nodes)
    compression = CompressionOptions(
        quantize=quantize,
        prune=None if prune is None else str(prune),
        min_weight_elements=compress_min_elements,
        skip_first_last=compress_skip_first_last,
    )
    if compress_op_types is not None:
        compression.op_types = tuple(compress_op_types)
    generation = targets.generation(minimum_deployment_target)
    pass_names = pipeline(optimize, skip_passes, compression, ane_layout)
    import torch

    from coreml_compile.compiler.frontends import torch_export
    from coreml_compile.compiler.lower import (
        build_program,
        check_supported,
        flexible_inputs,
        to_mlmodel,
    )
    from coreml_compile.compiler.partition import COREML, partition

    report = CompileReport()
    clock = _Stopwatch(report, progress)
    from coreml_compile.compiler.frontends import onnx_import

    if onnx_import.is_onnx_source(model):
        # example_inputs, if any, give (or override) the ONNX inputs' shapes.
        shapes = _onnx_shapes(example_inputs)
        graph = clock.stage("to_ir", onnx_import.to_ir, model, name, shapes)
    else:
        if isinstance(model, torch.export.ExportedProgram):
            ep = model
        else:
            ep = clock.stage(
                "export",
                torch_export.export,
                model,
                _as_tuple(example_inputs),
                dynamic_shapes=dynamic_shapes,
            )
        graph = clock.stage("to_ir", torch_export.to_ir, ep, name)
        report.warnings.extend(torch_export.nonzero_state_warnings(ep, graph))
        report.warnings.extend(torch_export.float64_warnings(ep))
    clock.stage("verify", graph.verify)
    report.passes = clock.stage("optimise", run_pipeline, graph, pass_names, options=compression)
    _check_compressed_weights(graph, generation, quantize, prune, minimum_deployment_target)
    report.ir_ops = graph.op_counts()
    report.weight_bytes = graph.weight_bytes()
    metadata = {
        "coreml_compile.version": __version__,
        "coreml_compile.precision": precision,
        "coreml_compile.target": minimum_deployment_target,
    }
    if any(not v.type.is_static for v in graph.inputs):
        # Core ML checks each dimension against its range; how dimensions relate (two
        # inputs sharing one, one twice another) is checked before each run from this.
        metadata[INPUT_DIMS_KEY] = json.dumps(
            {v.name: list(v.type.shape) for v in graph.inputs if v.name not in graph.states}
        )
    if graph.states and generation < 18:
        raise CoreMLCompileError(
            f"the model updates buffer(s) {', '.join(graph.states)} in place: that is Core ML "
            f"state, which needs a deployment target of iOS18/macOS15 or later, not "
            f"{minimum_deployment_target}"
        )
    if not allow_fallback or graph.symbols or graph.states:
        # A package with dynamic shapes is one Core ML program: its fallback partitions
        # would need shapes at their boundaries that only the run knows.
        check_supported(graph, generation)  # lists every op Core ML cannot run
    plan = clock.stage("partition", partition, graph, generation, policy)
    if len(plan.partitions) > 1 or any(p.kind != COREML for p in plan.partitions):
        return _compile_partitioned(
            graph, plan, clock, metadata, policy, precision, minimum_deployment_target,
            backend=backend, compute_units=compute_units, device=device,
        )  # fmt: skip
    program = clock.stage(
        "lower", build_program, graph, precision, minimum_deployment_target, report.warnings
    )
    report.mil_ops = mil_op_counts(program)
    mlmodel = clock.stage(
        "serialise",
        to_mlmodel,
        program,
        minimum_deployment_target,
        metadata,
        flexible_inputs(graph, enumerated_shapes),
    )
    return CompiledModel(
        graph,
        mlmodel,
        program,
        precision=precision,
        target=minimum_deployment_target,
        report=report,
        backend=backend,
        compute_units=compute_units,
        device=device,
        strategy=policy,
    )


def _strategy(
    strategy: str | HybridExecutionStrategy, fallback: str | None, min_coreml_nodes: int | None
) -> HybridExecutionStrategy:
    from coreml_compile.compiler.strategy import HybridExecutionStrategy

    if not isinstance(strategy, HybridExecutionStrategy):
        strategy = HybridExecutionStrategy.named(strategy)
    return strategy.with_overrides(fallback=fallback, min_coreml_nodes=min_coreml_nodes)


def _compile_partitioned(
    graph: Graph,
    plan: Any,
    clock: _Stopwatch,
    metadata: dict[str, str],
    policy: HybridExecutionStrategy,
    precision: str,
    target: str,
    **run_options: Any,
) -> CompiledModel:
    from coreml_compile.compiler.lower_plan import lower_plan

    report = clock.report
    lowered = clock.stage(
        "lower",
        lower_plan,
        graph,
        plan,
        precision,
        target,
        metadata,
        dataclasses.asdict(policy),
        report.warnings,
    )
    hybrid = lowered.plan
    report.mil_ops = mil_op_counts(
        *([lowered.root_program] if hybrid.steps_on_coreml else []),
        *lowered.nested_programs.values(),
    )
    report.coreml_share = hybrid.coreml_share
    report.partitions = hybrid.summary()
    report.fallback_reasons = hybrid.fallback_reasons()
    nested = {
        name: (program, lowered.nested_models[name])
        for name, program in lowered.nested_programs.items()
    }
    return CompiledModel(
        graph,
        lowered.root_model,
        lowered.root_program,
        precision=precision,
        target=target,
        report=report,
        plan=hybrid,
        nested=nested,
        strategy=policy,
        **run_options,
    )


def load(
    path: str | os.PathLike,
    *,
    backend: str | None = None,
    compute_units: str | None = None,
    device: str | None = None,
    fallback: str | None = None,
    strategy: str | None = None,
) -> CompiledModel:
    """Load a saved ``.mlpackage`` (ours or any ML Program) to run it.

    ``backend`` is "coreml" (Core ML; macOS only) or "reference" (torch kernels, any
    machine); by default Core ML where it exists. ``compute_units`` ("all",
    "cpu_and_ne", "cpu_and_gpu", "cpu_only") applies to Core ML, ``device`` ("cpu",
    "cuda", "mps") to the reference executor. Asking for what this machine lacks raises
    DeviceNotAvailable; :func:`coreml_compile.devices` lists what it has.
    A partitioned package runs its fallback partitions on torch as it was compiled to;
    ``fallback`` ("auto", "mps", "cuda", "cpu") and ``strategy`` ("auto", "battery")
    override that here.
    """
    from coreml_compile.artifact import read_consistently
    from coreml_compile.runtime.devices import choose
    from coreml_compile.runtime.package import read_package

    choose(backend, compute_units, device)  # an unavailable backend fails before reading
    # One version of the package, should a save replace it while it is read.
    loaded = read_consistently(
        path, lambda: read_package(path, fallback=fallback, strategy=strategy)
    )
    spec_version = loaded.mlmodel._spec.specificationVersion
    return CompiledModel(
        None,
        loaded.mlmodel,
        loaded.program,
        precision=loaded.metadata.get("coreml_compile.precision", "unknown"),
        target=loaded.metadata.get("coreml_compile.target", f"spec{spec_version}"),
        path=Path(path),
        plan=loaded.plan,
        nested=loaded.nested,
        strategy=loaded.strategy,
        backend=backend,
        compute_units=compute_units,
        device=device,
    )
