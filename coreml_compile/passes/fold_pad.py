"""Fold zero padding into the convolution that reads it.

    %p = pad(%x) pad=[1,1,2,2] mode=constant value=0
    %y = conv(%p, %w) padding=[0,0]        ⇒   %y = conv(%x, %w) padding=[2,1]

Only symmetric padding of the spatial dims is folded (the IR's conv padding is
symmetric), and the pad must have no other reader.
"""

from __future__ import annotations

from coreml_compile.compiler.ir import Graph
from coreml_compile.compiler.ops._helpers import as_tuple
from coreml_compile.passes import register_pass
from coreml_compile.passes._rewrite import forward, only_user


@register_pass("fold_pad")
def fold_pad(graph: Graph) -> bool:
    changed = False
    for conv in [n for n in graph.nodes if n.op == "conv"]:
        padded = conv.inputs[0]
        pad = padded.producer
        if pad is None or pad.op != "pad" or only_user(graph, padded) is not conv:
            continue
        if pad.attrs["mode"] != "constant" or (pad.attrs["value"] or 0.0) != 0.0:
            continue
        spatial = conv.inputs[1].type.rank - 2
        pads = list(pad.attrs["pad"])
        if len(pads) > 2 * spatial or isinstance(conv.attrs["padding"], str):
            continue
        pairs = [(pads[i], pads[i + 1]) for i in range(0, len(pads), 2)][::-1]
        pairs = [(0, 0)] * (spatial - len(pairs)) + pairs
        if any(before != after for before, after in pairs):
            continue
        old = as_tuple(conv.attrs["padding"], spatial)
        attrs = dict(conv.attrs, padding=[o + p for o, (p, _) in zip(old, pairs, strict=True)])
        fused = graph.add_node(
            "conv",
            [pad.inputs[0], *conv.inputs[1:]],
            attrs,
            [conv.output.type],
            name=conv.name,
            before=conv,
        )
        if forward(graph, conv.output, fused.output):
            changed = True
        else:
            graph.remove_node(fused)
    return changed
