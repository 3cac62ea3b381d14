"""Compute each distinct expression once.

    %a = relu(%x)
    %b = relu(%x)          ⇒   %a = relu(%x)   (readers of %b read %a)

Two nodes are the same expression when they apply the same op, with equal attributes,
to the same inputs. Small constants with equal contents are merged first, so
``x * 2`` written twice is found too.
"""

from __future__ import annotations

import json

from coreml_compile.compiler.ir import Graph
from coreml_compile.passes import register_pass
from coreml_compile.passes._rewrite import forward

# Constants up to this many elements are compared by content.
_SMALL_CONSTANT = 4096


@register_pass("eliminate_common_subexpressions")
def eliminate_common_subexpressions(graph: Graph) -> bool:
    changed = False
    seen_constants = {}
    for value in list(graph.constants.values()):
        if value.data.size > _SMALL_CONSTANT or not value.users:
            continue
        key = (value.type, value.data.tobytes())
        first = seen_constants.setdefault(key, value)
        if first is not value:
            graph.replace_all_uses(value, first)
            del graph.constants[value.name]
            changed = True
    seen_nodes = {}
    for node in list(graph.nodes):
        if node not in graph.nodes or node.op == "dropout":
            continue
        key = (
            node.op,
            tuple(id(v) if v is not None else None for v in node.inputs),
            json.dumps(node.attrs, sort_keys=True, default=str),
        )
        first = seen_nodes.setdefault(key, node)
        if first is node:
            continue
        if all(forward(graph, o, f) for o, f in zip(node.outputs, first.outputs, strict=True)):
            changed = True
    return changed
