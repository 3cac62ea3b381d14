"""The Core ML executor: runs a package with Core ML itself (macOS only).

Written against the same tests as the reference executor; those tests are marked
``apple`` and skip on other systems. It has not been run on the Linux machines this
project is developed on.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from coreml_compile.errors import InputSpecError
from coreml_compile.runtime.input_shapes import check_input_names, description_shapes
from coreml_compile.runtime.state import (
    NO_STATE_TO_MAKE,
    State,
    StateSpec,
    check_state,
    description_states,
)

_UNITS = {
    "all": "ALL",
    "cpu_and_ne": "CPU_AND_NE",
    "cpu_and_gpu": "CPU_AND_GPU",
    "cpu_only": "CPU_ONLY",
}


class CoreMLState(State):
    """A Core ML state (coremltools' ``MLState``, macOS 15+) with the names, shapes and
    dtypes the model description gives, so it is checked like the reference's."""

    backend = "coreml"

    def __init__(self, specs: dict[str, StateSpec], ml_state: Any):
        super().__init__(specs)
        self.ml_state = ml_state

    def read_state(self, name: str) -> np.ndarray:
        self._spec(name)
        return np.array(self.ml_state.read_state(name))

    def write_state(self, name: str, value: Any) -> None:
        array = self._checked_value(name, value)
        dtype = np.float16 if self.specs[name].dtype == "fp16" else None
        self.ml_state.write_state(name, np.ascontiguousarray(array, dtype=dtype))


class CoreMLExecutor:
    """``predict({name: array}) -> {name: array}`` through coremltools.models.MLModel.

    A stateful model runs with ``predict(inputs, state=executor.make_state())``.
    """

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
        self.states = description_states(description)

    def make_state(self) -> CoreMLState:
        """A new Core ML state for this model (Core ML fills it with zeros)."""
        if not self.states:
            raise InputSpecError(NO_STATE_TO_MAKE)
        return CoreMLState(self.states, self.model.make_state())

    def predict(
        self, inputs: dict[str, Any], state: CoreMLState | None = None
    ) -> dict[str, np.ndarray]:
        check_state(self.states, state, CoreMLState)
        check_input_names(self.inputs, inputs)
        for name in self.inputs:
            if name in self.input_shapes:
                self.input_shapes[name].check(name, np.shape(inputs[name]))
        feeds = {k: np.asarray(v) for k, v in inputs.items()}
        if state is None:
            outputs = self.model.predict(feeds)
        else:
            outputs = self.model.predict(feeds, state=state.ml_state)
        return {name: np.asarray(outputs[name]) for name in self.output_names}
