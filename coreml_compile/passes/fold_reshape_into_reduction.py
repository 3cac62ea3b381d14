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
from coreml_compile.passes._engine import Match, New, Pattern, Rule, rewrite

_REDUCTIONS = ("mean", "sum", "amax", "amin")


def _fold(graph: Graph, m: Match) -> New | None:
    red, x = m.node("reduced"), m["x"]
    if red.op in _REDUCTIONS and red.attrs["keepdim"]:
        op, dims = red.op, normalize_axes(red.attrs["dim"], x.type.rank)
    elif red.op == "adaptive_avg_pool2d" and as_tuple(red.attrs["output_size"], 2) == (1, 1):
        op, dims = "mean", [x.type.rank - 2, x.type.rank - 1]
    else:
        return None
    dropped = tuple(d for i, d in enumerate(x.type.shape) if i not in dims)
    if tuple(m.root.output.type.shape) != dropped:
        return None
    return New(op, [x], {"dim": dims, "keepdim": False}, name=red.name)


RULE = Rule(
    Pattern(
        ("reshape", "flatten", "squeeze"),
        Pattern((*_REDUCTIONS, "adaptive_avg_pool2d"), "x", bind="reduced", single_use=True),
    ),
    _fold,
)


@register_pass("fold_reshape_into_reduction")
def fold_reshape_into_reduction(graph: Graph) -> bool:
    return rewrite(graph, [RULE])
