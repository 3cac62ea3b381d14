"""Absorb a constant added after a matrix product, convolution or batch norm into its bias.

    %y = linear(%x, %w)         %z = add(%y, %c)       ⇒   %z = linear(%x, %w, %c)
    %y = conv(%x, %w, %b)       %z = add(%y, %c[C,1,1]) ⇒  %z = conv(%x, %w, %b + %c)
    %y = batch_norm(%x, %g, %beta, %mean, %var)
                                %z = add(%y, %c[C,1,1]) ⇒  %z = batch_norm(%x, %g, %beta + %c, ...)
    %y = matmul(%x, %w[K,N])    (a constant 2-d right operand)
                                                       ⇒   %y = linear(%x, %w.T)

The same for conv_transpose. The constant must broadcast along the output channel only
(the last dim for linear, dim 1 for the others) or be a scalar, and the producer must
have no other reader.
"""

from __future__ import annotations

import numpy as np

from coreml_compile.compiler.ir import Graph
from coreml_compile.passes import register_pass
from coreml_compile.passes._channel_layers import batch_norm, layer, same_type
from coreml_compile.passes._engine import Const, Match, New, Pattern, Rule, rewrite
from coreml_compile.passes._rewrite import channel_vector, new_constant


def _to_linear(graph: Graph, m: Match) -> New | None:
    data = m["w"].data
    if data.ndim != 2 or m["x"].type.rank < 1:
        return None
    weight = new_constant(graph, f"{m.root.name}_weight_t", np.ascontiguousarray(data.T))
    return New("linear", [m["x"], weight, None])


def _absorb(graph: Graph, m: Match) -> New | None:
    layer, weight, bias = m.node("y"), m["w"], m["b"]
    vector = channel_vector(m["c"].data, layer)
    if vector is None:
        return None
    old = bias.data.astype(np.float64) if bias is not None else 0.0
    b_value = new_constant(graph, f"{layer.name}_bias", (old + vector).astype(weight.data.dtype))
    return New(layer.op, [m["x"], weight, b_value], layer.attrs, name=layer.name)


def _absorb_into_batch_norm(graph: Graph, m: Match) -> New | None:
    bn, beta, mean = m.node("y"), m["beta"], m["mean"]
    vector = channel_vector(m["c"].data, bn)
    if vector is None:
        return None
    old = beta.data.astype(np.float64).reshape(-1) if beta is not None else 0.0
    b_value = new_constant(graph, f"{bn.name}_beta", (old + vector).astype(mean.data.dtype))
    inputs = [m["x"], m["gamma"], b_value, mean, m["var"]]
    return New("batch_norm", inputs, bn.attrs, name=bn.name)


def _add_of(producer: Pattern) -> Pattern:
    return Pattern(
        "add", producer, Const("c"), commute=True, check=lambda add: add.attrs["alpha"] == 1
    )


RULES = [
    Rule(Pattern("matmul", "x", Const("w")), _to_linear),
    Rule(_add_of(layer()), _absorb, check=same_type),
    Rule(_add_of(batch_norm()), _absorb_into_batch_norm, check=same_type),
]


@register_pass("fuse_bias")
def fuse_bias(graph: Graph) -> bool:
    return rewrite(graph, RULES)
