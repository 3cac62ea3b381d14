"""Model files: a Python file that builds a model, named ``FILE[:NAME]``.

``NAME`` (default ``model``) is called with no arguments and must return an
``nn.Module`` (or be one). The file's ``example_inputs()`` gives the inputs to trace
with, unless shapes are given instead. The file runs as a script would: its own folder
is on ``sys.path`` while it loads, so it can import its neighbours.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

from coreml_compile.errors import InputSpecError, ModelFileError


def split_spec(spec: str) -> tuple[Path, str]:
    """``"models/resnet.py:resnet18"`` -> (path, "resnet18"); the name defaults to ``model``."""
    path, sep, name = spec.rpartition(":")
    if not sep or not name.isidentifier() or not path:
        return Path(spec), "model"
    return Path(path), name


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    module_name = "coreml_compile_model_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ModelFileError(f"{path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise ModelFileError(f"{path} failed to load: {type(exc).__name__}: {exc}") from exc
    finally:
        sys.path.remove(folder)
    return module


def load_model(spec: str) -> tuple[Any, Any]:
    """Load ``FILE[:NAME]``; returns (nn.Module, the module the file defined)."""
    import torch

    path, name = split_spec(spec)
    module = _import_file(path)
    if not hasattr(module, name):
        raise ModelFileError(f"{path} does not define {name!r}")
    factory = getattr(module, name)
    model = factory
    if not isinstance(factory, torch.nn.Module):
        if not callable(factory):
            raise ModelFileError(f"{path}:{name} is neither callable nor an nn.Module")
        try:
            model = factory()
        except Exception as exc:
            raise ModelFileError(f"{path}:{name}() failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, torch.nn.Module):
        raise ModelFileError(
            f"{path}:{name}() returned {type(model).__name__}, not a torch.nn.Module"
        )
    return model, module


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,3,224,224"`` -> (1, 3, 224, 224); raises InputSpecError naming the bad text."""
    if "x" in text.lower() and "," not in text:
        suggestion = ",".join(p.strip() for p in text.lower().split("x"))
        raise InputSpecError(
            f"malformed --input-shape {text!r}: separate dimensions with commas, like {suggestion}"
        )
    parts = [p.strip() for p in text.split(",")]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise InputSpecError(
            f"malformed --input-shape {text!r}: expected comma-separated integers like 1,3,224,224"
        ) from None
    if not shape or any(d <= 0 for d in shape):
        raise InputSpecError(f"malformed --input-shape {text!r}: dimensions must be positive")
    return shape


def example_inputs(module: Any, shapes: list[str] | None, seed: int = 0) -> tuple:
    """Inputs to trace with: random tensors of ``shapes``, else the file's example_inputs()."""
    import torch

    if shapes:
        generator = torch.Generator().manual_seed(seed)
        return tuple(torch.randn(parse_shape(s), generator=generator) for s in shapes)
    fn = getattr(module, "example_inputs", None)
    if fn is None:
        raise InputSpecError(
            "the model file defines no example_inputs(); give --input-shape (one per input)"
        )
    try:
        inputs = fn()
    except Exception as exc:
        raise InputSpecError(f"example_inputs() failed: {type(exc).__name__}: {exc}") from exc
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    inputs = tuple(inputs)
    if not all(isinstance(t, torch.Tensor) for t in inputs):
        raise InputSpecError("example_inputs() must return a tensor or a tuple of tensors")
    return inputs


def compile_source(spec: str, shapes: list[str] | None) -> tuple[Any, Any]:
    """What ``compile`` takes for a model spec: (model, example inputs).

    An ONNX file (``*.onnx``) is passed on as its path, with the ``--input-shape``
    shapes (or None: the graph's own); a Python model file is loaded and its inputs
    made as :func:`example_inputs` does.
    """
    if spec.lower().endswith(".onnx"):
        if not Path(spec).is_file():
            raise ModelFileError(f"ONNX model not found: {spec}")
        return spec, [parse_shape(s) for s in shapes] if shapes else None
    model, module = load_model(spec)
    return model, example_inputs(module, shapes)
