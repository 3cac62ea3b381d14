"""Reading products and sums out of chains of mul/div/add nodes, for pattern passes.

``x * 0.5 * y`` may be traced as mul(mul(x, 0.5), y) or mul(x, mul(y, 0.5)) or
div(mul(x, y), 2); a pass that recognises a formula compares its factors instead of
one of those shapes.
"""

from __future__ import annotations

import numpy as np

from coreml_compile.compiler.ir import Graph, Value
from coreml_compile.passes._rewrite import const


def scalar_value(value: Value | None) -> float | None:
    data = const(value)
    if data is None or data.size != 1:
        return None
    return float(data.reshape(-1)[0])


def product(graph: Graph, value: Value, root: bool = True) -> tuple[float, list[Value]] | None:
    """(scalar, factors) with ``value == scalar * prod(factors)``, through single-use
    mul/div-by-constant nodes; None when a division by a non-constant is in the way."""
    node = value.producer
    if not root and (node is None or len(value.users) != 1 or value in graph.outputs):
        return 1.0, [value]
    if node is None or node.op not in ("mul", "div"):
        return 1.0, [value]
    if node.op == "div":
        if node.attrs["rounding_mode"] is not None:
            return 1.0, [value]
        d = scalar_value(node.inputs[1])
        if d is None or d == 0:
            return 1.0, [value]
        inner = product(graph, node.inputs[0], root=False)
        return inner[0] / d, inner[1]
    scalar, factors = 1.0, []
    for operand in node.inputs:
        s = scalar_value(operand)
        if s is not None:
            scalar *= s
            continue
        inner = product(graph, operand, root=False)
        scalar *= inner[0]
        factors += inner[1]
    return scalar, factors


def close(a: float | None, b: float, rel: float = 1e-3) -> bool:
    return a is not None and bool(np.isclose(a, b, rtol=rel, atol=0))
