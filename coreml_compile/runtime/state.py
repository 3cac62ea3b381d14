"""The values a stateful model keeps between predictions (Core ML states, iOS18+).

A stateful ML Program takes some inputs as states (``state_tensor_placeholder``): the
program reads one with ``read_state`` and writes it with ``coreml_update_state``, and the
model description lists them under ``description.state``, apart from the inputs. As with
coremltools' ``MLModel``, a caller makes a state with ``model.make_state()`` and passes
it to every ``predict(inputs, state=state)`` that should see the same values; each
``make_state()`` starts a new, independent set of values.

:class:`State` is what both executors' states have in common (names, shapes, dtypes,
reading and writing values); :class:`TorchState` is the reference executor's, one torch
tensor per state. :func:`check_state` is the one place that says why a state does not
fit a model, so the error reads the same on every backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from coreml_compile.errors import InputSpecError

# The model description's array dtypes, as MIL names them (how the rest of the runtime
# speaks of dtypes).
_MIL_OF_ARRAY_TYPE = {
    "FLOAT16": "fp16",
    "FLOAT32": "fp32",
    "DOUBLE": "fp64",
    "INT32": "int32",
    "INT8": "int8",
}


@dataclass(frozen=True)
class StateSpec:
    """One state's declared shape and MIL dtype ("fp16", "fp32", "int32", ...)."""

    shape: tuple[int, ...]
    dtype: str

    def __str__(self) -> str:
        return f"{list(self.shape)} {self.dtype}"


def description_states(description: Any) -> dict[str, StateSpec]:
    """{state name: StateSpec} of a model (or function) description's ``state`` list."""
    specs = {}
    for feature in description.state:
        array = feature.type.stateType.arrayType
        name = type(array).ArrayDataType.Name(array.dataType)
        specs[feature.name] = StateSpec(
            tuple(int(d) for d in array.shape), _MIL_OF_ARRAY_TYPE.get(name, name.lower())
        )
    return specs


def function_states(function: Any) -> dict[str, StateSpec]:
    """{state name: StateSpec} of a MIL function's state inputs."""
    from coremltools.converters.mil.mil import types

    specs = {}
    for name, var in function.inputs.items():
        if types.is_state(var.sym_type):
            wrapped = var.sym_type.wrapped_type()
            specs[name] = StateSpec(
                tuple(int(d) for d in wrapped.get_shape()),
                types.builtin_to_string(wrapped.get_primitive()),
            )
    return specs


# make_state() on a model without states. (Core ML's newState gives an empty state
# there; we refuse it, as predict() refuses a state for such a model.)
NO_STATE_TO_MAKE = "this model keeps no state: make_state() is for models with states"


def _describe(specs: Mapping[str, StateSpec]) -> str:
    return ", ".join(f"{name} {spec}" for name, spec in specs.items()) or "nothing"


class State:
    """The values of a stateful model's states, kept between ``predict`` calls.

    Made by ``make_state()``; ``read_state(name)`` and ``write_state(name, value)`` read
    and set one state's values as numpy arrays (coremltools' ``MLState`` has the same
    two methods). A new state holds zeros, as Core ML's ``MLModel.newState`` does.
    """

    backend = "any"  # which executor's states these are (subclasses say)

    def __init__(self, specs: Mapping[str, StateSpec]):
        self.specs = dict(specs)

    @property
    def names(self) -> list[str]:
        return list(self.specs)

    def read_state(self, name: str) -> np.ndarray:
        """A copy of state ``name``'s values, in its declared shape and dtype."""
        raise NotImplementedError

    def write_state(self, name: str, value: Any) -> None:
        """Set state ``name`` to ``value`` (an array of its shape; cast to its dtype)."""
        raise NotImplementedError

    def read(self, name: str) -> np.ndarray:
        """Short for ``read_state(name)``."""
        return self.read_state(name)

    def _spec(self, name: str) -> StateSpec:
        spec = self.specs.get(name)
        if spec is None:
            raise InputSpecError(f"no state {name} (this state holds {_describe(self.specs)})")
        return spec

    def _checked_value(self, name: str, value: Any) -> np.ndarray:
        spec = self._spec(name)
        array = np.asarray(value)
        if tuple(array.shape) != spec.shape:
            raise InputSpecError(
                f"state {name}: expected shape {list(spec.shape)}, got {list(array.shape)}"
            )
        if array.dtype.kind not in "biuf":
            raise InputSpecError(f"state {name}: {array.dtype} data, not numbers")
        return array

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_describe(self.specs)})"


