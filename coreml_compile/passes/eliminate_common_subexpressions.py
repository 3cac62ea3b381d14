"""Compute each distinct expression once.

    %a = relu(%x)
    %b = relu(%x)          ⇒   %a = relu(%x)   (readers of %b read %a)

Two nodes are the same expression when they apply the same op, with equal attributes,
to the same inputs. Small constants with equal contents are merged first, so
``x * 2`` written twice is found too.
"""

from __future__ import annotations

import json

from coreml_compile.compiler.ir import Graph, Node
from coreml_compile.compiler.ops import is_pure
from coreml_compile.passes import register_pass
from coreml_compile.passes._engine import NodeRule, rewrite
from coreml_compile.passes._rewrite import forward

# Constants up to this many elements are compared by content.
_SMALL_CONSTANT = 4096


def _merge_constants(graph: Graph) -> bool:
    changed = False
    seen = {}
    for value in list(graph.constants.values()):
        if value.data.size > _SMALL_CONSTANT or not value.users:
            continue
        first = seen.setdefault((value.type, value.data.tobytes()), value)
        if first is not value:
            graph.replace_all_uses(value, first)
            del graph.constants[value.name]
            changed = True
    return changed


def _key(node: Node) -> tuple:
    inputs = tuple(None if v is None else id(v) for v in node.inputs)
    return node.op, inputs, json.dumps(node.attrs, sort_keys=True, default=str)


@register_pass("eliminate_common_subexpressions")
def eliminate_common_subexpressions(graph: Graph) -> bool:
    changed = _merge_constants(graph)
    seen: dict[tuple, Node] = {}

    def merge(graph: Graph, node: Node) -> bool:
        # Random ops are never merged: two draws are two different values.
        if not is_pure(node):
            return False
        key = _key(node)
        first = seen.get(key)
        if first is None or first is node or first not in graph or _key(first) != key:
            seen[key] = node
            return False
        # Keep the earlier node: it is defined before the other one's readers.
        if graph.nodes.order_key(node) < graph.nodes.order_key(first):
            first, node = node, first
        seen[key] = first
        return all(forward(graph, o, f) for o, f in zip(node.outputs, first.outputs, strict=True))

    return rewrite(graph, [NodeRule(merge)]) or changed
