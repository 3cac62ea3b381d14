"""Loading a saved ``.mlpackage`` back into something that runs.

coremltools' milproto loader gives the MIL program and its weights (no protobuf is
parsed here); the reference executor runs it anywhere.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from coreml_compile.errors import CoreMLCompileError


class PackageError(CoreMLCompileError):
    """A path is not a readable ML Program package."""


def read_program(path: str | os.PathLike) -> tuple[Any, Any]:
    """(MLModel without a compiled model, MIL Program) of the package at ``path``."""
    from coreml_compile.compiler.lower import import_coremltools, quiet_coremltools

    path = Path(path)
    if not path.exists():
        raise PackageError(f"package not found: {path}")
    if not (path / "Manifest.json").is_file():
        raise PackageError(f"{path} is not an .mlpackage (no Manifest.json)")
    ct = import_coremltools()
    from coremltools.converters.mil.frontend.milproto.load import load as milproto_load

    with quiet_coremltools():
        try:
            mlmodel = ct.models.MLModel(str(path), skip_model_load=True)
        except Exception as exc:
            raise PackageError(f"coremltools cannot open {path}: {exc}") from exc
        spec = mlmodel.get_spec()
        if spec.WhichOneof("Type") != "mlProgram":
            raise PackageError(f"{path} holds a {spec.WhichOneof('Type')} model, not an ML Program")
        program = milproto_load(
            spec,
            specification_version=spec.specificationVersion,
            file_weights_dir=mlmodel.weights_dir,
        )
    return mlmodel, program


def load_package(
    path: str | os.PathLike,
    *,
    fallback: str | None = None,
    strategy: str | None = None,
    **run_options: Any,
) -> Any:
    """A CompiledModel for the package at ``path`` (options: see api.load)."""
    from coreml_compile.api import CompiledModel
    from coreml_compile.runtime.devices import choose
    from coreml_compile.runtime.plan import read_items
    from coreml_compile.runtime.strategy import HybridExecutionStrategy

    choose(**run_options)  # an unavailable backend fails before the package is read
    mlmodel, program = read_program(path)
    metadata = dict(mlmodel._spec.description.metadata.userDefined)
    stored = read_items(path)
    plan, nested = None, {}
    policy = HybridExecutionStrategy()
    if stored is not None:
        plan, nested_paths = stored
        nested = {name: read_program(p)[::-1] for name, p in nested_paths.items()}
        # Run as compiled; settings this version does not know (a newer writer's) are
        # left out.
        known = {f.name for f in dataclasses.fields(HybridExecutionStrategy)}
        policy = HybridExecutionStrategy(**{k: v for k, v in plan.strategy.items() if k in known})
    battery = None if strategy is None else HybridExecutionStrategy.named(strategy).battery
    policy = policy.with_overrides(fallback=fallback, battery=battery)
    return CompiledModel(
        None,
        mlmodel,
        program,
        precision=metadata.get("coreml_compile.precision", "unknown"),
        target=metadata.get("coreml_compile.target", f"spec{mlmodel._spec.specificationVersion}"),
        path=Path(path),
        plan=plan,
        nested=nested,
        strategy=policy,
        **run_options,
    )
