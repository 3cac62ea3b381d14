"""The rewrite engine: rules, stated as patterns, run by one worklist to a fixed point.

A rule is a pattern over a node and its producers, an optional check, and a
replacement. The silu rule, in full::

    Rule(
        Pattern("mul", "x", Pattern("sigmoid", "x", single_use=True), commute=True),
        lambda graph, m: New("silu", [m["x"]]),
    )

A :class:`Pattern` names the root node's op (or ops) and says what each of its first
inputs must be: another pattern (produced by a matching node), a variable name (any
value; a name seen twice must be the same value), or :class:`Const` (a constant). Names
ending in ``?`` also match an absent input. A pattern with ``bind="a"`` makes the value
it matched available as ``m["a"]`` and its node as ``m.node("a")``; the root node is
``m.root``.

The replacement returns what the root's output becomes: a :class:`New` node (built
before the root, taking over its output's readers and name), an existing value to
forward to, or None for "no rewrite after all". A rule that is not a pattern (folding,
common subexpressions) is a :class:`NodeRule`: a function that edits the graph and says
whether it did.

:func:`rewrite` runs rules to a fixed point: it visits every node once, in order, and
the graph reports each node an edit may have made rewritable (a new node, a node whose
inputs changed, a producer that lost a reader); that node and its readers, as deep as the
deepest pattern looks (past the first level, through values with at most two readers),
are visited again. Every edit is O(1) (see ``ir.NodeList``), so a
pass costs what it visits: linear in the graph for a pass that changes a bounded amount
around each node.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from coreml_compile.compiler.ir import Graph, Node, TensorType, Value
from coreml_compile.passes._rewrite import forward, replace_with_node


@dataclass(frozen=True)
class Const:
    """A constant input, bound to ``name`` (``"b?"``: a constant or absent)."""

    name: str


class Pattern:
    """A node applying one of ``ops`` whose first inputs match ``inputs``, in order
    (further inputs are not looked at). See the module docstring."""

    def __init__(
        self,
        ops: str | Iterable[str],
        *inputs: Pattern | Const | str,
        bind: str | None = None,
        single_use: bool = False,
        commute: bool = False,
        check: Callable[[Node], bool] | None = None,
    ):
        self.ops = frozenset([ops] if isinstance(ops, str) else ops)
        self.inputs = inputs
        self.bind = bind
        # The matched output has no reader but the pattern above it (and is no graph
        # output): fusing it away loses nothing.
        self.single_use = single_use
        # Try the first two inputs in both orders (add, mul).
        self.commute = commute
        # A condition on the node alone (its attributes), tried before its inputs.
        self.check = check

    def match(self, graph: Graph, node: Node) -> Match | None:
        """The bindings if ``node`` (as the root) matches, else None."""
        m = Match(node)
        return m if self._match_node(graph, node, m) else None

    def _match_node(self, graph: Graph, node: Node, m: Match) -> bool:
        if node.op not in self.ops or (self.check is not None and not self.check(node)):
            return False
        if len(node.inputs) < len(self.inputs):
            return False
        orders = [node.inputs]
        if self.commute and len(node.inputs) >= 2:
            orders.append([node.inputs[1], node.inputs[0], *node.inputs[2:]])
        for inputs in orders:
            saved = m.save()
            if all(_match_input(graph, p, v, m) for p, v in zip(self.inputs, inputs, strict=False)):
                if self.bind is not None:
                    m.values[self.bind] = node.outputs[0]
                return True
            m.restore(saved)
        return False


def _depth(pattern: Pattern) -> int:
    """How many producers deep ``pattern`` looks."""
    inner = [_depth(p) for p in pattern.inputs if isinstance(p, Pattern)]
    return 1 + max(inner) if inner else 0


def _match_input(graph: Graph, p: Pattern | Const | str, v: Value | None, m: Match) -> bool:
    if isinstance(p, Pattern):
        if v is None or v.producer is None or v.producer not in graph.nodes:
            return False
        if p.single_use and (v.users.only() is None or v in graph.outputs):
            return False
        return p._match_node(graph, v.producer, m)
    name = p.name if isinstance(p, Const) else p
    optional = name.endswith("?")
    name = name.rstrip("?")
    if v is None:
        return optional and m.bind(name, None)
    if isinstance(p, Const) and not v.is_constant:
        return False
    return name == "_" or m.bind(name, v)


class Match:
    """What a pattern bound: ``m["x"]`` is a value, ``m.node("x")`` its producer."""

    def __init__(self, root: Node):
        self.root = root
        self.values: dict[str, Value | None] = {}

    def bind(self, name: str, value: Value | None) -> bool:
        if name in self.values:
            return self.values[name] is value
        self.values[name] = value
        return True

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def node(self, name: str) -> Node:
        return self.values[name].producer

    def save(self) -> dict[str, Value | None]:
        return dict(self.values)

    def restore(self, saved: dict[str, Value | None]) -> None:
        self.values = saved


@dataclass
class New:
    """A node the replacement builds: ``op`` on ``inputs`` (values, or further New nodes,
    built first). ``type`` is the output type (default: the root output's, for the node
    that replaces it; for inner ones it must be given or is inferred). ``name`` defaults
    to the root's."""

    op: str
    inputs: Sequence[Value | New | None]
    attrs: dict[str, Any] = field(default_factory=dict)
    type: TensorType | None = None
    name: str | None = None


