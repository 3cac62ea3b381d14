"""Fold constant padding into the convolution or pooling that reads it.

    %p = pad(%x) pad=[1,1,2,2] mode=constant value=0
    %y = conv(%p, %w) padding=[0,0]        ⇒   %y = conv(%x, %w) padding=[2,1]

Zero padding folds into conv and into avg_pool2d that counts padding in its average;
-inf padding folds into max_pool2d. Only symmetric padding of the spatial dims is folded
(the IR's padding attributes are symmetric), and the pad must have no other reader.
"""

from __future__ import annotations

from coreml_compile.compiler.ir import Graph
from coreml_compile.compiler.ops._helpers import as_tuple
from coreml_compile.passes import register_pass
from coreml_compile.passes._rewrite import only_user, replace_with_node


def _folds(node, value: float) -> bool:
    """Whether padding with ``value`` means the same as ``node``'s own padding."""
    if node.op == "conv":
        return value == 0.0 and not isinstance(node.attrs["padding"], str)
    if node.op == "avg_pool2d":
        return value == 0.0 and node.attrs["count_include_pad"] and not node.attrs["ceil_mode"]
    if node.op == "max_pool2d":
        return value == float("-inf") and not node.attrs["ceil_mode"]
    return False


@register_pass("fold_pad")
def fold_pad(graph: Graph) -> bool:
    changed = False
    for conv in [n for n in graph.nodes if n.op in ("conv", "avg_pool2d", "max_pool2d")]:
        padded = conv.inputs[0]
        pad = padded.producer
        if pad is None or pad.op != "pad" or only_user(graph, padded) is not conv:
            continue
        if pad.attrs["mode"] != "constant" or not _folds(conv, pad.attrs["value"] or 0.0):
            continue
        spatial = 2 if conv.op != "conv" else conv.inputs[1].type.rank - 2
        pads = list(pad.attrs["pad"])
        # A negative pad crops: convolution padding cannot express it.
        if len(pads) > 2 * spatial or any(p < 0 for p in pads):
            continue
        pairs = [(pads[i], pads[i + 1]) for i in range(0, len(pads), 2)][::-1]
        pairs = [(0, 0)] * (spatial - len(pairs)) + pairs
        if any(before != after for before, after in pairs):
            continue
        old = as_tuple(conv.attrs["padding"], spatial)
        attrs = dict(conv.attrs, padding=[o + p for o, (p, _) in zip(old, pairs, strict=True)])
        if conv.op != "conv" and any(
            2 * p > k
            for p, k in zip(attrs["padding"], as_tuple(attrs["kernel_size"], 2), strict=True)
        ):
            continue  # torch and Core ML pools take at most half the window as padding
        inputs = [pad.inputs[0], *conv.inputs[1:]]
        changed |= replace_with_node(graph, conv.output, conv.op, inputs, attrs)
    return changed
