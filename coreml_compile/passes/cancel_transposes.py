"""Compose chains of permutes and of reshapes; drop the ones that cancel.

    %a = permute(%x) dims=[0,2,3,1]
    %b = permute(%a) dims=[0,3,1,2]        ⇒   (readers of %b read %x)

    %a = reshape(%x) shape=[1,-1]
    %b = flatten(%a)                       ⇒   %b = reshape(%x) shape=<shape of b>

``transpose`` is a permute of two dims. The inner op must have no other reader, so no
work is duplicated.
"""

from __future__ import annotations

from coreml_compile.compiler.ir import Graph, Node
from coreml_compile.passes import register_pass
from coreml_compile.passes._rewrite import forward, only_user, replace_with_node

_RESHAPES = ("reshape", "flatten", "squeeze", "unsqueeze")


def _perm(node: Node) -> list[int] | None:
    rank = node.inputs[0].type.rank
    if node.op == "permute":
        return [d % rank for d in node.attrs["dims"]]
    if node.op == "transpose":
        perm = list(range(rank))
        a, b = node.attrs["dim0"] % rank, node.attrs["dim1"] % rank
        perm[a], perm[b] = perm[b], perm[a]
        return perm
    return None


@register_pass("cancel_transposes")
def cancel_transposes(graph: Graph) -> bool:
    changed = False
    for node in list(graph.nodes):
        if node not in graph.nodes:
            continue
        inner = node.inputs[0].producer if node.inputs and node.inputs[0] is not None else None
        # (a factory such as full has no inputs: nothing to cancel through it)
        if inner is None or not inner.inputs or only_user(graph, inner.outputs[0]) is not node:
            continue
        x, out = inner.inputs[0], node.outputs[0]
        outer_perm, inner_perm = _perm(node), _perm(inner)
        if outer_perm is not None and inner_perm is not None:
            composed = [inner_perm[p] for p in outer_perm]
            if composed == list(range(len(composed))):
                changed |= forward(graph, out, x)
            else:
                changed |= replace_with_node(graph, out, "permute", [x], {"dims": composed})
        elif node.op in _RESHAPES and inner.op in _RESHAPES and out.type.is_static:
            if x.type == out.type:
                changed |= forward(graph, out, x)
            else:
                attrs = {"shape": list(out.type.shape)}
                changed |= replace_with_node(graph, out, "reshape", [x], attrs)
    return changed
