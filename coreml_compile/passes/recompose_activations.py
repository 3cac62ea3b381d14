"""Recompose activations that a model wrote out by hand into their single ops.

    %s = sigmoid(%x)       %y = mul(%x, %s)        ⇒   %y = silu(%x)
    %h = hardsigmoid(%x)   %y = mul(%x, %h)        ⇒   %y = hardswish(%x)
    %e = exp(%x)   %s = sum(%e) dim=d keepdim   %y = div(%e, %s)
                                                   ⇒   %y = softmax(%x) dim=d
    0.5 * x * (1 + erf(x / sqrt(2)))              ⇒   %y = gelu(%x)
    0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x**3)))
                                                   ⇒   %y = gelu(%x) approximate='tanh'

The GELU forms are recognised by their factors, however the products are grouped
(``x * 0.5 * a``, ``(x * a) / 2``...). Intermediates must have no other reader.
"""

from __future__ import annotations

import math

from coreml_compile.compiler.ir import Graph, Node, Value
from coreml_compile.passes import register_pass
from coreml_compile.passes._algebra import close, product, scalar_value
from coreml_compile.passes._engine import Match, New, NodeRule, Pattern, Rule, rewrite
from coreml_compile.passes._rewrite import only_user, replace_with_node

_GATED = {"sigmoid": "silu", "hardsigmoid": "hardswish"}


def _one_plus(graph: Graph, value: Value, op: str) -> Value | None:
    """If ``value`` = 1 + op(t) (single-use links), the argument t of op."""
    add = value.producer
    if add is None or add.op != "add" or add.attrs["alpha"] != 1 or only_user(graph, value) is None:
        return None
    for term, other in (add.inputs, add.inputs[::-1]):
        inner = term.producer
        if (
            close(scalar_value(other), 1.0)
            and inner is not None
            and inner.op == op
            and only_user(graph, term) is add
        ):
            return inner.inputs[0]
    return None


def _is_cube_of(value: Value, x: Value) -> bool:
    """True if ``value`` is pow(x, 3) (x*x*x arrives already split into factors)."""
    node = value.producer
    return (
        node is not None
        and node.op == "pow"
        and node.inputs[0] is x
        and close(scalar_value(node.inputs[1]), 3.0)
    )


def _gelu_kind(graph: Graph, x: Value, a: Value) -> str | None:
    """ "none" or "tanh" if ``a`` is GELU's (1 + erf(...)) or (1 + tanh(...)) factor of x."""
    t = _one_plus(graph, a, "erf")
    if t is not None:
        found = product(graph, t)
        if found and close(found[0], 1 / math.sqrt(2)) and found[1] == [x]:
            return "none"
    t = _one_plus(graph, a, "tanh")
    if t is None:
        return None
    found = product(graph, t)
    if not found or not close(found[0], math.sqrt(2 / math.pi)) or len(found[1]) != 1:
        return None
    inner = found[1][0].producer
    if inner is None or inner.op != "add":
        return None
    for term, other in (inner.inputs, inner.inputs[::-1]):
        cubic = product(graph, other)
        if (
            term is x
            and cubic
            and close(cubic[0], 0.044715)
            and (cubic[1] == [x, x, x] or (len(cubic[1]) == 1 and _is_cube_of(cubic[1][0], x)))
        ):
            return "tanh"
    return None


def _recompose_gelu(graph: Graph, node: Node) -> bool:
    found = product(graph, node.output)
    if not found or not close(found[0], 0.5) or len(found[1]) != 2:
        return False
    for x, a in (found[1], found[1][::-1]):
        kind = _gelu_kind(graph, x, a)
        if kind is not None and x.type == node.output.type:
            return replace_with_node(graph, node.output, "gelu", [x], {"approximate": kind})
    return False


def _softmax(graph: Graph, m: Match) -> New | None:
    dims = m.node("s").attrs["dim"]
    dims = [dims] if isinstance(dims, int) else list(dims or [])
    if len(dims) != 1 or len(m["e"].users.distinct()) != 2:
        return None
    return New("softmax", [m["x"]], {"dim": dims[0]})


RULES = [
    Rule(
        Pattern(
            "mul", "x", Pattern(tuple(_GATED), "x", bind="gate", single_use=True), commute=True
        ),
        lambda graph, m: New(_GATED[m.node("gate").op], [m["x"]]),
        check=lambda m: m.root.output.type == m["x"].type,
    ),
    Rule(
        Pattern(
            "div",
            Pattern("exp", "x", bind="e"),
            Pattern("sum", "e", bind="s", check=lambda n: n.attrs["keepdim"]),
            check=lambda n: n.attrs["rounding_mode"] is None,
        ),
        _softmax,
    ),
    # The GELU products are found by their factors, however grouped: up to 8 nodes deep.
    NodeRule(_recompose_gelu, frozenset({"mul", "div"}), depth=8),
]


@register_pass("recompose_activations")
def recompose_activations(graph: Graph) -> bool:
    return rewrite(graph, RULES)
