"""Write a channel shuffle after a concatenation as one interleaved concatenation.

    %c = cat(%a, %b) dim=1                      (each [N, M, H, W])
    %r = reshape(%c) [N, 2, M, H, W]
    %t = transpose(%r) dim0=1 dim1=2            (or permute [0, 2, 1, 3, 4])
    %y = reshape(%t) [N, 2M, H, W]      ⇒   %y = cat(%a, %b) dim=1 interleave

ShuffleNet's ``channel_shuffle`` after its two branches: channel j * g + i of the result
is channel j of input i, which is what MIL's ``concat(interleave=True)`` computes, one op
instead of four. Any number g of inputs, of any concatenation axis: the inputs must all
have one shape, the first reshape must split the axis into (g, size of one input) and
change nothing else, the transpose must swap exactly those two axes, and the second
reshape must give back the concatenation's shape. Every intermediate value must have
no other reader. A shuffle of a tensor that is not a concatenation is left alone.
"""

from __future__ import annotations

from coreml_compile.compiler.ir import Graph, Node
from coreml_compile.passes import register_pass
from coreml_compile.passes._engine import Match, New, Pattern, Rule, rewrite


def _swaps(node: Node, axis: int) -> bool:
    """Whether ``node`` (transpose or permute) swaps ``axis`` and ``axis + 1`` only."""
    rank = node.output.type.rank
    if node.op == "transpose":
        pair = {node.attrs["dim0"] % rank, node.attrs["dim1"] % rank}
        return pair == {axis, axis + 1}
    order = list(range(rank))
    order[axis], order[axis + 1] = axis + 1, axis
    return [d % rank for d in node.attrs["dims"]] == order


def _interleave(graph: Graph, m: Match) -> New | None:
    cat, split, swap = m.node("cat"), m.node("split"), m.node("swap")
    parts = list(cat.inputs)
    if len(parts) < 2 or cat.attrs.get("interleave") or any(p is None for p in parts):
        return None
    if any(p.type != parts[0].type for p in parts):
        return None
    shape = tuple(cat.output.type.shape)
    axis = cat.attrs["dim"] % len(shape)
    size = parts[0].type.shape[axis]
    grouped = shape[:axis] + (len(parts), size) + shape[axis + 1 :]
    if tuple(split.output.type.shape) != grouped or not _swaps(swap, axis):
        return None
    if m.root.output.type != cat.output.type:
        return None
    return New("cat", parts, {"dim": axis, "interleave": True})


RULE = Rule(
    Pattern(
        "reshape",
        Pattern(
            ("transpose", "permute"),
            Pattern(
                "reshape",
                Pattern("cat", bind="cat", single_use=True),
                bind="split",
                single_use=True,
            ),
            bind="swap",
            single_use=True,
        ),
    ),
    _interleave,
)


@register_pass("fuse_channel_shuffle")
def fuse_channel_shuffle(graph: Graph) -> bool:
    return rewrite(graph, [RULE])