# MIL dtype -> the torch dtype a state is kept in. Values cross into the program at the
# executor's working dtypes (fp32 for floats, int64 for integers), like any other value.
_TORCH_OF_STATE = {
    "fp16": torch.float16,
    "fp32": torch.float32,
    "int32": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "uint16": torch.int32,  # torch has no uint16 arithmetic; int32 holds every value
    "bool": torch.bool,
}


def _working_dtype(tensor: torch.Tensor) -> torch.dtype:
    if tensor.is_floating_point():
        return torch.float32
    return torch.bool if tensor.dtype == torch.bool else torch.int64


class TorchState(State):
    """The reference executor's states: one torch tensor per state, in its declared
    shape and dtype, so an fp16 state holds fp16-rounded values as Core ML's would."""

    backend = "reference"

    def __init__(self, specs: Mapping[str, StateSpec], device: str | torch.device = "cpu"):
        super().__init__(specs)
        unknown = [
            f"{n} ({s.dtype})" for n, s in self.specs.items() if s.dtype not in _TORCH_OF_STATE
        ]
        if unknown:
            raise InputSpecError(f"states of unsupported dtype: {', '.join(unknown)}")
        # Zeros: Apple documents MLModel.newState()/makeState() as allocating the state
        # buffers "initialized to zeros"; coremltools' make_state() only implies it.
        self.tensors = {
            name: torch.zeros(spec.shape, dtype=_TORCH_OF_STATE[spec.dtype], device=device)
            for name, spec in self.specs.items()
        }

    def read_state(self, name: str) -> np.ndarray:
        self._spec(name)
        return self.tensors[name].cpu().numpy().copy()

    def write_state(self, name: str, value: Any) -> None:
        array = self._checked_value(name, value)
        self.tensors[name].copy_(torch.from_numpy(np.ascontiguousarray(array)))

    def slots(self, device: torch.device) -> dict[str, StateSlot]:
        """One slot per state for one run of the program (see :class:`StateSlot`)."""
        return {name: StateSlot(tensor, device) for name, tensor in self.tensors.items()}


class StateSlot:
    """What a state input of the program is bound to while one prediction runs.

    ``read()`` gives the state's current values and ``write(value)`` sets them, as the
    kernels of ``read_state`` and ``coreml_update_state`` need. Writes are held until
    ``commit()``, which the executor calls once the whole program has run: a prediction
    that fails part-way leaves the state as it was, so the caller may retry it.
    """

    __slots__ = ("stored", "device", "pending")

    def __init__(self, stored: torch.Tensor, device: torch.device):
        self.stored = stored
        self.device = device
        self.pending: torch.Tensor | None = None

    def read(self) -> torch.Tensor:
        """The state's values at the executor's working dtype: a copy, since read_state
        returns a new value that a later write to the state must not change."""
        if self.pending is not None:
            return self.pending.clone()
        source = self.stored
        return source.to(device=self.device, dtype=_working_dtype(source), copy=True)

    def write(self, value: torch.Tensor) -> None:
        if tuple(value.shape) != tuple(self.stored.shape):
            # The program's fault, not the caller's: the executor reports it as the op's.
            raise ValueError(
                f"a state of shape {list(self.stored.shape)} was written a value of shape "
                f"{list(value.shape)}"
            )
        # Rounded to the state's dtype now, so a read later in the same run sees what
        # the state will hold (fp16 rounding included).
        kept = value.to(self.stored.dtype)
        self.pending = kept.to(_working_dtype(kept))

    def commit(self) -> None:
        if self.pending is not None:
            self.stored.copy_(self.pending)
            self.pending = None


def check_state(specs: Mapping[str, StateSpec], state: Any, kind: type[State] = State) -> None:
    """Raise InputSpecError (one line) unless ``state`` fits a model keeping ``specs``:
    a stateful model needs one made by a model with the same states, a model without
    states takes none. ``kind`` is the State class the executor can run with."""
    if state is None:
        if specs:
            raise InputSpecError(
                f"this model keeps state ({', '.join(specs)}): pass state=model.make_state()"
            )
        return
    if not specs:
        raise InputSpecError("this model keeps no state: call it without state=")
    if not isinstance(state, State):
        raise InputSpecError(
            f"state= takes what model.make_state() returns, not {type(state).__name__}"
        )
    if state.specs != dict(specs):
        raise InputSpecError(
            f"this state belongs to another model: it holds {_describe(state.specs)}; "
            f"this model keeps {_describe(specs)} (make one with its make_state())"
        )
    if not isinstance(state, kind):
        raise InputSpecError(
            f"this state was made for the {state.backend} backend; this model runs on "
            f"{kind.backend}: make one with its make_state()"
        )
