"""Remove nodes and constants that nothing reads.

%a = relu(%x)          # %a unused
%b = add(%x, %c)       ⇒   %b = add(%x, %c)
return %b                  return %b

Ops with effects (they write an argument, or assert) stay; an unread random op goes.
"""

from __future__ import annotations

from coreml_compile.compiler.ir import Graph
from coreml_compile.compiler.ops import has_effects
from coreml_compile.passes import register_pass


@register_pass("eliminate_dead_code")
def eliminate_dead_code(graph: Graph) -> bool:
    changed = False
    outputs = {id(v) for v in graph.outputs}
    # Readers come after producers: one backward sweep sees each node's readers gone.
    for node in reversed(graph.nodes):
        unread = all(not o.users and id(o) not in outputs for o in node.outputs)
        if unread and not has_effects(node):  # an unread random op goes too
            graph.remove_node(node)
            changed = True
    for name, value in list(graph.constants.items()):
        if not value.users and id(value) not in outputs:
            del graph.constants[name]
            changed = True
    return changed
