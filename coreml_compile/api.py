"""The Python API: ``compile(model, example_inputs) -> CompiledModel`` and ``load(path)``."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coreml_compile import __version__
from coreml_compile.compiler import targets
from coreml_compile.compiler.ir import Graph
from coreml_compile.errors import CoreMLCompileError, InputSpecError


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

    @property
    def total_seconds(self) -> float:
        return sum(self.stages.values())

    @property
    def mil_op_count(self) -> int:
        return sum(self.mil_ops.values())


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


def mil_op_counts(program: Any) -> dict[str, int]:
    """Op types of a MIL program's main function, as coremltools counts them.

    Constants are left out, and so are compressed weights (``constexpr_*``): Core ML
    decompresses those once at load time; they compute nothing per prediction.
    """
    counts: dict[str, int] = {}
    for op in program.functions["main"].operations:
        if op.op_type != "const" and not op.op_type.startswith("constexpr_"):
            counts[op.op_type] = counts.get(op.op_type, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


class CompiledModel:
    """A compiled model: its IR graph, its Core ML program, and a way to run it.

    ``save(path)`` writes the ``.mlpackage``; ``predict({name: array})`` and
    ``model(*tensors)`` run it (on the reference executor off Apple systems).
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
    ):
        from coreml_compile.runtime.devices import choose

        self.graph = graph
        self.mlmodel = mlmodel
        self.program = program
        self.precision = precision
        self.target = target
        self.report = report or CompileReport()
        self.path = path
        # Resolved now, so asking for a missing backend fails at load, not at first call.
        self.choice = choose(backend, compute_units, device)
        self._executor: Any = None

    # -- interface --------------------------------------------------------------------

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.mlmodel._spec.description.input]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.mlmodel._spec.description.output]

    def save(self, path: str | os.PathLike) -> Path:
        """Write the package to ``path`` (built beside it, then renamed into place)."""
        from coreml_compile.artifact import write_atomically
        from coreml_compile.compiler.lower import quiet_coremltools

        def write(tmp: Path) -> None:
            with quiet_coremltools():
                self.mlmodel.save(str(tmp))

        self.path = write_atomically(path, write)
        return self.path

    # -- running ----------------------------------------------------------------------

    @property
    def backend(self) -> str:
        """Where this model runs: "coreml:<compute units>" or "reference:<torch device>"."""
        c = self.choice
        return f"coreml:{c.compute_units}" if c.backend == "coreml" else f"reference:{c.device}"

    def _runner(self) -> Any:
        if self._executor is None:
            if self.choice.backend == "coreml":
                from coreml_compile.runtime.coreml_executor import CoreMLExecutor

                self._executor = CoreMLExecutor(self.mlmodel, self.choice.compute_units)
            else:
                from coreml_compile.runtime.reference import ReferenceExecutor

                self._executor = ReferenceExecutor(self.program, device=self.choice.device)
        return self._executor

    def predict(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Run on named numpy arrays; returns named numpy arrays (like MLModel.predict)."""
        return self._runner().predict(inputs)

    def __call__(self, *args: Any) -> Any:
        """Run on tensors in input order, like the source nn.Module (torch in, torch out)."""
        import torch

        names = self.input_names
        if len(args) != len(names):
            raise InputSpecError(
                f"expected {len(names)} input(s) ({', '.join(names)}), got {len(args)}"
            )
        feeds = {}
        for name, x in zip(names, args, strict=True):
            feeds[name] = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x
        outs = self.predict(feeds)
        results = [torch.from_numpy(outs[n]) for n in self.output_names]
        return results[0] if len(results) == 1 else tuple(results)

    def __repr__(self) -> str:
        ops = self.report.mil_op_count
        return (
            f"CompiledModel(inputs={self.input_names}, outputs={self.output_names}, "
            f"precision={self.precision}, target={self.target}, backend={self.backend}, "
            f"mil_ops={ops})"
        )


def _as_tuple(example_inputs: Any) -> tuple:
    import torch

    if example_inputs is None:
        raise InputSpecError("example_inputs are needed to trace an nn.Module")
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    return tuple(example_inputs)


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
) -> CompiledModel:
    """Compile a PyTorch model into a Core ML ML Program.

    ``model`` is an ``nn.Module`` (traced on ``example_inputs``, a tensor or a tuple of
    them) or a ``torch.export.ExportedProgram``. ``precision`` is "fp16" (default) or
    "fp32"; ``minimum_deployment_target`` a name like "iOS16" or "macOS13".
    ``optimize`` is an -O level ("O0", "O1", "O2" = default, or 0/1/2) or an explicit
    list of pass names; ``skip_passes`` leaves some out (see coreml_compile.passes).
    ``quantize`` ("int8", "int8-per-channel", "...-asym", "palette1/2/4/6/8") and
    ``prune`` (0.5, "2:4") compress weights of at least ``compress_min_elements``
    elements (skipping the first and last layer if ``compress_skip_first_last``); they
    need a target of iOS16 or later; ``compress_op_types`` limits them to some op types
    (default: conv, conv_transpose, linear, matmul, embedding). ``ane_layout`` runs linear
    layers on sequence data as 1x1 convolutions in the Neural Engine's (B, C, 1, S) layout
    (inputs and outputs keep theirs).
    ``progress`` is called with each stage's name as it starts. ``backend``,
    ``compute_units`` and ``device`` choose where calling the result runs (see
    :func:`load`).
    """
    from coreml_compile.passes import CompressionOptions, pipeline, run_pipeline
    from coreml_compile.runtime.devices import choose

    # Bad options fail before any work is done.
    choose(backend, compute_units, device)
    compression = CompressionOptions(
        quantize=quantize,
        prune=None if prune is None else str(prune),
        min_weight_elements=compress_min_elements,
        skip_first_last=compress_skip_first_last,
    )
    if compress_op_types is not None:
        compression.op_types = tuple(compress_op_types)
    generation = targets.generation(minimum_deployment_target)
    if (quantize or prune) and generation < 16:
        raise CoreMLCompileError(
            "compressed weights need a deployment target of iOS16/macOS13 or later, "
            f"not {minimum_deployment_target}"
        )
    if quantize and prune and generation < 18:
        raise CoreMLCompileError(
            "pruning combined with quantisation or palettisation needs a deployment target "
            f"of iOS18/macOS15 or later, not {minimum_deployment_target}"
        )
    if quantize and ("per-block" in quantize or "grouped" in quantize) and generation < 18:
        raise CoreMLCompileError(
            f"{quantize} needs a deployment target of iOS18/macOS15 or later, "
            f"not {minimum_deployment_target}"
        )
    pass_names = pipeline(optimize, skip_passes, compression, ane_layout)
    import torch

    from coreml_compile.compiler.frontends import torch_export
    from coreml_compile.compiler.lower import build_program, to_mlmodel

    targets.generation(minimum_deployment_target)  # reject unknown targets before tracing
    report = CompileReport()
    clock = _Stopwatch(report, progress)
    if isinstance(model, torch.export.ExportedProgram):
        ep = model
    else:
        ep = clock.stage("export", torch_export.export, model, _as_tuple(example_inputs))
    graph = clock.stage("to_ir", torch_export.to_ir, ep, name)
    clock.stage("verify", graph.verify)
    report.passes = clock.stage("optimise", run_pipeline, graph, pass_names, options=compression)
    report.ir_ops = graph.op_counts()
    report.weight_bytes = graph.weight_bytes()
    program = clock.stage(
        "lower", build_program, graph, precision, minimum_deployment_target, report.warnings
    )
    report.mil_ops = mil_op_counts(program)
    metadata = {
        "coreml_compile.version": __version__,
        "coreml_compile.precision": precision,
        "coreml_compile.target": minimum_deployment_target,
    }
    mlmodel = clock.stage("serialise", to_mlmodel, program, minimum_deployment_target, metadata)
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
    )


def load(
    path: str | os.PathLike,
    *,
    backend: str | None = None,
    compute_units: str | None = None,
    device: str | None = None,
) -> CompiledModel:
    """Load a saved ``.mlpackage`` (ours or any ML Program) to run it.

    ``backend`` is "coreml" (Core ML; macOS only) or "reference" (torch kernels, any
    machine); by default Core ML where it exists. ``compute_units`` ("all",
    "cpu_and_ne", "cpu_and_gpu", "cpu_only") applies to Core ML, ``device`` ("cpu",
    "cuda", "mps") to the reference executor. Asking for what this machine lacks raises
    DeviceNotAvailable; :func:`coreml_compile.devices` lists what it has.
    """
    from coreml_compile.runtime.package import load_package

    return load_package(path, backend=backend, compute_units=compute_units, device=device)
