"""Absorb a constant added after a matrix product or convolution into its bias.

    %y = linear(%x, %w)         %z = add(%y, %c)       ⇒   %z = linear(%x, %w, %c)
    %y = conv(%x, %w, %b)       %z = add(%y, %c[C,1,1]) ⇒  %z = conv(%x, %w, %b + %c)
    %y = matmul(%x, %w[K,N])    (a constant 2-d right operand)
                                                       ⇒   %y = linear(%x, %w.T)

The constant must broadcast along the output channel only (the last dim for linear,
dim 1 for conv), and the producer must have no other reader.
"""

from __future__ import annotations

import numpy as np

from coreml_compile.compiler.ir import Graph, Node, Value
from coreml_compile.passes import register_pass
from coreml_compile.passes._rewrite import const, new_constant, only_user, replace_with_node


def _channel_vector(c: np.ndarray, out: Value, layer: Node) -> np.ndarray | None:
    """``c`` as one value per output channel, if adding it broadcasts that way only."""
    rank = out.type.rank
    channels = layer.inputs[1].type.shape[0]
    axis = rank - 1 if layer.op == "linear" else 1
    if c.ndim > rank:
        return None
    shape = (1,) * (rank - c.ndim) + c.shape
    if all(s == 1 for i, s in enumerate(shape) if i != axis) and shape[axis] in (1, channels):
        return np.broadcast_to(c.reshape(-1), (channels,)).astype(np.float64)
    return None


def _matmul_to_linear(graph: Graph, node: Node) -> bool:
    x, w = node.inputs
    data = const(w)
    if data is None or data.ndim != 2 or x.type.rank < 1:
        return False
    weight = new_constant(graph, f"{node.name}_weight_t", np.ascontiguousarray(data.T))
    return replace_with_node(graph, node.output, "linear", [x, weight, None], {})


@register_pass("fuse_bias")
def fuse_bias(graph: Graph) -> bool:
    changed = False
    for node in [n for n in graph.nodes if n.op == "matmul"]:
        changed |= _matmul_to_linear(graph, node)
    for add in [n for n in graph.nodes if n.op == "add"]:
        if add not in graph.nodes or add.attrs["alpha"] != 1:
            continue
        for y, c_value in (add.inputs, add.inputs[::-1]):
            layer = y.producer
            c = const(c_value)
            if c is None or layer is None or layer.op not in ("linear", "conv"):
                continue
            if only_user(graph, y) is not add or add.output.type != y.type:
                continue
            weight, bias = layer.inputs[1], layer.inputs[2]
            if const(weight) is None or (bias is not None and const(bias) is None):
                continue
            vector = _channel_vector(c, y, layer)
            if vector is None:
                continue
            old = const(bias).astype(np.float64) if bias is not None else 0.0
            dtype = const(weight).dtype
            b_value = new_constant(graph, f"{layer.name}_bias", (old + vector).astype(dtype))
            inputs = [layer.inputs[0], weight, b_value]
            changed |= replace_with_node(
                graph, add.output, layer.op, inputs, layer.attrs, layer.name
            )
            break
    return changed
