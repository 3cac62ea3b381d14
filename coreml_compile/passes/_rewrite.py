"""Small helpers the passes share: reading constants, single users, forwarding values."""

from __future__ import annotations

import numpy as np

from coreml_compile.compiler.ir import Graph, Node, Value
from coreml_compile.compiler.ops import has_effects


def const(value: Value | None) -> np.ndarray | None:
    """The array of a constant value, else None."""
    return None if value is None or value.data is None else value.data


def is_const_equal(value: Value | None, number: float) -> bool:
    """True if ``value`` is a constant whose every element equals ``number``."""
    data = const(value)
    return data is not None and data.size > 0 and bool(np.all(data == number))


def only_user(graph: Graph, value: Value) -> Node | None:
    """The one node that reads ``value``, if there is exactly one and it is not an output."""
    if value in graph.outputs:
        return None
    return value.users.only()


def producer(value: Value | None, *ops: str) -> Node | None:
    """The node that produces ``value``, if it is one of ``ops``."""
    if value is None or value.producer is None:
        return None
    return value.producer if value.producer.op in ops else None


def forward(graph: Graph, old: Value, new: Value) -> bool:
    """Make every reader of ``old`` read ``new`` instead, and drop ``old``'s node if dead.

    A graph output keeps its name: ``new`` takes it over, which is only possible when
    ``new`` is an internal value (not an input, a constant or another output). Returns
    False, changing nothing, when it is not.
    """
    if old is new or new.type != old.type:
        return False
    if old in graph.outputs and (new.producer is None or new in graph.outputs):
        return False
    was_output = old in graph.outputs
    graph.replace_all_uses(old, new)
    drop_dead(graph, old.producer)
    if was_output:
        # The output keeps its user-facing name (the old value is gone with its node).
        name = old.name
        graph.rename(old, f"{name}__removed")
        graph.rename(new, name)
    return True


def replace_with_node(
    graph: Graph,
    old: Value,
    op: str,
    inputs: list[Value | None],
    attrs: dict,
    name: str | None = None,
    before: Node | None = None,
) -> bool:
    """Compute ``old`` with a new ``op`` node instead (placed before ``old``'s producer,
    or ``before``); readers move to it and what is left dead goes. If ``old`` cannot be
    forwarded (see :func:`forward`), the new node is removed again and False returned."""
    anchor = before or old.producer
    node = graph.add_node(op, inputs, attrs, [old.type], name=name or anchor.name, before=anchor)
    if forward(graph, old, node.output):
        return True
    graph.remove_node(node)
    return False


def drop_dead(graph: Graph, node: Node | None) -> None:
    """Remove ``node`` if nothing reads its outputs, then the producers that leaves dead.

    Fusing ``conv → batch_norm`` leaves the old conv unread; removing it at once keeps
    each pass's node and weight counts true, instead of waiting for dead-code removal.
    """
    work = [node]
    while work:
        node = work.pop()
        if node is None or node not in graph.nodes:
            continue
        if has_effects(node) or any(o.users or o in graph.outputs for o in node.outputs):
            continue
        inputs = list(node.present_inputs())
        graph.remove_node(node)
        work.extend(v.producer for v in inputs if v.producer is not None)


def new_constant(graph: Graph, base: str, data: np.ndarray) -> Value:
    return graph.add_constant(base, np.ascontiguousarray(data))


def output_channels(layer: Node) -> tuple[int, int] | None:
    """(axis, count) of the output channels of a conv, conv_transpose, linear or
    batch_norm node, else None."""
    rank = layer.outputs[0].type.rank
    if layer.op == "batch_norm":
        return (1, layer.inputs[3].type.shape[0]) if rank >= 2 else None
    weight = layer.inputs[1].type
    if layer.op == "linear":
        return (rank - 1, weight.shape[0]) if weight.rank == 2 and rank >= 1 else None
    if layer.op == "conv":
        return 1, weight.shape[0]
    if layer.op == "conv_transpose":
        # The weight is (in, out/groups, *kernel).
        return 1, weight.shape[1] * layer.attrs["groups"]
    return None


def channel_vector(c: np.ndarray, layer: Node) -> np.ndarray | None:
    """``c`` as one float64 value per output channel of ``layer``, if combining it with
    the layer's output element-wise broadcasts along the channel axis only (or not at
    all: a scalar), else None."""
    found = output_channels(layer)
    if found is None:
        return None
    axis, channels = found
    rank = layer.outputs[0].type.rank
    if c.ndim > rank:
        return None
    shape = (1,) * (rank - c.ndim) + c.shape
    if all(s == 1 for i, s in enumerate(shape) if i != axis) and shape[axis] in (1, channels):
        return np.broadcast_to(c.reshape(-1).astype(np.float64), (channels,))
    return None
