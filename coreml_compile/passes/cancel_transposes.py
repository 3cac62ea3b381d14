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
from coreml_compile.passes._engine import Match, New, Pattern, Rule, rewrite

_PERMUTES = ("permute", "transpose")
_RESHAPES = ("reshape", "flatten", "squeeze", "unsqueeze")


def _perm(node: Node) -> list[int]:
    rank = node.inputs[0].type.rank
    if node.op == "permute":
        return [d % rank for d in node.attrs["dims"]]
    perm = list(range(rank))
    if rank == 0:  # torch.t of a 0-d tensor: nothing to swap (and no dim to wrap around)
        return perm
    a, b = node.attrs["dim0"] % rank, node.attrs["dim1"] % rank
    perm[a], perm[b] = perm[b], perm[a]
    return perm


def _compose_permutes(graph: Graph, m: Match):
    inner = _perm(m.node("inner"))
    composed = [inner[p] for p in _perm(m.root)]
    if composed == list(range(len(composed))):
        return m["x"]
    return New("permute", [m["x"]], {"dims": composed})


def _compose_reshapes(graph: Graph, m: Match):
    x, out = m["x"], m.root.output
    return x if x.type == out.type else New("reshape", [x], {"shape": list(out.type.shape)})


RULES = [
    Rule(
        Pattern(_PERMUTES, Pattern(_PERMUTES, "x", bind="inner", single_use=True)),
        _compose_permutes,
    ),
    Rule(
        Pattern(_RESHAPES, Pattern(_RESHAPES, "x", single_use=True)),
        _compose_reshapes,
        check=lambda m: m.root.output.type.is_static,
    ),
]


@register_pass("cancel_transposes")
def cancel_transposes(graph: Graph) -> bool:
    return rewrite(graph, RULES)
