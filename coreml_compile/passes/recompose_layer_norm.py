"""Recompose a layer norm written out by hand into the single op.

    %u = mean(%x) dim=[-1] keepdim       %d = sub(%x, %u)
    %v = mean(pow(%d, 2)) dim=[-1] keepdim
    %n = div(%d, sqrt(add(%v, eps)))      (or mul(%d, rsqrt(add(%v, eps))))
    %y = add(mul(%n, %gamma), %beta)      (optional, constants)
        ⇒   %y = layer_norm(%x, %gamma, %beta) normalized_shape=[...] eps

The mean and variance must be over the last dims (what layer_norm normalises).
"""

from __future__ import annotations

from coreml_compile.compiler.ir import Graph, Node, Value
from coreml_compile.compiler.ops._helpers import normalize_axes
from coreml_compile.passes import register_pass
from coreml_compile.passes._algebra import close, scalar_value
from coreml_compile.passes._engine import NodeRule, rewrite
from coreml_compile.passes._rewrite import const, only_user, replace_with_node


def _trailing_mean(value: Value) -> tuple[Value, list[int]] | None:
    node = value.producer
    if node is None or node.op != "mean" or not node.attrs["keepdim"]:
        return None
    x = node.inputs[0]
    dims = normalize_axes(node.attrs["dim"], x.type.rank)
    if dims != list(range(x.type.rank - len(dims), x.type.rank)):
        return None
    return x, dims


def _squared(value: Value, d: Value) -> bool:
    node = value.producer
    if node is None:
        return False
    if node.op == "pow":
        return node.inputs[0] is d and close(scalar_value(node.inputs[1]), 2.0)
    return node.op == "mul" and node.inputs[0] is d and node.inputs[1] is d


def _match_core(node: Node) -> tuple[Value, list[int], float] | None:
    """(x, dims, eps) if ``node`` computes (x - mean) / sqrt(var + eps)."""
    if node.op == "div" and node.attrs["rounding_mode"] is None:
        d, root = node.inputs
        root_node = root.producer
        if root_node is None or root_node.op != "sqrt":
            return None
    elif node.op == "mul":
        d, root = node.inputs
        root_node = root.producer
        if root_node is None or root_node.op != "rsqrt":
            d, root = root, d
            root_node = root.producer
            if root_node is None or root_node.op != "rsqrt":
                return None
    else:
        return None
    sub = d.producer
    if sub is None or sub.op != "sub" or sub.attrs["alpha"] != 1:
        return None
    x, u = sub.inputs
    mean = _trailing_mean(u)
    if mean is None or mean[0] is not x:
        return None
    add = root_node.inputs[0].producer
    if add is None or add.op != "add":
        return None
    for v, e in (add.inputs, add.inputs[::-1]):
        eps = scalar_value(e)
        var = _trailing_mean(v)
        if eps is not None and var is not None and var[1] == mean[1] and _squared(var[0], d):
            return x, mean[1], eps
    return None


def _affine(graph: Graph, value: Value, shape: tuple) -> tuple[Value | None, Value | None, Value]:
    """Constant gamma and beta applied to ``value`` (each optional), and the final value."""
    gamma = beta = None
    user = only_user(graph, value)
    if user is not None and user.op == "mul":
        other = user.inputs[1] if user.inputs[0] is value else user.inputs[0]
        if const(other) is not None and tuple(other.type.shape) == shape:
            gamma, value = other, user.output
            user = only_user(graph, value)
    if user is not None and user.op == "add" and user.attrs["alpha"] == 1:
        other = user.inputs[1] if user.inputs[0] is value else user.inputs[0]
        if const(other) is not None and tuple(other.type.shape) == shape:
            beta, value = other, user.output
    return gamma, beta, value


def _recompose(graph: Graph, node: Node) -> bool:
    core = _match_core(node)
    if core is None:
        return False
    x, dims, eps = core
    shape = tuple(x.type.shape[dims[0] :])
    gamma, beta, last = _affine(graph, node.output, shape)
    if last.type != x.type:
        return False
    attrs = {"normalized_shape": list(shape), "eps": eps}
    return replace_with_node(graph, last, "layer_norm", [x, gamma, beta], attrs)


@register_pass("recompose_layer_norm")
def recompose_layer_norm(graph: Graph) -> bool:
    # The normalised core is found from its div (or mul by rsqrt), looking 6 nodes deep.
    return rewrite(graph, [NodeRule(_recompose, frozenset({"div", "mul"}), depth=6)])
