"""The execution plan of a partitioned model: its partitions in order, and what each
passes to the next.

It is what the compiler decides (``partition.py``, ``lower_plan.py``) and what the runtime
follows; ``package/items.py`` stores it in a package and reads it back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from coreml_compile.compiler.ir import Graph, TensorType
from coreml_compile.compiler.serialize import ArrayWriter, graph_to_json

# 2: the plan declares every boundary tensor's type and the size of arrays.bin.
PLAN_FORMAT = 2


@dataclass
class Step:
    """One partition of the plan, in execution order."""

    name: str  # "partition_<i>": the Core ML function, or the fallback graph's name
    kind: str  # "coreml" or "fallback"
    inputs: list[str]
    outputs: list[str]
    ops: dict[str, int]
    # Fallback: node -> why it is not on Core ML.
    reasons: dict[str, str] = field(default_factory=dict)
    # Core ML, between fallbacks: why the strategy kept it there.
    decision: str = ""
    # Core ML: where its program is: "root" (the root model's function ``name``, or
    # "main" in a single-function root) or "nested" (package item ``<name>.mlpackage``).
    location: str = "root"
    graph: Graph | None = None  # fallback partitions

    @property
    def node_count(self) -> int:
        return sum(self.ops.values())


@dataclass
class HybridPlan:
    steps: list[Step]
    inputs: dict[str, TensorType]
    outputs: dict[str, TensorType]
    multifunction: bool
    # Compile-time strategy settings, so a loaded package runs as compiled by default.
    strategy: dict[str, Any] = field(default_factory=dict)
    # The type of every tensor a step reads or writes (the model's inputs and outputs
    # included): what each producer must make and each reader may expect.
    tensors: dict[str, TensorType] = field(default_factory=dict)

    @property
    def coreml_share(self) -> float:
        total = sum(s.node_count for s in self.steps)
        on = sum(s.node_count for s in self.steps if s.kind == "coreml")
        return on / total if total else 0.0

    @property
    def steps_on_coreml(self) -> bool:
        return any(s.kind == "coreml" for s in self.steps)

    def summary(self) -> list[str]:
        """One line per partition: kind, size, main ops, and why it is where it is."""
        lines = []
        for s in self.steps:
            top = sorted(s.ops.items(), key=lambda kv: (-kv[1], kv[0]))
            ops = ", ".join(f"{op} x{n}" for op, n in top[:4]) + (", ..." if len(top) > 4 else "")
            line = f"{s.name}: {s.kind:8s} {s.node_count:4d} node(s)  [{ops}]"
            if s.kind == "coreml" and s.decision:
                line += f"  kept on Core ML: {s.decision}"
            lines.append(line)
        return lines

    def function_name(self, step: Step) -> str:
        """The Core ML function a Core ML step runs in its model."""
        return step.name if self.multifunction else "main"

    def fallback_reasons(self) -> dict[str, str]:
        return {n: r for s in self.steps if s.kind == "fallback" for n, r in s.reasons.items()}

    # -- storage ----------------------------------------------------------------------

    def to_json(self, arrays: ArrayWriter) -> dict[str, Any]:
        def tensor(name: str, t: TensorType) -> dict[str, Any]:
            return {"name": name, "dtype": t.dtype, "shape": list(t.shape)}

        steps = []
        for s in self.steps:
            item: dict[str, Any] = {
                "name": s.name,
                "kind": s.kind,
                "inputs": s.inputs,
                "outputs": s.outputs,
                "ops": s.ops,
                "reasons": s.reasons,
                "decision": s.decision,
            }
            if s.kind == "coreml":
                item["location"] = s.location
            else:
                item["graph"] = graph_to_json(s.graph, arrays)
            steps.append(item)
        return {
            "format": PLAN_FORMAT,
            "multifunction": self.multifunction,
            "inputs": [tensor(n, t) for n, t in self.inputs.items()],
            "outputs": [tensor(n, t) for n, t in self.outputs.items()],
            "tensors": [tensor(n, t) for n, t in self.tensors.items()],
            "strategy": self.strategy,
            "steps": steps,
            "arrays_bytes": arrays.size,
        }
