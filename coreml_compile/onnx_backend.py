"""An ``onnx.backend.base.Backend`` on top of :func:`coreml_compile.compile`.

``prepare(model)`` checks the model and returns a rep; ``rep.run(inputs)`` compiles the
model for the shapes of the inputs it is given (once per set of shapes: symbolic
dimensions are filled in from them) and runs the package on this machine (the reference
executor off Apple systems, Core ML on them). Outputs come back as numpy arrays of the
dtypes the ONNX graph declares. It is how ``onnx.backend.test.BackendTest`` runs here
(tests/compiler/test_onnx_backend.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx.backend.base import Backend, BackendRep

import coreml_compile

_NUMPY = {1: np.float32, 2: np.uint8, 3: np.int8, 5: np.int16, 6: np.int32, 7: np.int64,
          9: np.bool_, 10: np.float16, 11: np.float64}  # fmt: skip


class CoreMLBackendRep(BackendRep):
    def __init__(self, model: Any, precision: str = "fp32", **compile_options: Any):
        self.model = model
        self.precision = precision
        self.options = compile_options
        self._compiled: dict[tuple, Any] = {}
        inits = {t.name for t in model.graph.initializer}
        self.input_names = [i.name for i in model.graph.input if i.name not in inits]
        self.output_dtypes = [_NUMPY.get(o.type.tensor_type.elem_type) for o in model.graph.output]

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        if isinstance(inputs, dict):
            arrays = [np.asarray(inputs[n]) for n in self.input_names]
        elif isinstance(inputs, list | tuple):
            arrays = [np.asarray(x) for x in inputs]
        else:
            arrays = [np.asarray(inputs)]
        shapes = tuple(tuple(a.shape) for a in arrays)
        compiled = self._compiled.get(shapes)
        if compiled is None:
            compiled = coreml_compile.compile(
                self.model, [list(s) for s in shapes], precision=self.precision, **self.options
            )
            self._compiled[shapes] = compiled
        # Core ML has no rank-0 tensors: a scalar input is a one-element one there.
        specs = compiled.input_specs()
        feeds = {
            name: a.reshape(1) if a.ndim == 0 and specs[name][0] == [1] else a
            for name, a in zip(compiled.input_names, arrays, strict=True)
        }
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
