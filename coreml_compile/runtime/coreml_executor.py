"""The Core ML executor: runs a package with Core ML itself (macOS only).

Written against the same tests as the reference executor; those tests are marked
``apple`` and skip on other systems. It has not been run on the Linux machines this
project is developed on.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from coreml_compile.errors import InputSpecError
from coreml_compile.runtime.input_shapes import description_shapes

_UNITS = {
    "all": "ALL",
    "cpu_and_ne": "CPU_AND_NE",
    "cpu_and_gpu": "CPU_AND_GPU",
    "cpu_only": "CPU_ONLY",
}


class CoreMLExecutor:
    """``predict({name: array}) -> {name: array}`` through coremltools.models.MLModel."""

    def __init__(self, mlmodel: Any, compute_units: str = "all", function_name: str = "main"):
        from coreml_compile.compiler.mil import import_coremltools

        ct = import_coremltools()
        unit = getattr(ct.ComputeUnit, _UNITS[compute_units])
        spec = mlmodel.get_spec()
        # Re-open with a compiled model (the compile's MLModel skipped loading it). In a
        # multifunction model (partitioned, iOS18+) each partition is one function.
        functions = {f.name: f for f in spec.description.functions}
        extra = {"function_name": function_name} if functions else {}
        self.model = ct.models.MLModel(
            spec, weights_dir=mlmodel.weights_dir, compute_units=unit, **extra
        )
        description = functions.get(function_name, spec.description)
        self.inputs = [i.name for i in description.input]
        # Array inputs' accepted shapes; other kinds (images) are left to Core ML.
        self.input_shapes = description_shapes(description)
        self.output_names = [o.name for o in description.output]

    def predict(self, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        for name in self.inputs:
            if name not in inputs:
                raise InputSpecError(
                    f"missing input {name} (the model takes {', '.join(self.inputs)})"
                )
            if name in self.input_shapes:
                self.input_shapes[name].check(name, np.shape(inputs[name]))
        outputs = self.model.predict({k: np.asarray(v) for k, v in inputs.items()})
        return {name: np.asarray(outputs[name]) for name in self.output_names}
