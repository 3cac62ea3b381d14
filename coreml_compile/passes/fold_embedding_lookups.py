"""Embedding lookups whose indices are known from sizes alone need no gather.

    %p = slice(%positions) dim=1 end=n    (a constant counting 0, 1, ... along dim 1)
    %e = embedding(%W, %p)            ⇒   %e = slice(%W') dim=1 end=n   (W[:N] as [1, N, D])

    %z = full_like(%ids) fill_value=k
    %e = embedding(%W, %z)
    %y = add(%x, %e)                  ⇒   %y = add(%x, %r)              (r: W[k] as [1, 1, D])

BERT-style encoders slice a buffer of positions and look up a segment that is all zeros.
With static sizes both fold to constants anyway; with a dynamic length each is a gather
(and a fill) at run time. The first rule needs the sliced constant to count 0, 1, ...
along the sliced axis and have size 1 on every other; the second needs every reader of
the lookup to be an add, sub or mul whose other operand already has the lookup's type,
so that the row broadcasts to the same result.
"""

from __future__ import annotations

import numpy as np

from coreml_compile.compiler.ir import Graph, Node
from coreml_compile.passes import register_pass
from coreml_compile.passes._engine import NodeRule, rewrite
from coreml_compile.passes._rewrite import const, forward, producer

_BROADCASTING = ("add", "sub", "mul")


def _positions(graph: Graph, node: Node) -> bool:
    weight, indices = node.inputs
    cut = producer(indices, "slice")
    table = const(cut.inputs[0]) if cut is not None else None
    if const(weight) is None or table is None or table.ndim == 0:
        return False
    axis = cut.attrs["dim"] % table.ndim
    n = table.shape[axis]
    counting = np.arange(n).reshape([n if i == axis else 1 for i in range(table.ndim)])
    if cut.attrs["step"] != 1 or n > weight.data.shape[0] or table.shape != counting.shape:
        return False
    if not np.array_equal(table, counting):
        return False
    rows = weight.data[:n].reshape(*table.shape, weight.data.shape[1])  # a view, not a copy
    source = graph.add_constant(f"{weight.name}_rows", rows)
    attrs = {**cut.attrs, "dim": axis}
    sliced = graph.add_node(
        "slice", [source], attrs, [node.output.type], name=node.name, before=node
    )
    return forward(graph, node.output, sliced.output)


def _row(graph: Graph, node: Node) -> bool:
    weight, indices = node.inputs
    fill = producer(indices, "full_like")
    out = node.output
    if const(weight) is None or fill is None or out in graph.outputs or not out.users:
        return False
    index = fill.attrs["fill_value"]
    if index != int(index) or not 0 <= int(index) < weight.data.shape[0]:
        return False
    readers = out.users.distinct()
    for reader in readers:
        if reader.op not in _BROADCASTING or len(reader.inputs) != 2:
            return False
        other = reader.inputs[1] if reader.inputs[0] is out else reader.inputs[0]
        if other is out or other.type != out.type or reader.output.type != out.type:
            return False
    row = weight.data[int(index)].reshape(*([1] * (out.type.rank - 1)), -1)
    constant = graph.add_constant(f"{weight.name}_row{int(index)}", row)
    for reader in readers:
        for i, value in enumerate(reader.inputs):
            if value is out:
                graph.set_input(reader, i, constant)
    return True


@register_pass("fold_embedding_lookups")
def fold_embedding_lookups(graph: Graph) -> bool:
    lookups = frozenset({"embedding"})
    return rewrite(graph, [NodeRule(_positions, lookups, 1), NodeRule(_row, lookups, 1)])
