"""Move layout changes (permute, squeeze, unsqueeze) below element-wise ops.

    %t = permute(%x) dims=p        %y = relu(%t)
        ⇒   %r = relu(%x)          %y = permute(%r) dims=p

An element-wise op gives the same values whatever the layout, so the layout change can
come after it. Sinking brings the layout change that ends one block next to the one
that starts the next, where cancel_transposes removes both. Only one-input element-wise
ops, and layout changes with no other reader, are moved.
"""

from __future__ import annotations

from coreml_compile.compiler.ir import Graph, TensorType
from coreml_compile.passes import register_pass
from coreml_compile.passes._rewrite import forward, only_user

ELEMENTWISE = frozenset(
    {
        "relu", "sigmoid", "tanh", "silu", "gelu", "hardswish", "hardsigmoid", "hardtanh",
        "leaky_relu", "elu", "sqrt", "rsqrt", "exp", "log", "neg", "abs", "erf", "clamp",
        "dropout", "identity",
    }
)  # fmt: skip
_LAYOUT = ("permute", "transpose", "squeeze", "unsqueeze")


@register_pass("sink_transposes")
def sink_transposes(graph: Graph) -> bool:
    # Each round moves a layout change past one op; repeat until nothing moves.
    changed = False
    while _sink_once(graph):
        changed = True
    return changed


def _sink_once(graph: Graph) -> bool:
    changed = False
    for node in list(graph.nodes):
        if node not in graph.nodes or node.op not in ELEMENTWISE:
            continue
        moved = node.inputs[0]
        layout = moved.producer
        if layout is None or layout.op not in _LAYOUT or only_user(graph, moved) is not node:
            continue
        x = layout.inputs[0]
        inner = graph.add_node(
            node.op,
            [x],
            node.attrs,
            [TensorType(node.output.type.dtype, x.type.shape)],
            name=node.name,
            before=node,
        )
        outer = graph.add_node(
            layout.op,
            [inner.output],
            layout.attrs,
            [node.output.type],
            name=layout.name,
            before=node,
        )
        if forward(graph, node.output, outer.output):
            changed = True
        else:
            graph.remove_node(outer)
            graph.remove_node(inner)
    return changed
