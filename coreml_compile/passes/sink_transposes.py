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
from coreml_compile.compiler.ops import all_records
from coreml_compile.passes import register_pass
from coreml_compile.passes._engine import Match, New, Pattern, Rule, rewrite

# One-input ops the op table marks ``elementwise`` (they give the same values on any layout).
ELEMENTWISE = frozenset(
    name for name, r in all_records().items() if r.elementwise and len(r.inputs) == 1
)
_LAYOUT = ("permute", "transpose", "squeeze", "unsqueeze")


def _sink(graph: Graph, m: Match) -> New:
    node, layout, x = m.root, m.node("moved"), m["x"]
    moved_type = TensorType(node.output.type.dtype, x.type.shape)
    inner = New(node.op, [x], node.attrs, type=moved_type, name=node.name)
    return New(layout.op, [inner], layout.attrs, name=layout.name)


# Each rewrite moves a layout change past one op; the engine repeats until nothing moves.
RULE = Rule(Pattern(ELEMENTWISE, Pattern(_LAYOUT, "x", bind="moved", single_use=True)), _sink)


@register_pass("sink_transposes")
def sink_transposes(graph: Graph) -> bool:
    return rewrite(graph, [RULE])
