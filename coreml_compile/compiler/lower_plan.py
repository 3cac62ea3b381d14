"""Lowering a partitioned graph: Core ML partitions to ML Programs, the rest kept as IR.

The result is what ``CompiledModel`` saves as one package (layout: ``package/items.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from coreml_compile.compiler import targets
from coreml_compile.compiler.ir import Graph, TensorType
from coreml_compile.compiler.lower import (
    build_function,
    build_multifunction_program,
    build_program,
    single_function_program,
    to_mlmodel,
)
from coreml_compile.compiler.ops import MAX_RANK, op_label
from coreml_compile.compiler.partition import COREML, Plan
from coreml_compile.compiler.plan import HybridPlan, Step
from coreml_compile.errors import CoreMLCompileError

# Core ML runs multifunction models from this generation (iOS18/macOS15) on.
MULTIFUNCTION_GENERATION = 18


@dataclass
class LoweredPlan:
    plan: HybridPlan
    root_program: Any  # MIL Program of the root model
    root_model: Any  # coremltools MLModel
    nested_programs: dict[str, Any]  # step name -> MIL Program (targets before iOS18)
    nested_models: dict[str, Any]  # step name -> coremltools MLModel


def _passthrough(graph: Graph) -> Graph:
    """A root model for a plan with no Core ML partition: inputs copied to outputs."""
    wide = [v.name for v in graph.inputs if v.type.dtype == "float64"]
    if wide:
        raise CoreMLCompileError(
            f"no part of this model can run on Core ML: its input(s) {', '.join(wide)} are "
            "float64, which Core ML has no tensors for; convert the model and its example "
            "inputs to float32 (.float()) and compile again"
        )
    root = Graph("passthrough")
    for v in graph.inputs:
        t = v.type
        if t.rank > MAX_RANK and t.is_static:
            # Core ML has no tensors above rank 5; this model only stands in for the
            # package (no step runs it), so it takes such an input flattened.
            t = TensorType(t.dtype, (t.numel(),))
        x = root.add_input(v.name, t)
        root.outputs.append(root.add_node("identity", [x], name=f"{v.name}_passthrough").output)
    return root


def partitioned_description(plan: HybridPlan) -> str:
    """The short description of a partitioned package's models: what it needs to run."""
    total = sum(s.node_count for s in plan.steps)
    on_torch = sum(s.node_count for s in plan.steps if s.kind != COREML)
    return (
        f"Partitioned by coreml-compile: {on_torch} of {total} ops "
        f"{'runs' if on_torch == 1 else 'run'} on torch outside "
        f"Core ML, in {len(plan.steps)} partitions; this model holds only a part of it. "
        "Run the package with coreml_compile.load() (needs torch); compile with "
        "--no-fallback for a plain Core ML model."
    )


def lower_plan(
    graph: Graph,
    partitions: Plan,
    precision: str,
    target: str,
    metadata: dict[str, str],
    strategy: dict[str, Any],
    warnings: list[str] | None = None,
) -> LoweredPlan:
    generation = targets.generation(target)
    multifunction = generation >= MULTIFUNCTION_GENERATION
    steps: list[Step] = []
    functions: dict[str, Any] = {}
    for p in partitions.partitions:
        ins = [v.name for v in p.inputs]
        outs = [v.name for v in p.outputs]
        sub = graph.extract(p.nodes, p.inputs, p.outputs, p.name)
        ops: dict[str, int] = {}
        for node in p.nodes:
            ops[op_label(node)] = ops.get(op_label(node), 0) + 1
        step = Step(p.name, p.kind, ins, outs, ops, p.reasons, p.decision)
        if p.kind == COREML:
            functions[p.name] = build_function(sub, precision, target, warnings)
            first = len(functions) == 1
            step.location = "root" if multifunction or first else "nested"
        else:
            step.graph = sub
        steps.append(step)
    boundary = [*graph.inputs, *(v for p in partitions.partitions for v in p.outputs)]
    plan = HybridPlan(
        steps,
        {v.name: v.type for v in graph.inputs},
        {v.name: v.type for v in graph.outputs},
        multifunction and bool(functions),
        strategy,
        {v.name: v.type for v in boundary},
    )
    nested_programs: dict[str, Any] = {}
    if not functions:
        root_program = build_program(_passthrough(graph), precision, target)
    elif multifunction:
        root_program = build_multifunction_program(functions, default=next(iter(functions)))
    else:
        first, *rest = functions
        root_program = single_function_program(functions[first])
        nested_programs = {name: single_function_program(functions[name]) for name in rest}
    meta = {**metadata, "coreml_compile.partitions": str(len(steps))}
    root_model = to_mlmodel(root_program, target, meta)
    nested_models = {n: to_mlmodel(p, target, meta) for n, p in nested_programs.items()}
    # What Xcode and coremltools show first: this is not a whole Core ML model.
    for model in (root_model, *nested_models.values()):
        model.short_description = partitioned_description(plan)
    return LoweredPlan(plan, root_program, root_model, nested_programs, nested_models)
