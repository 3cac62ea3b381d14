"""Loading a saved ``.mlpackage`` back into something that runs.

coremltools' milproto loader gives the MIL program and its weights (no protobuf is
parsed here); the reference executor runs it anywhere.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from typing import Any

from coreml_compile import artifact
from coreml_compile.errors import PackageError, with_type
from coreml_compile.package.files import PackageFiles

# The largest model.mlmodel read (an ML Program's spec holds the program; its weights
# are in weights/).
MAX_SPEC_BYTES = 1 << 30


def read_program(path: str | os.PathLike | PackageFiles) -> tuple[Any, Any]:
    """(MLModel without a compiled model, MIL Program) of the package at ``path``.

    The folder and its manifest are checked first (``package/files.py``), so coremltools
    only ever reads files inside the package; whatever it cannot parse is a PackageError.
    """
    from coreml_compile.compiler.mil import import_coremltools, quiet_coremltools

    files = path if isinstance(path, PackageFiles) else PackageFiles(path)
    path = files.label
    ct = import_coremltools()
    from coremltools.converters.mil.frontend.milproto.load import load as milproto_load

    model_file = files.root_model.path.name
    # The spec is read and parsed here, and coremltools gets a private copy of the
    # package: opening a package through coremltools rewrites its Manifest.json, and its
    # weight reader needs write access. So loading never writes into the package, works
    # on read-only packages, and reads one version of the weights.
    spec = ct.proto.Model_pb2.Model()
    try:
        spec.ParseFromString(files.read_bytes(files.root_model.path, limit=MAX_SPEC_BYTES))
    except Exception as exc:  # protobuf's DecodeError, or a nested message it refuses
        raise PackageError(
            f"{path}: {model_file} is not a readable Core ML model: {with_type(exc)}"
        ) from None
    if spec.WhichOneof("Type") != "mlProgram":
        raise PackageError(f"{path} holds a {spec.WhichOneof('Type')} model, not an ML Program")
    weights = files.find("weights", "com.apple.CoreML")
    if weights is None or not weights.path.is_dir():
        raise PackageError(f"{path}: the ML Program's weights folder is missing")
    scratch = artifact.scratch_dir()
    with quiet_coremltools():
        try:
            with artifact.coremltools_temp_files_in(scratch):
                mlmodel = ct.models.MLModel(
                    spec, weights_dir=str(weights.path), skip_model_load=True
                )
        except Exception as exc:
            shutil.rmtree(scratch, ignore_errors=True)
            raise PackageError(
                f"{path}: {model_file} is not a readable Core ML model: {with_type(exc)}"
            ) from exc
        artifact.remove_with(mlmodel, scratch)
        try:
            program = milproto_load(
                spec,
                specification_version=spec.specificationVersion,
                file_weights_dir=mlmodel.weights_dir,
            )
        except Exception as exc:
            raise PackageError(
                f"{path}: the ML Program in {model_file} or its weights (weights/weight.bin) "
                f"cannot be loaded: {with_type(exc)}"
            ) from exc
    return mlmodel, program


def _signatures(plan: Any, root: Any, nested: dict[str, tuple[Any, Any]]) -> dict:
    """Each Core ML step's function inputs and outputs: name -> (shape, MIL dtype)."""
    from coremltools.converters.mil.mil import types

    def describe(var: Any) -> tuple[tuple, str]:
        return tuple(var.shape), types.builtin_to_string(var.dtype)

    signatures = {}
    for step in plan.steps:
        if step.kind != "coreml":
            continue
        program = nested[step.name][0] if step.location == "nested" else root
        function = program.functions.get(plan.function_name(step))
        if function is None:
            raise PackageError(f"{plan.function_name(step)}: no such function for {step.name}")
        signatures[step.name] = (
            {name: describe(var) for name, var in function.inputs.items()},
            {var.name: describe(var) for var in function.outputs},
        )
    return signatures


def _state_names(program: Any) -> list[str]:
    """The state inputs (iOS18) of all of a MIL program's functions."""
    from coreml_compile.runtime.state import function_states

    return [name for f in program.functions.values() for name in function_states(f)]


@dataclass
class LoadedPackage:
    """A checked package, ready to run: what ``api.load`` makes a CompiledModel of."""

    mlmodel: Any  # the root model (coremltools MLModel over a private copy)
    program: Any  # its MIL program
    metadata: dict[str, str]
    plan: Any = None  # HybridPlan of a partitioned package
    nested: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # step -> (program, model)
    strategy: Any = None  # the HybridExecutionStrategy to run it with


def read_package(
    path: str | os.PathLike, *, fallback: str | None = None, strategy: str | None = None
) -> LoadedPackage:
    """Read and check the package at ``path`` (``fallback``/``strategy`` override the
    settings it was compiled with)."""
    from coreml_compile.compiler.strategy import HybridExecutionStrategy
    from coreml_compile.package.items import read_items
    from coreml_compile.package.validate import check_plan, strategy_from_plan

    files = PackageFiles(path)
    mlmodel, program = read_program(files)
    metadata = dict(mlmodel._spec.description.metadata.userDefined)
    stored = read_items(files)
    plan, nested = None, {}
    policy = HybridExecutionStrategy()
    if stored is not None:
        plan, nested_paths = stored
        nested = {name: read_program(p)[::-1] for name, p in nested_paths.items()}
        # The plan executor hands values between partitions and knows nothing of states.
        states = [
            name
            for p in (program, *(prog for prog, _model in nested.values()))
            for name in _state_names(p)
        ]
        if states:
            raise PackageError(
                f"{path}: a partitioned package declares state(s) {', '.join(states)}; "
                "states are supported only in packages Core ML runs whole"
            )
        check_plan(plan, _signatures(plan, program, nested))
        # Run as compiled (settings this version does not know, a newer writer's, are
        # left out).
        policy = strategy_from_plan(HybridExecutionStrategy, plan.strategy)
    battery = None if strategy is None else HybridExecutionStrategy.named(strategy).battery
    policy = policy.with_overrides(fallback=fallback, battery=battery)
    return LoadedPackage(mlmodel, program, metadata, plan, nested, policy)
