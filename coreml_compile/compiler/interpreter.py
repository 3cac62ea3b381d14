"""Run an IR graph with the op records' torch reference kernels.

Tests use it to check the frontend and every pass against the source model; fallback
partitions run through it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from coreml_compile.compiler import dtypes
from coreml_compile.compiler.ir import Graph, Value
from coreml_compile.compiler.liveness import release_after
from coreml_compile.compiler.ops import get_record
from coreml_compile.errors import InputSpecError


def _as_tensor(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    return torch.from_numpy(np.ascontiguousarray(x))


def run_graph(
    graph: Graph,
    inputs: Sequence[Any] | Mapping[str, Any],
    device: str | torch.device = "cpu",
    constants: Mapping[str, torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """Execute ``graph``; inputs by position or by name, outputs in graph order.

    Inputs are brought to each graph input's dtype. ``constants`` (by name) are tensors
    already on ``device``, for callers that run a graph many times. Intermediate tensors
    are dropped as soon as their last reader has run, so peak memory follows the graph's
    live set, not its size.
    """
    if isinstance(inputs, Mapping):
        missing = [v.name for v in graph.inputs if v.name not in inputs]
        if missing:
            raise InputSpecError(f"missing input(s) {', '.join(missing)}")
        ordered = [inputs[v.name] for v in graph.inputs]
    else:
        ordered = list(inputs)
        if len(ordered) != len(graph.inputs):
            raise InputSpecError(f"expected {len(graph.inputs)} input(s), got {len(ordered)}")

    env: dict[int, torch.Tensor] = {}
    for v, x in zip(graph.inputs, ordered, strict=True):
        # A no-op (the same tensor) when device and dtype already match.
        env[id(v)] = _as_tensor(x).to(device, dtypes.to_torch(v.type.dtype))
    for v in graph.constants.values():
        if constants is not None and v.name in constants:
            env[id(v)] = constants[v.name]
        else:
            env[id(v)] = torch.from_numpy(v.data).to(device) if v.users else None

    nodes = list(graph.nodes)
    release = release_after(
        [[id(v) for v in node.present_inputs()] for node in nodes],
        keep=[id(v) for v in graph.outputs],
    )

    def read(v: Value | None) -> torch.Tensor | None:
        return None if v is None else env[id(v)]

    with torch.no_grad():
        for node, dropped in zip(nodes, release, strict=True):
            record = get_record(node.op)
            results = record.run([read(v) for v in node.inputs], node.attrs)
            for out, res in zip(node.outputs, results, strict=False):
                env[id(out)] = res
            for key in dropped:
                env.pop(key, None)
    return [env[id(v)] for v in graph.outputs]
