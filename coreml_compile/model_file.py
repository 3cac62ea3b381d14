"""Model files: a Python file that builds a model, named ``FILE[:NAME]``.

``NAME`` (default ``model``) is called with no arguments and must return an
``nn.Module`` (or be one). The file's ``example_inputs()`` gives the inputs to trace
with, unless shapes are given instead (``--input-shape``: fixed, with ``LO..HI`` ranges,
or ``/``-separated alternatives; see :func:`parse_input_shape`). The file runs as a
script would: its own folder is on ``sys.path`` while it loads, so it can import its
neighbours.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
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


# -- --input-shape ----------------------------------------------------------------------------


@dataclass(frozen=True)
class InputShape:
    """One parsed ``--input-shape``: per axis a fixed size or an inclusive (lo, hi) range.

    An enumerated input (``A/B/C``) also keeps its listed shapes in ``alternatives``; its
    axes that differ between them are ranges over the listed sizes.
    """

    text: str
    dims: tuple[int | tuple[int, int], ...]
    alternatives: tuple[tuple[int, ...], ...] = ()

    @property
    def ranges(self) -> dict[int, tuple[int, int]]:
        """The dynamic axes: {axis: (lo, hi)}."""
        return {axis: d for axis, d in enumerate(self.dims) if isinstance(d, tuple)}

    @property
    def is_fixed(self) -> bool:
        return not self.ranges and not self.alternatives


def parse_input_shape(text: str) -> InputShape:
    """Parse one ``--input-shape`` in any of its three forms.

    ``1,3,224,224`` is a fixed shape; ``1,3,64..512,64..512`` lets an axis take any size
    from LO to HI (both inclusive and required: Core ML needs an upper bound to plan for
    the Neural Engine); ``1,3,224,224/1,3,320,320`` lists whole shapes, of one rank, of
    which the package takes exactly those. ``LO..LO`` is just ``LO``. Each mistake is an
    InputSpecError naming the text.
    """
    if "x" in text.lower() and "," not in text:
        suggestion = ",".join(p.strip() for p in text.lower().split("x"))
        raise InputSpecError(
            f"malformed --input-shape {text!r}: separate dimensions with commas, like {suggestion}"
        )
    if "/" not in text:
        return InputShape(text, tuple(_parse_dim(text, part.strip()) for part in text.split(",")))
    if ".." in text:
        raise InputSpecError(
            f"malformed --input-shape {text!r}: give either ranges (LO..HI) or whole shapes "
            "separated by /, not both in one input"
        )
    alternatives = [a.strip() for a in text.split("/")]
    if not all(alternatives):
        raise InputSpecError(
            f"malformed --input-shape {text!r}: a shape is missing before or after a /"
        )
    shapes = tuple(tuple(_size(text, part.strip()) for part in a.split(",")) for a in alternatives)
    ranks = sorted({len(shape) for shape in shapes})
    if len(ranks) > 1:
        raise InputSpecError(
            f"malformed --input-shape {text!r}: the shapes separated by / must have the same "
            f"number of dimensions (these have {' and '.join(map(str, ranks))})"
        )
    repeated = next((s for i, s in enumerate(shapes) if s in shapes[:i]), None)
    if repeated is not None:
        raise InputSpecError(
            f"malformed --input-shape {text!r}: lists {','.join(map(str, repeated))} twice"
        )
    dims: list[int | tuple[int, int]] = []
    for sizes in zip(*shapes, strict=True):
        dims.append(sizes[0] if len(set(sizes)) == 1 else (min(sizes), max(sizes)))
    return InputShape(text, tuple(dims), shapes)


def _size(text: str, part: str) -> int:
    """One fixed axis of ``text``."""
    try:
        size = int(part)
    except ValueError:
        raise InputSpecError(
            f"malformed --input-shape {text!r}: expected comma-separated sizes like "
            "1,3,224,224 (or ranges like 64..512)"
        ) from None
    if size <= 0:
        raise InputSpecError(f"malformed --input-shape {text!r}: dimensions must be positive")
    return size


def _parse_dim(text: str, part: str) -> int | tuple[int, int]:
    """One axis of ``text``: ``N`` or ``LO..HI``."""
    if ".." not in part:
        return _size(text, part)
    low_text, _, high_text = part.partition("..")
    if not high_text.strip():
        raise InputSpecError(
            f"--input-shape {text!r}: the range {part} has no upper bound; give the largest "
            f"size too, like {low_text.strip() or 1}..HI (Core ML needs bounded shapes to "
            "plan for the Neural Engine)"
        )
    if not low_text.strip():
        raise InputSpecError(
            f"malformed --input-shape {text!r}: the range {part} has no lower bound; "
            f"write 1{part} for sizes from 1"
        )
    try:
        low, high = int(low_text), int(high_text)
    except ValueError:
        raise InputSpecError(
            f"malformed --input-shape {text!r}: the range {part} must be two integers "
            "LO..HI, like 64..512"
        ) from None
    if low < 1:
        raise InputSpecError(
            f"malformed --input-shape {text!r}: the range {part} must start at 1 or more"
        )
    if high < low:
        raise InputSpecError(
            f"malformed --input-shape {text!r}: the range {part} ends below its start"
        )
    # A one-size range is a fixed size: torch.export has no Dim with min == max.
    return low if low == high else (low, high)


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1,3,224,224"`` -> (1, 3, 224, 224): a fixed shape, for where nothing may vary."""
    shape = parse_input_shape(text)
    if not shape.is_fixed:
        raise InputSpecError(
            f"--input-shape {text!r}: a fixed shape is needed here, without ranges (..) "
            "or alternatives (/)"
        )
    return tuple(d for d in shape.dims if isinstance(d, int))


