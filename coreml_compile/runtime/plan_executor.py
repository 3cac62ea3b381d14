"""Running a partitioned model: each partition on its executor, tensors handed along.

Core ML partitions run on the Core ML executor (Apple systems) or the reference
executor; fallback partitions run their IR graph through the op table's torch kernels
on the device the strategy picks. Tensors stay torch tensors between partitions and
only move when the next partition runs on another device; numpy arrays coming in and
going out are viewed, not copied (CPU tensors and numpy arrays share memory).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from coreml_compile.compiler import dtypes
from coreml_compile.compiler.interpreter import run_graph
from coreml_compile.compiler.liveness import release_after
from coreml_compile.compiler.plan import HybridPlan, Step
from coreml_compile.compiler.strategy import HybridExecutionStrategy
from coreml_compile.errors import CoreMLCompileError, ExecutionError, PackageError, with_type
from coreml_compile.runtime.devices import Choice, coreml_available
from coreml_compile.runtime.input_shapes import check_input_names
from coreml_compile.runtime.placement import fallback_device
from coreml_compile.runtime.reference import input_tensor


@dataclass
class Placement:
    """Where one step runs at load time, and why."""

    step: str
    kind: str
    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.step} ({self.kind}) -> {self.where}: {self.reason}"


class _Runner:
    """One step, ready to run: ``run(list of tensors) -> list of tensors``."""

    def __init__(self, step: Step, run: Any, device: torch.device):
        self.step = step
        self.run = run
        self.device = device


class PlanExecutor:
    """``predict({name: array}) -> {name: array}`` for a :class:`HybridPlan`."""

    def __init__(
        self,
        plan: HybridPlan,
        programs: dict[str, Any],
        models: dict[str, Any],
        choice: Choice,
        strategy: HybridExecutionStrategy,
    ):
        """``programs``/``models``: step name -> MIL program / MLModel holding its function."""
        self.plan = plan
        self.runners: list[_Runner] = []
        self.placements: list[Placement] = []
        for step in plan.steps:
            if step.kind == "coreml":
                function = plan.function_name(step)
                program, model = programs[step.name], models[step.name]
                runner, placement = _core_ml_step(step, function, program, model, choice, strategy)
            else:
                runner, placement = _fallback_step(step, strategy)
            self.runners.append(runner)
            self.placements.append(placement)
        # After which step each tensor can be dropped (graph outputs are kept).
        self.release = release_after(
            [step.inputs for step in plan.steps], keep=[*plan.outputs, *plan.inputs]
        )

    def _check_inputs(self, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        check_input_names(self.plan.inputs, inputs)
        env = {}
        for name, t in self.plan.inputs.items():
            given = inputs[name]
            if isinstance(given, np.ndarray) and given.ndim == 0:
                # A rank-0 input stays rank 0 (numpy's contiguous copy would make it 1-d):
                # a fallback partition takes scalars as they are.
                given = torch.from_numpy(given.copy())
            x = input_tensor(name, given, t.shape, t.dtype, dtypes.is_float(t.dtype))
            env[name] = x.to(dtypes.to_torch(t.dtype))
        return env

    def run(self, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        env = self._check_inputs(inputs)
        for runner, release in zip(self.runners, self.release, strict=True):
            step = runner.step
            # .to() returns the tensor itself when it is already on that device.
            results = runner.run([env[name].to(runner.device) for name in step.inputs])
            for name, value in zip(step.outputs, results, strict=True):
                env[name] = self._as_declared(step, name, value)
            for name in release:
                env.pop(name, None)
        out = {}
        for name, t in self.plan.outputs.items():
            value = env[name]
            want = dtypes.to_torch(t.dtype)
            out[name] = value if value.dtype == want else value.to(want)
        return out

    def _as_declared(self, step: Step, name: str, value: Any) -> torch.Tensor:
        """A step's result in the type the plan declares; a wrong shape is refused."""
        want = self.plan.tensors[name]
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != want.shape:
            got = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise PackageError(
                f"{step.name} made {name} of shape {got} where the package declares {want}"
            )
        dtype = dtypes.to_torch(want.dtype)
        return value if value.dtype == dtype else value.to(dtype)

    def predict(self, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
        return {name: t.cpu().numpy() for name, t in self.run(inputs).items()}


def _core_ml_step(
    step: Step,
    function: str,
    program: Any,
    model: Any,
    choice: Choice,
    strategy: HybridExecutionStrategy,
) -> tuple[_Runner, Placement]:
    if choice.backend == "coreml":
        from coreml_compile.runtime.coreml_executor import CoreMLExecutor

        units = choice.compute_units or "all"
        executor = CoreMLExecutor(model, units, function_name=function)
        why = "battery mode" if strategy.battery else "Core ML is available"
        placement = Placement(step.name, step.kind, f"coreml:{units}", why)
        return _Runner(step, _coreml_runner(executor, step), torch.device("cpu")), placement
    from coreml_compile.runtime.reference import ReferenceExecutor

    executor = ReferenceExecutor(program, function, device=choice.device)
    why = "reference backend asked for" if coreml_available()[0] else "no Core ML here"
    placement = Placement(step.name, step.kind, f"reference:{choice.device}", why)
    return _Runner(step, _reference_runner(executor, step), executor.device), placement


def _fallback_step(step: Step, strategy: HybridExecutionStrategy) -> tuple[_Runner, Placement]:
    decision = fallback_device(strategy, step.graph)
    device = torch.device(decision.where)
    graph = step.graph
    # Weights go to the device once, not on every call.
    constants = {v.name: torch.from_numpy(v.data).to(device) for v in graph.constants.values()}

    def run(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        try:
            return run_graph(graph, tensors, device, constants=constants)
        except CoreMLCompileError:
            raise
        except Exception as exc:  # a kernel refused these values (an index out of range...)
            raise ExecutionError(f"{step.name} (torch) failed: {with_type(exc)}") from exc

    placement = Placement(step.name, step.kind, f"torch:{device}", decision.reason)
    return _Runner(step, run, device), placement


def _reference_runner(executor: Any, step: Step) -> Any:
    def run(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        outputs = executor.run(dict(zip(step.inputs, tensors, strict=True)))
        return [outputs[name] for name in step.outputs]

    return run


def _coreml_runner(executor: Any, step: Step) -> Any:
    def run(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        feeds = {
            # Core ML's I/O is fp32 and int32 (coreml_compile.compiler.lower).
            name: t.to("cpu", torch.float32 if t.is_floating_point() else torch.int32).numpy()
            for name, t in zip(step.inputs, tensors, strict=True)
        }
        outputs = executor.predict(feeds)
        return [torch.from_numpy(outputs[name]) for name in step.outputs]

    return run
