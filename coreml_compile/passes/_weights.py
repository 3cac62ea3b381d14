"""Which weights the compression passes compress, and swapping in the compressed form."""

from __future__ import annotations

import numpy as np

from coreml_compile.compiler import dtypes
from coreml_compile.compiler.ir import Graph, Node, Value

# The input that holds each op's weight.
_WEIGHT_INPUT = {"conv": 1, "conv_transpose": 1, "linear": 1, "embedding": 0}


def _weight_of(node: Node) -> Value | None:
    if node.op == "matmul":
        return next((v for v in node.inputs if v is not None and v.is_constant), None)
    index = _WEIGHT_INPUT.get(node.op)
    return node.inputs[index] if index is not None else None


def channel_axis(value: Value) -> int:
    """The output-channel axis of a weight: 1 for conv_transpose, else 0."""
    return 1 if any(u.op == "conv_transpose" for u in value.users) else 0


def select_weights(graph: Graph, options) -> list[Value]:
    """The constant float weights ``options`` says to compress, in graph order."""
    layers = []
    for node in graph.nodes:
        if node.op not in options.op_types:
            continue
        w = _weight_of(node)
        if w is None or not w.is_constant or not dtypes.is_float(w.type.dtype):
            continue
        layers.append((node, w))
    if options.skip_first_last and layers:
        layers = layers[1:-1]
    chosen: list[Value] = []
    for _node, w in layers:
        if w.data.size >= options.min_weight_elements and all(w is not c for c in chosen):
            chosen.append(w)
    return chosen


def pruned_weights(graph: Graph, options) -> list:
    """The sparse_to_dense nodes prune_weights left, whose kept values can be compressed
    further (where the target allows: iOS18)."""
    chosen = []
    for node in graph.nodes:
        if node.op != "sparse_to_dense" or not all(v.is_constant for v in node.inputs):
            continue
        if any(u.op in options.op_types for u in node.output.users):
            chosen.append(node)
    return chosen


def replace_pruned(
    graph: Graph, node: Node, op: str, parts: dict[str, np.ndarray], attrs: dict
) -> None:
    """Swap a pruned weight's sparse_to_dense node for a combined compressed one."""
    inputs = [graph.add_constant(f"{node.name}_{key}", array) for key, array in parts.items()]
    combined = graph.add_node(
        op, inputs, attrs, [node.output.type], name=f"{node.name}_{op}", before=node
    )
    graph.replace_all_uses(node.output, combined.output)
    old_inputs = list(node.present_inputs())
    graph.remove_node(node)
    for v in old_inputs:
        if not v.users:
            graph.constants.pop(v.name, None)


def replace_weight(
    graph: Graph, weight: Value, op: str, parts: dict[str, np.ndarray], attrs: dict
) -> None:
    """Read ``weight`` through a new ``op`` node built from compressed constant ``parts``."""
    inputs = [graph.add_constant(f"{weight.name}_{key}", array) for key, array in parts.items()]
    first_user = min(weight.users, key=graph.nodes.order_key)
    from coreml_compile.compiler.ops import get_record

    # Defaults filled in: the node's attributes are whole, as the frontends write them.
    attrs = get_record(op).bind_attrs(attrs)
    node = graph.add_node(
        op, inputs, attrs, [weight.type], name=f"{weight.name}_{op}", before=first_user
    )
    graph.replace_all_uses(weight, node.output)
    del graph.constants[weight.name]
