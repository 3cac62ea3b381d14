"""Remove ops that return their input unchanged.

    %y = dropout(%x) train=False           ⇒   (readers of %y read %x)
    %y = reshape(%x) shape=<shape of x>
    %y = mul(%x, 1.0)   %y = add(%x, 0.0)   %y = cast(%x) dtype=<dtype of x>
    %y = permute(%x) dims=[0,1,2]   %y = adaptive_avg_pool2d(%x) output_size=<H,W of x>
    %y = copy(%x, %src)                    ⇒   (readers of %y read %src, of x's type)

An op is only removed when its output has exactly its input's type, so broadcasting
(``x + zeros`` of a larger shape) is never dropped.
"""

from __future__ import annotations

from coreml_compile.compiler.ir import Graph, Node, Value
from coreml_compile.compiler.ops._helpers import as_tuple
from coreml_compile.passes import register_pass
from coreml_compile.passes._engine import NodeRule, rewrite
from coreml_compile.passes._rewrite import forward, is_const_equal


def _passthrough(node: Node) -> Value | None:
    """The input a no-op node returns unchanged, or None if it is not a no-op."""
    op, a = node.op, node.attrs
    x = node.inputs[0] if node.inputs else None
    if x is None:
        return None
    if op in ("identity", "reshape", "flatten", "expand", "squeeze", "unsqueeze", "cast"):
        return x
    if op == "dropout" and not a["train"]:
        return x
    if op in ("permute",) and list(a["dims"]) == list(range(len(a["dims"]))):
        return x
    if op == "transpose" and (
        x.type.rank < 2 or a["dim0"] % x.type.rank == a["dim1"] % x.type.rank
    ):
        return x
    if op == "slice" and a["step"] == 1:
        return x
    if op == "pad" and not any(a["pad"]):
        return x
    if op == "clamp" and a["min"] is None and a["max"] is None:
        return x
    if op == "cat" and len(node.inputs) == 1:
        return x
    if op == "copy":  # x[...] = src, functionalised: what x held is not read
        return node.inputs[1]
    if op in ("add", "sub") and is_const_equal(node.inputs[1], 0) and a["alpha"] in (0, 1):
        return x
    if op == "add" and is_const_equal(x, 0):
        return node.inputs[1]
    if op in ("mul", "div") and is_const_equal(node.inputs[1], 1) and not a.get("rounding_mode"):
        return x
    if op == "mul" and is_const_equal(x, 1):
        return node.inputs[1]
    if op == "pow" and is_const_equal(node.inputs[1], 1):
        return x
    if op == "adaptive_avg_pool2d" and tuple(x.type.shape[-2:]) == as_tuple(a["output_size"], 2):
        return x
    if (
        op == "adaptive_max_pool2d"
        and not node.outputs[1].users
        and tuple(x.type.shape[-2:]) == as_tuple(a["output_size"], 2)
    ):
        return x
    return None


def _remove(graph: Graph, node: Node) -> bool:
    source = _passthrough(node)
    return (
        source is not None
        and source.type == node.outputs[0].type
        and (forward(graph, node.outputs[0], source))
    )


@register_pass("remove_noops")
def remove_noops(graph: Graph) -> bool:
    return rewrite(graph, [NodeRule(_remove)])