Replacement = Callable[[Graph, Match], "New | Value | None"]


@dataclass
class Rule:
    """pattern + check + replacement; ``check(m)`` may refuse a match."""

    pattern: Pattern
    replace: Replacement
    check: Callable[[Match], bool] | None = None

    @property
    def ops(self) -> frozenset[str]:
        return self.pattern.ops

    @property
    def depth(self) -> int:
        return _depth(self.pattern)

    def apply(self, graph: Graph, node: Node) -> bool:
        m = self.pattern.match(graph, node)
        if m is None or (self.check is not None and not self.check(m)):
            return False
        result = self.replace(graph, m)
        if result is None:
            return False
        old = node.outputs[0]
        if isinstance(result, Value):
            return result.type == old.type and forward(graph, old, result)
        inputs = [_build(graph, i, node) for i in result.inputs]
        attrs = result.attrs
        return replace_with_node(graph, old, result.op, inputs, attrs, result.name or node.name)


def _build(graph: Graph, item: Value | New | None, root: Node) -> Value | None:
    if not isinstance(item, New):
        return item
    inputs = [_build(graph, i, root) for i in item.inputs]
    types = None if item.type is None else [item.type]
    name = item.name or f"{root.name}_{item.op}"
    return graph.add_node(item.op, inputs, item.attrs, types, name=name, before=root).output


@dataclass
class NodeRule:
    """A rule written as a function: ``fn(graph, node) -> changed`` for nodes of ``ops``
    (None: every node). ``depth``: how many producers deep ``fn`` looks."""

    fn: Callable[[Graph, Node], bool]
    ops: frozenset[str] | None = None
    depth: int = 0

    def apply(self, graph: Graph, node: Node) -> bool:
        return self.fn(graph, node)


AnyRule = Rule | NodeRule


def rewrite(graph: Graph, rules: Sequence[AnyRule]) -> bool:
    """Apply ``rules`` until none applies anywhere; True if the graph changed.

    Each node is visited once in graph order, then again whenever an edit touches it or
    a producer up to the rules' depth. At a visit the node's rules are tried in order and
    the first that applies wins.
    """
    every = tuple(rule for rule in rules if rule.ops is None)
    by_op: dict[str, tuple[AnyRule, ...]] = {}
    for rule in rules:
        for op in rule.ops or ():
            by_op[op] = (*by_op.get(op, ()), rule)
    by_op = {op: (*found, *every) for op, found in by_op.items()}
    depth = max((rule.depth for rule in rules), default=0)
    queue: deque[Node] = deque(graph.nodes)
    queued: set[Node] = set(queue)

    def touched(node: Node) -> None:
        # The node, and its readers as deep as a pattern could look from them. Past the
        # first level only through values read at most twice: a deep pattern's inner
        # values have one reader (or two: softmax's exp, layer norm's x - mean), and
        # this keeps a touch from flooding a graph of wide fan-out.
        frontier = [node]
        for level in range(depth + 1):
            following = []
            for n in frontier:
                if n not in queued:
                    queued.add(n)
                    queue.append(n)
                if level < depth:
                    for out in n.outputs:
                        readers = out.users.distinct()
                        if level == 0 or len(readers) <= 2:
                            following.extend(readers)
            frontier = following

    # Every rewrite must make progress; a rule set that undoes itself would run forever.
    budget = 100 * (len(graph.nodes) + 100)
    changed = False
    previous, graph.on_change = graph.on_change, touched
    try:
        while queue:
            node = queue.popleft()
            queued.discard(node)
            if node not in graph.nodes:
                continue
            for rule in by_op.get(node.op, every):
                if rule.apply(graph, node):
                    changed = True
                    budget -= 1
                    if budget < 0:
                        raise RuntimeError(f"rewrite rules {rules} do not reach a fixed point")
                    break
    finally:
        graph.on_change = previous
    return changed
