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
from coreml_compile.passes._engine import Const, Match, New, Pattern, Rule, rewrite
from coreml_compile.passes._rewrite import new_constant


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


def _to_linear(graph: Graph, m: Match) -> New | None:
    data = m["w"].data
    if data.ndim != 2 or m["x"].type.rank < 1:
        return None
    weight = new_constant(graph, f"{m.root.name}_weight_t", np.ascontiguousarray(data.T))
    return New("linear", [m["x"], weight, None])


def _absorb(graph: Graph, m: Match) -> New | None:
    layer, weight, bias = m.node("y"), m["w"], m["b"]
    vector = _channel_vector(m["c"].data, m["y"], layer)
    if vector is None:
        return None
    old = bias.data.astype(np.float64) if bias is not None else 0.0
    b_value = new_constant(graph, f"{layer.name}_bias", (old + vector).astype(weight.data.dtype))
    return New(layer.op, [m["x"], weight, b_value], layer.attrs, name=layer.name)


RULES = [
    Rule(Pattern("matmul", "x", Const("w")), _to_linear),
    Rule(
        Pattern(
            "add",
            Pattern(("linear", "conv"), "x", Const("w"), Const("b?"), bind="y", single_use=True),
            Const("c"),
            commute=True,
            check=lambda add: add.attrs["alpha"] == 1,
        ),
        _absorb,
        check=lambda m: m.root.output.type == m["y"].type,
    ),
]


@register_pass("fuse_bias")
def fuse_bias(graph: Graph) -> bool:
    return rewrite(graph, RULES)