def example_sizes(shapes: Sequence[InputShape]) -> list[tuple[int, ...]]:
    """The shape of each input's example tensor, the one torch.export traces with.

    torch.export fixes an axis whose example size is 0 or 1 to that size, and may merge
    two dynamic axes whose example sizes are equal, so every dynamic axis gets a size of
    at least 2 and, where its range allows, one no other dynamic axis uses:

    - an input given as alternatives (``A/B``) is traced at the first listed shape whose
      differing axes are all above 1 (if none is, at the first shape with each such axis
      of size 1 raised to that axis' smallest listed size above 1);
    - then each range axis, in input and axis order, takes the smallest size from
      max(LO, 2) up to HI that no dynamic axis has taken yet (max(LO, 2) if all are).
    """
    examples: list[list[int]] = []
    taken: set[int] = set()
    for shape in shapes:
        if shape.alternatives:
            varying = list(shape.ranges)
            chosen = next((s for s in shape.alternatives if all(s[a] > 1 for a in varying)), None)
            if chosen is None:
                first = list(shape.alternatives[0])
                for axis in varying:
                    if first[axis] == 1:
                        first[axis] = min(s[axis] for s in shape.alternatives if s[axis] > 1)
                chosen = tuple(first)
            taken.update(chosen[a] for a in varying)
            examples.append(list(chosen))
        else:
            examples.append([d if isinstance(d, int) else 0 for d in shape.dims])
    for shape, example in zip(shapes, examples, strict=True):
        if shape.alternatives:
            continue
        for axis, (low, high) in shape.ranges.items():
            start = max(low, 2)
            size = start
            while size in taken and size < high:
                size += 1
            if size in taken:  # every size in the range is taken: share the smallest
                size = start
            taken.add(size)
            example[axis] = size
    return [tuple(example) for example in examples]


def input_names(model: Any, count: int) -> list[str]:
    """The names of ``model``'s first ``count`` inputs: forward()'s positional parameters,
    which is also what the package names them (``*args`` give ``args_0``, ``args_1``...)."""
    try:
        parameters = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):  # a forward without a Python signature
        return [f"input_{i}" for i in range(count)]
    names: list[str] = []
    for parameter in parameters:
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            names.append(parameter.name)
        elif parameter.kind == parameter.VAR_POSITIONAL:
            names += [f"{parameter.name}_{i}" for i in range(count - len(names))]
    if len(names) < count:
        raise InputSpecError(
            f"{count} --input-shape given, but forward() takes {len(names)} input(s)"
            + (f" ({', '.join(names)})" if names else "")
        )
    return names[:count]


