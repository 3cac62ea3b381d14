"""An ``onnx.backend.base.Backend`` on top of :func:`coreml_compile.compile`.

``prepare(model)`` checks the model and returns a rep; ``rep.run(inputs)`` compiles the
model for the shapes of the inputs it is given (once per set of shapes: symbolic
dimensions are filled in from them) and runs the package on this machine (the reference
executor off Apple systems, Core ML on them). Outputs come back as numpy arrays of the
dtypes the ONNX graph declares. It is how ``onnx.backend.test.BackendTest`` runs here
(tests/compiler/test_onnx_backend.py).

A Core ML program has static shapes. When a model cannot compile because a shape
depends on an input's values (a Reshape's shape, reduction axes, pads, Resize scales
or sizes, TopK's K, Range's bounds fed as graph inputs, where a real model holds
constants), the rep compiles it again with those small inputs bound as constants: once
per set of their values, as it compiles once per set of shapes. Only rank-0 and rank-1
inputs of at most :data:`SHAPE_INPUT_LIMIT` elements that are integers, read after a
node's first input or read by a Range are bound, and only after the model failed to
compile without: a model that compiles as it is always runs its inputs as inputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx.backend.base import Backend, BackendRep

import coreml_compile
from coreml_compile.compiler import dtypes
from coreml_compile.compiler.ops.fallback import FallbackOpRefused
from coreml_compile.errors import CoreMLCompileError

_NUMPY = {elem: dtypes.numpy_dtype(name) for elem, name in dtypes.ONNX.items()}
# ONNX's integer element types that numpy spells natively (int8 ... uint64).
_INTEGERS = frozenset(elem for elem, dtype in _NUMPY.items() if dtype.kind in "iu")
# The most elements an input that decides shapes may have (a rank-5 tensor's pads: 10).
SHAPE_INPUT_LIMIT = 64


def shape_input_candidates(model: Any) -> list[str]:
    """Graph inputs that may decide shapes: rank 0 or 1 (their size is checked once fed),
    and integers or read after some node's first input (axes, pads, sizes, scales, K) or
    by a Range: a float read only as another node's first input is data, never bound."""
    g = model.graph
    inits = {t.name for t in g.initializer}
    later = {name for node in g.node for name in list(node.input)[1:]}
    # Every input of a Range decides its length (its start too).
    later |= {name for node in g.node if node.op_type == "Range" for name in node.input}
    names = []
    for vi in g.input:
        t = vi.type.tensor_type
        if vi.name in inits or not vi.type.HasField("tensor_type") or len(t.shape.dim) > 1:
            continue
        integer = t.elem_type in _INTEGERS
        if integer or vi.name in later:
            names.append(vi.name)
    return names


def bind_inputs(model: Any, values: dict[str, np.ndarray]) -> Any:
    """A copy of ``model`` whose inputs ``values`` are initializers of those values."""
    import onnx
    from onnx import numpy_helper

    bound = onnx.ModelProto()
    bound.CopyFrom(model)
    kept = [vi for vi in bound.graph.input if vi.name not in values]
    del bound.graph.input[:]
    bound.graph.input.extend(kept)
    for name, array in values.items():
        bound.graph.initializer.append(numpy_helper.from_array(np.asarray(array), name))
    return bound


class CoreMLBackendRep(BackendRep):
    def __init__(self, model: Any, precision: str = "fp32", **compile_options: Any):
        self.model = model
        self.precision = precision
        self.options = compile_options
        self._compiled: dict[tuple, Any] = {}
        # The ONNX names of each package's inputs, in its order: a package names them
        # identifier-safe (ONNX's "0" is "_0") and leaves out the inputs bound as constants.
        self._sources: dict[int, list[str]] = {}
        inits = {t.name for t in model.graph.initializer}
        self.input_names = [i.name for i in model.graph.input if i.name not in inits]
        self.output_dtypes = [_NUMPY.get(o.type.tensor_type.elem_type) for o in model.graph.output]

    def _compile(self, given: dict[str, np.ndarray]) -> Any:
        """The package for these inputs' shapes, or for their shapes and the values of
        the inputs that decide shapes when the shapes alone do not compile."""
        shapes = tuple(tuple(a.shape) for a in given.values())
        compiled = self._compiled.get(shapes)
        if compiled is not None:
            return compiled
        try:
            compiled = coreml_compile.compile(
                self.model, [list(s) for s in shapes], precision=self.precision, **self.options
            )
        except (CoreMLCompileError, FallbackOpRefused):
            bound = {
                n: given[n]
                for n in shape_input_candidates(self.model)
                if given[n].size <= SHAPE_INPUT_LIMIT
            }
            if not bound:
                raise
            key = (shapes, tuple((n, a.dtype.str, a.tobytes()) for n, a in bound.items()))
            compiled = self._compiled.get(key)
            if compiled is None:
                rest = [list(a.shape) for n, a in given.items() if n not in bound]
                compiled = coreml_compile.compile(
                    bind_inputs(self.model, bound), rest, precision=self.precision,
                    **self.options,
                )  # fmt: skip
                self._compiled[key] = compiled
                self._sources[id(compiled)] = [n for n in given if n not in bound]
            return compiled
        self._compiled[shapes] = compiled
        self._sources[id(compiled)] = list(given)
        return compiled

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        if isinstance(inputs, dict):
            arrays = [np.asarray(inputs[n]) for n in self.input_names]
        elif isinstance(inputs, list | tuple):
            arrays = [np.asarray(x) for x in inputs]
        else:
            arrays = [np.asarray(inputs)]
        given = dict(zip(self.input_names, arrays, strict=True))
        compiled = self._compile(given)
        # Core ML has no rank-0 tensors: a scalar input is a one-element one there.
        specs = compiled.input_specs()
        # The IR holds float64 in float32 and unsigned and small integers in int32/int64
        # (dtypes.ONNX_HELD): the arrays are converted to match.
        held = {v.name: dtypes.NUMPY[v.type.dtype] for v in compiled.graph.inputs}
        feeds = {}
        sources = self._sources[id(compiled)]
        for name, source in zip(compiled.input_names, sources, strict=True):
            a = given[source]
            a = a.astype(held[name]) if name in held and a.dtype != held[name] else a
            feeds[name] = a.reshape(1) if a.ndim == 0 and specs[name][0] == [1] else a
        outs = compiled.predict(feeds)
        results = []
        # The IR's output shapes (Core ML gives a rank-0 output as a one-element one).
        shapes = [tuple(v.type.shape) for v in compiled.graph.outputs]
        for name, dtype, shape in zip(
            compiled.output_names, self.output_dtypes, shapes, strict=True
        ):
            out = np.asarray(outs[name])
            if out.shape != shape and out.size == int(np.prod(shape)):
                out = out.reshape(shape)
            results.append(out.astype(dtype) if dtype is not None else out)
        return tuple(results)


class CoreMLBackend(Backend):
    """Runs ONNX models by compiling them to Core ML packages (fp32 by default)."""

    @classmethod
    def prepare(cls, model: Any, device: str = "CPU", **kwargs: Any) -> CoreMLBackendRep:
        super().prepare(model, device, **kwargs)  # the onnx checker
        return CoreMLBackendRep(model, **kwargs)

    @classmethod
    def run_model(
        cls, model: Any, inputs: Any, device: str = "CPU", **kwargs: Any
    ) -> tuple[np.ndarray, ...]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device == "CPU"


prepare = CoreMLBackend.prepare
run_model = CoreMLBackend.run_model
supports_device = CoreMLBackend.supports_device
