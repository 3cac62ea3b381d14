"""Recompose activations that a model wrote out by hand into their single ops.

    %s = sigmoid(%x)       %y = mul(%x, %s)        ⇒   %y = silu(%x)
    %h = hardsigmoid(%x)   %y = mul(%x, %h)        ⇒   %y = hardswish(%x)
    %e = exp(%x)   %s = sum(%e) dim=d keepdim   %y = div(%e, %s)
                                                   ⇒   %y = softmax(%x) dim=d

The intermediate must have no other reader.
"""

from __future__ import annotations

from coreml_compile.compiler.ir import Graph, Node
from coreml_compile.passes import register_pass
from coreml_compile.passes._rewrite import forward, only_user

_GATED = {"sigmoid": "silu", "hardsigmoid": "hardswish"}


def _replace(graph: Graph, node: Node, op: str, x, attrs: dict) -> bool:
    new = graph.add_node(op, [x], attrs, [node.output.type], name=node.name, before=node)
    if forward(graph, node.output, new.output):
        return True
    graph.remove_node(new)
    return False


@register_pass("recompose_activations")
def recompose_activations(graph: Graph) -> bool:
    changed = False
    for node in list(graph.nodes):
        if node not in graph.nodes:
            continue
        if node.op == "mul":
            for x, gate in (node.inputs, node.inputs[::-1]):
                g = gate.producer
                if g is None or g.op not in _GATED or g.inputs[0] is not x:
                    continue
                if only_user(graph, gate) is not node or node.output.type != x.type:
                    continue
                changed |= _replace(graph, node, _GATED[g.op], x, {})
                break
        elif node.op == "div" and node.attrs["rounding_mode"] is None:
            e, s = node.inputs
            exp, total = e.producer, s.producer
            if exp is None or total is None or exp.op != "exp" or total.op != "sum":
                continue
            if total.inputs[0] is not e or not total.attrs["keepdim"]:
                continue
            dims = total.attrs["dim"]
            dims = [dims] if isinstance(dims, int) else list(dims or [])
            if len(dims) != 1 or len(set(map(id, e.users))) != 2:
                continue
            changed |= _replace(graph, node, "softmax", exp.inputs[0], {"dim": dims[0]})
    return changed
