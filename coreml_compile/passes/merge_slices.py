"""Slices that cut one tensor into consecutive pieces along an axis become one split.

    %a = slice(%x) dim=1 start=0 end=3
    %b = slice(%x) dim=1 start=3 end=None      ⇒   %a, %b = split(%x) split_size=[3, 5] dim=1

ONNX exporters write ``x.chunk(2, dim=1)`` (ShuffleNet's and MobileViT's channel splits)
as one Slice per piece, and rotary embeddings cut heads in halves; Core ML's split is one
op for all of them. The slices must read the same tensor along the same static axis
(other axes may be dynamic) with step 1 and static bounds, and their ranges must cover
the axis exactly once between them (in any order). Other readers of the tensor are left
as they are.
"""

from __future__ import annotations

from coreml_compile.compiler.ir import Graph, Node, Value
from coreml_compile.passes import register_pass
from coreml_compile.passes._rewrite import forward


def _range(node: Node, size: int) -> tuple[int, int] | None:
    """The [start, end) a step-1 slice keeps, as Python clamps it; None if not static."""
    a = node.attrs
    if a["step"] != 1 or not all(v is None or isinstance(v, int) for v in (a["start"], a["end"])):
        return None
    start, end, _ = slice(a["start"], a["end"]).indices(size)
    return (start, end) if end > start else None


def _pieces(x: Value) -> dict[int, list[tuple[int, int, Node]]]:
    """The slices of ``x`` by axis, with their ranges."""
    by_axis: dict[int, list[tuple[int, int, Node]]] = {}
    for user in x.users:
        if user.op != "slice" or user.inputs[0] is not x:
            continue
        axis = user.attrs["dim"] % x.type.rank
        if not isinstance(x.type.shape[axis], int):
            continue  # a split's sizes are static; the other axes may be dynamic
        kept = _range(user, x.type.shape[axis])
        if kept is not None:
            by_axis.setdefault(axis, []).append((*kept, user))
    return by_axis


def _merge(graph: Graph, x: Value, axis: int, pieces: list[tuple[int, int, Node]]) -> bool:
    pieces = sorted(pieces, key=lambda p: p[0])
    ends = [0] + [end for _, end, _ in pieces]
    if len(pieces) < 2 or [s for s, _, _ in pieces] != ends[:-1] or ends[-1] != x.type.shape[axis]:
        return False
    slices = [node for _, _, node in pieces]
    first = min(slices, key=graph.nodes.order_key)
    split = graph.add_node(
        "split",
        [x],
        {"split_size": [end - start for start, end, _ in pieces], "dim": axis},
        [node.output.type for node in slices],
        name=first.name,
        before=first,
    )
    for node, out in zip(slices, split.outputs, strict=True):
        forward(graph, node.output, out)
    return True


@register_pass("merge_slices")
def merge_slices(graph: Graph) -> bool:
    changed = False
    for x in list(graph.values()):
        for axis, pieces in _pieces(x).items():
            changed |= _merge(graph, x, axis, pieces)
    return changed
