"""Drop the kept dims of a reduction instead of reshaping them away afterwards.

    %m = mean(%x) dim=[2,3] keepdim=True      (or adaptive_avg_pool2d to 1x1)
    %f = flatten(%m) start_dim=1          ⇒   %f = mean(%x) dim=[2,3] keepdim=False

The reshape must remove exactly the reduced size-1 dims; the reduction must have no
other reader. This is the global-pooling head of ResNet and MobileNet.
"""

from __future__ import annotations

from coreml_compile.compiler.ir import Graph
from coreml_compile.compiler.ops._helpers import as_tuple, normalize_axes
from coreml_compile.passes import register_pass
from coreml_compile.passes._rewrite import only_user, replace_with_node

_REDUCTIONS = ("mean", "sum", "amax", "amin")


@register_pass("fold_reshape_into_reduction")
def fold_reshape_into_reduction(graph: Graph) -> bool:
    changed = False
    for node in [n for n in graph.nodes if n.op in ("reshape", "flatten", "squeeze")]:
        reduced = node.inputs[0]
        red = reduced.producer
        if red is None or only_user(graph, reduced) is not node:
            continue
        x = red.inputs[0]
        if red.op in _REDUCTIONS and red.attrs["keepdim"]:
            op, dims = red.op, normalize_axes(red.attrs["dim"], x.type.rank)
        elif red.op == "adaptive_avg_pool2d" and as_tuple(red.attrs["output_size"], 2) == (1, 1):
            op, dims = "mean", [x.type.rank - 2, x.type.rank - 1]
        else:
            continue
        dropped = tuple(d for i, d in enumerate(x.type.shape) if i not in dims)
        if tuple(node.output.type.shape) != dropped:
            continue
        attrs = {"dim": dims, "keepdim": False}
        changed |= replace_with_node(graph, node.output, op, [x], attrs, red.name)
    return changed
