"""Remove nodes and constants that nothing reads.

%a = relu(%x)          # %a unused
%b = add(%x, %c)       ⇒   %b = add(%x, %c)
return %b                  return %b
"""

from __future__ import annotations

from coreml_compile.compiler.ir import Graph
from coreml_compile.passes import register_pass


@register_pass("eliminate_dead_code")
def eliminate_dead_code(graph: Graph) -> bool:
    changed = False
    outputs = {id(v) for v in graph.outputs}
    for node in reversed(list(graph.nodes)):
        if all(not o.users and id(o) not in outputs for o in node.outputs):
            graph.remove_node(node)
            changed = True
    for name, value in list(graph.constants.items()):
        if not value.users and id(value) not in outputs:
            del graph.constants[name]
            changed = True
    return changed
