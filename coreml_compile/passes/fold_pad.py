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
from coreml_compile.passes._engine import Match, New, Pattern, Rule, rewrite


def _folds(node, value: float) -> bool:
    """Whether padding with ``value`` means the same as ``node``'s own padding."""
    if node.op == "conv":
        return value == 0.0 and not isinstance(node.attrs["padding"], str)
    if node.op == "avg_pool2d":
        return value == 0.0 and node.attrs["count_include_pad"] and not node.attrs["ceil_mode"]
    if node.op == "max_pool2d":
        return value == float("-inf") and not node.attrs["ceil_mode"]
    return False


def _fold(graph: Graph, m: Match) -> New | None:
    conv, pad = m.root, m.node("pad")
    if not _folds(conv, pad.attrs["value"] or 0.0):
        return None
    spatial = 2 if conv.op != "conv" else conv.inputs[1].type.rank - 2
    pads = list(pad.attrs["pad"])
    # A negative pad crops: convolution padding cannot express it.
    if len(pads) > 2 * spatial or any(p < 0 for p in pads):
        return None
    pairs = [(pads[i], pads[i + 1]) for i in range(0, len(pads), 2)][::-1]
    pairs = [(0, 0)] * (spatial - len(pairs)) + pairs
    if any(before != after for before, after in pairs):
        return None
    old = as_tuple(conv.attrs["padding"], spatial)
    attrs = dict(conv.attrs, padding=[o + p for o, (p, _) in zip(old, pairs, strict=True)])
    if conv.op != "conv" and any(
        2 * p > k for p, k in zip(attrs["padding"], as_tuple(attrs["kernel_size"], 2), strict=True)
    ):
        return None  # torch and Core ML pools take at most half the window as padding
    return New(conv.op, [m["x"], *conv.inputs[1:]], attrs)


RULE = Rule(
    Pattern(
        ("conv", "avg_pool2d", "max_pool2d"),
        Pattern(
            "pad", "x", bind="pad", single_use=True, check=lambda p: p.attrs["mode"] == "constant"
        ),
    ),
    _fold,
)


@register_pass("fold_pad")
def fold_pad(graph: Graph) -> bool:
    return rewrite(graph, [RULE])