def dynamic_shapes(shapes: Sequence[InputShape], names: Sequence[str]) -> tuple | None:
    """torch.export's ``dynamic_shapes``: per input {axis: Dim(f"{name}_dim{axis}")} or None;
    None when nothing varies."""
    from torch.export import Dim

    result: list[dict[int, Any] | None] = []
    for shape, name in zip(shapes, names, strict=True):
        dims = {
            axis: Dim(f"{name}_dim{axis}", min=low, max=high)
            for axis, (low, high) in shape.ranges.items()
        }
        result.append(dims or None)
    return tuple(result) if any(entry is not None for entry in result) else None


def enumerated_shapes(
    shapes: Sequence[InputShape], names: Sequence[str]
) -> dict[str, list[tuple[int, ...]]] | None:
    """{input name: [shape, ...]} for the inputs given as alternatives; None if none is."""
    result = {
        name: list(shape.alternatives)
        for shape, name in zip(shapes, names, strict=True)
        if shape.alternatives
    }
    return result or None


def example_inputs(module: Any, shapes: list[str] | None, seed: int = 0) -> tuple:
    """Inputs to trace with: random tensors of ``shapes`` (at :func:`example_sizes` for
    ranges and alternatives), else the file's example_inputs()."""
    import torch

    if shapes:
        generator = torch.Generator().manual_seed(seed)
        sizes = example_sizes([parse_input_shape(s) for s in shapes])
        return tuple(torch.randn(size, generator=generator) for size in sizes)
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


@dataclass
class CompileSource:
    """What ``coreml-compile`` passes to :func:`coreml_compile.compile`.

    ``model`` is an nn.Module (``example_inputs`` then a tuple of tensors) or an ONNX
    path (``example_inputs`` its shapes, or None for the graph's own);
    ``dynamic_shapes`` and ``enumerated_shapes`` are compile's arguments of those names.
    """

    model: Any
    example_inputs: Any
    dynamic_shapes: tuple | None = None
    enumerated_shapes: dict[str, list[tuple[int, ...]]] | None = None
    # The file's MINIMUM_TARGET, if it names one (a model with Core ML state needs iOS18).
    minimum_target: str | None = None


def _file_dynamic_shapes(module: Any) -> Any:
    """The file's own ``dynamic_shapes()`` (torch.export's argument for its
    example_inputs()), if it defines one."""
    fn = getattr(module, "dynamic_shapes", None)
    if fn is None:
        return None
    try:
        return fn()
    except Exception as exc:
        raise InputSpecError(f"dynamic_shapes() failed: {type(exc).__name__}: {exc}") from exc


def compile_source(spec: str, shapes: list[str] | None) -> CompileSource:
    """What ``compile`` takes for a model spec and its ``--input-shape`` texts.

    An ONNX file (``*.onnx``) is passed on as its path, with the fixed shapes given (or
    None: the graph's own); a Python model file is loaded, its inputs made as
    :func:`example_inputs` does, and its ranges and alternatives declared by name.
    """
    if spec.lower().endswith(".onnx"):
        if not Path(spec).is_file():
            raise ModelFileError(f"ONNX model not found: {spec}")
        if not shapes:
            return CompileSource(spec, None)
        for text in shapes:
            if not parse_input_shape(text).is_fixed:
                raise InputSpecError(
                    f"--input-shape {text!r}: ranges in --input-shape are for PyTorch "
                    "models (alternatives too); give ONNX models fixed shapes"
                )
        return CompileSource(spec, [parse_shape(s) for s in shapes])
    model, module = load_model(spec)
    inputs = example_inputs(module, shapes)
    target = getattr(module, "MINIMUM_TARGET", None)
    if target is not None and not isinstance(target, str):
        raise ModelFileError(f"{spec}: MINIMUM_TARGET must be a target name like 'iOS18'")
    if not shapes:
        return CompileSource(model, inputs, _file_dynamic_shapes(module), minimum_target=target)
    parsed = [parse_input_shape(s) for s in shapes]
    if all(shape.is_fixed for shape in parsed):
        return CompileSource(model, inputs, minimum_target=target)
    names = input_names(model, len(parsed))
    return CompileSource(
        model,
        inputs,
        dynamic_shapes(parsed, names),
        enumerated_shapes(parsed, names),
        minimum_target=target,
    )
