"""Split a large attention softmax into one softmax per head, for the Neural Engine.

    %p = softmax(%s: [B,H,S,S]) dim=-1
        ⇒   %p_h = softmax(slice(%s, dim=1, h:h+1)) for each head h
            %p = cat(%p_0, ..., %p_H-1) dim=1

Apple's ml-ane-transformers computes attention head by head so each softmax's tensor
stays small enough for the Neural Engine's on-chip memory. Only softmaxes over the last
axis of a rank-4 tensor with several heads and at least LARGE elements are split. The
speed-up is Apple's published guidance; it cannot be measured on a machine without
the Neural Engine. Part of the opt-in --ane-layout set.
"""

from __future__ import annotations

from coreml_compile.compiler.ir import Graph, TensorType
from coreml_compile.passes import register_pass
from coreml_compile.passes._rewrite import forward

LARGE = 16384


@register_pass("split_softmax")
def split_softmax(graph: Graph) -> bool:
    changed = False
    for node in [n for n in graph.nodes if n.op == "softmax"]:
        x = node.inputs[0]
        t = x.type
        if t.rank != 4 or node.attrs["dim"] % 4 != 3 or not t.is_static:
            continue
        heads = t.shape[1]
        if heads < 2 or t.numel() < LARGE:
            continue
        head_type = TensorType(t.dtype, (t.shape[0], 1, *t.shape[2:]))
        parts = []
        for h in range(heads):
            piece = graph.add_node(
                "slice", [x], {"dim": 1, "start": h, "end": h + 1, "step": 1}, [head_type],
                name=f"{node.name}_head{h}_in", before=node,
            )  # fmt: skip
            soft = graph.add_node(
                "softmax", [piece.output], {"dim": -1}, [head_type],
                name=f"{node.name}_head{h}", before=node,
            )  # fmt: skip
            parts.append(soft.output)
        joined = graph.add_node(
            "cat", parts, {"dim": 1}, [node.output.type], name=node.name, before=node
        )
        changed |= forward(graph, node.output, joined.output)
    return changed
