"""The IR: a typed SSA graph of Values and Nodes.

- A ``Value`` is produced once: by a node, or it is a graph input, or a constant
  (a numpy array in ``Value.data``). It knows its producer and its users, so a rewrite
  edits the graph in place instead of rebuilding it.
- A ``Node`` applies one op of the op table (``node.op`` names its record) to input
  Values and attributes; optional inputs that are absent are ``None``.
- ``Graph.nodes`` is kept in a topological order that only changes when a pass asks,
  so printing, lowering and saving are deterministic. Inserting a node (at the end or
  before another), removing one and asking whether a node is in the graph cost O(1),
  and so do adding and removing one user of a value: a pass's edits cost what they
  touch, not the graph's size.

Dimensions are ints, or strings naming a symbolic dimension ("batch", "seq"): the
frontends fill them in, so dynamic shapes fit without changing these types.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from coreml_compile.compiler import dtypes
from coreml_compile.compiler.symbolic import Specialised, Symbol
from coreml_compile.compiler.tensor_type import Dim, TensorType

__all__ = ["Dim", "Graph", "Node", "TensorType", "Users", "Value", "topological_order"]
from coreml_compile.errors import IRVerificationError


class Users:
    """The nodes that read a value, as a list would hold them: a node that reads the value
    twice is there twice. Adding or removing one use, and ``count``, cost O(1).

    Iteration yields each node as often as it reads the value, grouped by node in the
    order nodes first started reading; it walks a copy, so edits during it are safe.
    """

    __slots__ = ("_counts", "_total")

    def __init__(self, nodes: Iterable[Node] = ()):
        self._counts: dict[Node, int] = {}
        self._total = 0
        for node in nodes:
            self.append(node)

    def append(self, node: Node) -> None:
        self._counts[node] = self._counts.get(node, 0) + 1
        self._total += 1

    def remove(self, node: Node) -> None:
        """Remove one use by ``node``."""
        count = self._counts.get(node, 0)
        if count == 0:
            raise ValueError(f"{node!r} is not a user")
        if count == 1:
            del self._counts[node]
        else:
            self._counts[node] = count - 1
        self._total -= 1

    def clear(self) -> None:
        self._counts.clear()
        self._total = 0

    def count(self, node: Node) -> int:
        return self._counts.get(node, 0)

    def distinct(self) -> list[Node]:
        """Each reading node once."""
        return list(self._counts)

    def only(self) -> Node | None:
        """The one node that reads the value (however often), or None."""
        return next(iter(self._counts)) if len(self._counts) == 1 else None

    def _list(self) -> list[Node]:
        return [node for node, count in self._counts.items() for _ in range(count)]

    def __iter__(self) -> Iterator[Node]:
        return iter(self._list())

    def __len__(self) -> int:
        return self._total

    def __contains__(self, node: object) -> bool:
        return node in self._counts

    def __getitem__(self, index: int) -> Node:
        if index == 0 and self._counts:
            return next(iter(self._counts))
        return self._list()[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Users):
            other = other._list()
        return isinstance(other, list) and self._list() == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Users({self._list()!r})"


class Value:
    """An SSA value: a graph input, a constant, or one output of a node."""

    __slots__ = ("name", "type", "producer", "users", "data")

    def __init__(self, name: str, type: TensorType, data: np.ndarray | None = None):
        self.name = name
        self.type = type
        self.producer: Node | None = None
        self.users = Users()
        self.data = data

    @property
    def is_constant(self) -> bool:
        return self.data is not None

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type}"


class Node:
    """One application of an op-table record."""

    __slots__ = ("op", "name", "inputs", "attrs", "outputs")

    def __init__(
        self,
        op: str,
        name: str,
        inputs: Sequence[Value | None],
        attrs: dict[str, Any],
        outputs: Sequence[Value],
    ):
        self.op = op
        self.name = name
        self.inputs: list[Value | None] = list(inputs)
        self.attrs = dict(attrs)
        self.outputs: list[Value] = list(outputs)

    @property
    def output(self) -> Value:
        if len(self.outputs) != 1:
            raise ValueError(f"node {self.name} has {len(self.outputs)} outputs")
        return self.outputs[0]

    def present_inputs(self) -> Iterator[Value]:
        return (v for v in self.inputs if v is not None)

    def __repr__(self) -> str:
        return f"<Node {self.name} = {self.op}>"


_NAME_SAFE = re.compile(r"[^0-9A-Za-z_]")

# Order keys are spaced this far apart, so a node inserted between two neighbours gets
# a key between theirs; when a gap runs out, every key is renumbered (rare: 32 halvings).
_GAP = 1 << 32


class NodeList:
    """A graph's nodes in order: a doubly linked list with an order key per node.

    Appending, inserting before a node, removing and ``in`` cost O(1); ``order_key``
    compares two nodes' positions in O(1). Iterating (and indexing) walks a list that is
    rebuilt after an edit, so a loop over ``graph.nodes`` that edits the graph sees the
    nodes as they were when it started.
    """

    __slots__ = ("_links", "_first", "_last", "_snapshot")

    def __init__(self, nodes: Iterable[Node] = ()):
        # node -> [previous node, next node, order key]
        self._links: dict[Node, list[Any]] = {}
        self._first: Node | None = None
        self._last: Node | None = None
        self._snapshot: list[Node] | None = None
        for node in nodes:
            self.append(node)

    def append(self, node: Node) -> None:
        if node in self._links:
            raise ValueError(f"{node!r} is already in the graph")
        last = self._last
        key = self._links[last][2] + _GAP if last is not None else 0
        self._links[node] = [last, None, key]
        if last is None:
            self._first = node
        else:
            self._links[last][1] = node
        self._last = node
        self._snapshot = None

    def insert_before(self, node: Node, before: Node) -> None:
        if node in self._links:
            raise ValueError(f"{node!r} is already in the graph")
        links = self._links
        previous, _, after_key = links[before]
        before_key = links[previous][2] if previous is not None else after_key - 2 * _GAP
        key = (before_key + after_key) // 2
        if key == before_key:
            self._renumber()
            return self.insert_before(node, before)
        links[node] = [previous, before, key]
        links[before][0] = node
        if previous is None:
            self._first = node
        else:
            links[previous][1] = node
        self._snapshot = None

    def remove(self, node: Node) -> None:
        previous, following, _ = self._links.pop(node)
        if previous is None:
            self._first = following
        else:
            self._links[previous][1] = following
        if following is None:
            self._last = previous
        else:
            self._links[following][0] = previous
        self._snapshot = None

    def reorder(self, nodes: Iterable[Node]) -> None:
        """Hold exactly ``nodes``, in that order."""
        nodes = list(nodes)
        self._links.clear()
        self._first = self._last = None
        for node in nodes:
            self.append(node)

    def order_key(self, node: Node) -> int:
        """A number that orders nodes as the list does (valid until the next edit)."""
        return self._links[node][2]

    def _renumber(self) -> None:
        for i, node in enumerate(self._list()):
            self._links[node][2] = i * _GAP

    def _list(self) -> list[Node]:
        if self._snapshot is None:
            out, node, links = [], self._first, self._links
            while node is not None:
                out.append(node)
                node = links[node][1]
            self._snapshot = out
        return self._snapshot

    def __iter__(self) -> Iterator[Node]:
        return iter(self._list())

    def __reversed__(self) -> Iterator[Node]:
        return reversed(self._list())

    def __getitem__(self, index: int) -> Node:
        return self._list()[index]

    def __len__(self) -> int:
        return len(self._links)

    def __contains__(self, node: object) -> bool:
        return node in self._links

    def __repr__(self) -> str:
        return f"NodeList({self._list()!r})"


class Graph:
    """A computation: inputs, constants, nodes in topological order, outputs."""

    def __init__(self, name: str = "main"):
        self.name = name
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.nodes = NodeList()
        self.constants: dict[str, Value] = {}
        # Dynamic dimensions by name, with their ranges (compiler/symbolic.py).
        self.symbols: dict[str, Symbol] = {}
        # Buffers the model updates in place (a KV cache), kept between calls: each
        # state's value at the start of a call is the graph input of its name, its new
        # value the graph output named in the map (Core ML states from iOS18).
        self.states: dict[str, str] = {}
        self._names: set[str] = set()
        # base name -> the suffix to try first, so naming n nodes "mul" costs O(n)
        self._next_suffix: dict[str, int] = {}
        # Called with each node an edit may have made rewritable (the rewrite engine's
        # worklist listens here): a new node, a node whose inputs changed, a producer that
        # lost a reader, and the one node left reading a value.
        self.on_change: Callable[[Node], None] | None = None

    def __contains__(self, node: object) -> bool:
        return node in self.nodes

    # -- construction -----------------------------------------------------------------

    def fresh_name(self, base: str) -> str:
        """A name no value or node of this graph has, derived from ``base``."""
        base = _NAME_SAFE.sub("_", base) or "v"
        if base[0].isdigit():
            base = "_" + base
        name, i = base, self._next_suffix.get(base, 1)
        if name in self._names:
            while f"{base}_{i}" in self._names:
                i += 1
            name = f"{base}_{i}"
            self._next_suffix[base] = i + 1
        self._names.add(name)
        return name

    def claim_name(self, name: str) -> None:
        """Mark ``name`` as taken by a value or node built elsewhere (a copy, a loaded one)."""
        self._names.add(name)

    def rename(self, value: Value, name: str) -> None:
        """Give ``value`` the name ``name``, or a fresh variant of it if another value has it."""
        self._names.discard(value.name)
        value.name = self.fresh_name(name)

    def add_input(self, name: str, type: TensorType) -> Value:
        value = Value(self.fresh_name(name), type)
        self.inputs.append(value)
        return value

    def add_constant(self, name: str, data: np.ndarray) -> Value:
        data = np.asarray(data)
        value = Value(
            self.fresh_name(name), TensorType(dtypes.from_numpy(data.dtype), data.shape), data
        )
        self.constants[value.name] = value
        return value

    def add_node(
        self,
        op: str,
        inputs: Sequence[Value | None],
        attrs: dict[str, Any] | None = None,
        output_types: Sequence[TensorType] | None = None,
        name: str | None = None,
        before: Node | None = None,
    ) -> Node:
        """Append a node (or insert it before ``before``); infer output types if not given."""

        attrs = dict(attrs or {})
        node_name = self.fresh_name(name or op)
        if output_types is None:
            output_types = op_record(op).infer(list(inputs), attrs)
        outputs = []
        for i, t in enumerate(output_types):
            out = Value(node_name if i == 0 else self.fresh_name(f"{node_name}_{i}"), t)
            outputs.append(out)
        node = Node(op, node_name, inputs, attrs, outputs)
        self._link(node, before)
        return node

    def add_existing_node(self, node: Node, before: Node | None = None) -> Node:
        """Add a node built elsewhere (a copy, a loaded one), keeping its names and types:
        its names are taken, its inputs list it as a user and its outputs as producer."""
        self._names.add(node.name)
        for out in node.outputs:
            self._names.add(out.name)
        self._link(node, before)
        return node

    def _link(self, node: Node, before: Node | None) -> None:
        for v in node.present_inputs():
            v.users.append(node)
        for out in node.outputs:
            out.producer = node
        if before is None:
            self.nodes.append(node)
        else:
            self.nodes.insert_before(node, before)
        if self.on_change is not None:
            self.on_change(node)

    # -- editing ----------------------------------------------------------------------

    def replace_all_uses(self, old: Value, new: Value) -> None:
        """Make every reader of ``old`` (nodes and graph outputs) read ``new``."""
        if old is new:
            return
        readers = old.users.distinct()
        for user in readers:
            count = old.users.count(user)
            user.inputs = [new if v is old else v for v in user.inputs]
            for _ in range(count):
                new.users.append(user)
        old.users.clear()
        if any(v is old for v in self.outputs):
            self.outputs = [new if v is old else v for v in self.outputs]
        if self.on_change is not None:
            for user in readers:
                self.on_change(user)
            self._lost_reader(old)

    def set_input(self, node: Node, index: int, value: Value | None) -> None:
        old = node.inputs[index]
        if old is not None:
            old.users.remove(node)
        node.inputs[index] = value
        if value is not None:
            value.users.append(node)
        if self.on_change is not None:
            self.on_change(node)
            if old is not None:
                self._lost_reader(old)

    def remove_node(self, node: Node) -> None:
        """Remove a node whose outputs nobody reads."""
        for out in node.outputs:
            if out.users or out in self.outputs:
                raise IRVerificationError(f"cannot remove {node.name}: {out.name} is still used")
        for v in node.present_inputs():
            v.users.remove(node)
        self.nodes.remove(node)
        for v in node.present_inputs():
            if v.is_constant and not v.users and v not in self.outputs:
                self.constants.pop(v.name, None)
            elif self.on_change is not None:
                self._lost_reader(v)

    def _lost_reader(self, value: Value) -> None:
        # Its producer may now be dead, and a last remaining reader may now fuse with it.
        if value.producer is not None and value.producer in self.nodes:
            self.on_change(value.producer)
        last = value.users.only()
        if last is not None:
            self.on_change(last)

    def extract(
        self, nodes: Sequence[Node], inputs: Sequence[Value], outputs: Sequence[Value], name: str
    ) -> Graph:
        """A new graph of copies of ``nodes`` computing ``outputs`` from ``inputs``.

        Values and nodes keep their names, so a partition's boundary tensors are found by
        name in both graphs; constants the nodes read come along (their arrays are shared,
        not copied).
        """
        sub = Graph(name)
        sub.symbols = dict(self.symbols)
        copies: dict[int, Value] = {}

        def copy(v: Value) -> Value:
            c = Value(v.name, v.type, v.data)
            sub.claim_name(v.name)
            copies[id(v)] = c
            return c

        for v in inputs:
            sub.inputs.append(copy(v))
        for node in nodes:
            ins: list[Value | None] = []
            for v in node.inputs:
                if v is not None and id(v) not in copies:
                    if not v.is_constant:
                        raise IRVerificationError(
                            f"cannot extract {node.name}: it reads {v.name}, which is "
                            "neither an input of the new graph nor computed in it"
                        )
                    sub.constants[v.name] = copy(v)
                ins.append(None if v is None else copies[id(v)])
            sub.add_existing_node(
                Node(node.op, node.name, ins, node.attrs, [copy(o) for o in node.outputs])
            )
        sub.outputs = [copies[id(v)] for v in outputs]
        return sub

    # -- analysis ---------------------------------------------------------------------

    def values(self) -> Iterator[Value]:
        yield from self.inputs
        yield from self.constants.values()
        for node in self.nodes:
            yield from node.outputs

    def to_networkx(self) -> Any:
        """A DiGraph over node names; edge data ``values`` lists the tensors passed."""
        import networkx as nx

        g = nx.DiGraph()
        for node in self.nodes:
            g.add_node(node.name, node=node)
        for node in self.nodes:
            for v in node.present_inputs():
                if v.producer is not None:
                    data = g.get_edge_data(v.producer.name, node.name)
                    if data is None:
                        g.add_edge(v.producer.name, node.name, values=[v.name])
                    elif v.name not in data["values"]:
                        data["values"].append(v.name)
        return g

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for node in self.nodes:
            counts[node.op] = counts.get(node.op, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def weight_bytes(self) -> int:
        return int(sum(v.data.nbytes for v in self.constants.values()))

    # -- checking ---------------------------------------------------------------------

    def verify(self, check_types: bool = True) -> None:
        """Raise IRVerificationError naming the first broken invariant.

        Checks: names unique; every input defined before use; producer/user links
        agree; every op has a record; recorded output types equal what the record infers.
        """

        defined: set[int] = set()
        seen_names: set[str] = set()
        # Dynamic dimensions are checked at their traced sizes, where the rule runs on
        # plain meta tensors: symbolic inference on every node would cost seconds.
        examples = {n: sym.example for n, sym in self.symbols.items() if sym.example is not None}

        def define(v: Value) -> None:
            if v.name in seen_names:
                raise IRVerificationError(f"value name {v.name!r} is defined twice")
            seen_names.add(v.name)
            defined.add(id(v))

        for v in self.inputs:
            if v.producer is not None or v.is_constant:
                raise IRVerificationError(f"graph input {v.name} has a producer or data")
            define(v)
        for name, v in self.constants.items():
            if v.name != name or not v.is_constant:
                raise IRVerificationError(f"constant {name} is malformed")
            define(v)
        for node in self.nodes:
            for v in node.present_inputs():
                if id(v) not in defined:
                    raise IRVerificationError(
                        f"node {node.name} ({node.op}) reads {v.name} before it is defined"
                    )
                if node.inputs.count(v) != v.users.count(node):
                    raise IRVerificationError(
                        f"{v.name} is read {node.inputs.count(v)} time(s) by {node.name} "
                        f"but lists it {v.users.count(node)} time(s) as a user"
                    )
            record = op_record(node.op)
            for out in node.outputs:
                if out.producer is not node:
                    raise IRVerificationError(f"{out.name} does not name {node.name} as producer")
                define(out)
            if check_types and _is_symbolic(node) and _symbols_of(node) <= examples.keys():
                _check_at_sizes(node, record, examples)
            elif check_types:
                try:
                    inferred = record.infer(node.inputs, node.attrs)
                except Specialised:
                    # The rule holds only at the traced sizes; the export's own shapes
                    # (already recorded) are the truth, and the lowering refuses it.
                    continue
                recorded = [o.type for o in node.outputs]
                if list(inferred) != recorded and not _same_types(inferred, recorded):
                    raise IRVerificationError(
                        f"node {node.name} ({node.op}): recorded types "
                        f"{', '.join(map(str, recorded))} but the op infers "
                        f"{', '.join(map(str, inferred))}"
                    )
        for v in self.values():
            for user in v.users:
                if v not in user.inputs:
                    raise IRVerificationError(f"{v.name} lists {user.name} as user but is not read")
        for v in self.outputs:
            if id(v) not in defined:
                raise IRVerificationError(f"graph output {v.name} is not defined")

    # -- printing ---------------------------------------------------------------------

    def __str__(self) -> str:
        ins = ", ".join(repr(v) for v in self.inputs)
        lines = [f"graph {self.name}({ins}) {{"]
        for v in self.constants.values():
            lines.append(f"  const %{v.name}: {v.type}")
        for node in self.nodes:
            outs = ", ".join(repr(o) for o in node.outputs)
            args = ", ".join("None" if v is None else f"%{v.name}" for v in node.inputs)
            attrs = "".join(f" {k}={_format_attr(a)}" for k, a in node.attrs.items())
            lines.append(f"  {outs} = {node.op}({args}){attrs}")
        lines.append(f"  return {', '.join('%' + v.name for v in self.outputs)}")
        lines.append("}")
        return "\n".join(lines)


def _format_attr(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "[" + ",".join(_format_attr(v) for v in value) + "]"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def _is_symbolic(node: Node) -> bool:
    from coreml_compile.compiler import symbolic

    return symbolic.has_expr(node.attrs) or not all(
        v.type.is_static for v in [*node.present_inputs(), *node.outputs]
    )


def _symbols_of(node: Node) -> set[str]:
    from coreml_compile.compiler import symbolic

    found = symbolic.expr_names(node.attrs)
    for v in [*node.present_inputs(), *node.outputs]:
        for d in v.type.shape:
            found |= symbolic.names(d)
    return found


def _check_at_sizes(node: Node, record: Any, examples: dict[str, int]) -> None:
    """The record's rule agrees with the recorded types at the traced sizes."""
    from coreml_compile.compiler import symbolic

    def at(t: TensorType) -> TensorType:
        return TensorType(t.dtype, tuple(symbolic.evaluate(d, examples) for d in t.shape))

    inputs = [None if v is None else Value(v.name, at(v.type)) for v in node.inputs]
    attrs = symbolic.resolve(node.attrs, examples)
    inferred = record.infer(inputs, attrs)
    recorded = [at(o.type) for o in node.outputs]
    if list(inferred) != recorded:
        raise IRVerificationError(
            f"node {node.name} ({node.op}): recorded types "
            f"{', '.join(str(o.type) for o in node.outputs)} are "
            f"{', '.join(map(str, recorded))} at the traced sizes, but the op infers "
            f"{', '.join(map(str, inferred))}"
        )


def op_record(name: str) -> Any:
    """The op table's record of ``name``: its type rule is ``infer(inputs, attrs)``.

    Imported on use: the table is built on the IR's types (compiler/tensor_type.py),
    and the IR needs it only to infer and check types."""
    from coreml_compile.compiler.ops import get_record

    return get_record(name)


def _same_types(a: Sequence[TensorType], b: Sequence[TensorType]) -> bool:
    """Equal types, dimensions compared as expressions (``2*s0`` is ``s0*2``)."""
    from coreml_compile.compiler import symbolic

    return len(a) == len(b) and all(
        x.dtype == y.dtype
        and x.rank == y.rank
        and all(symbolic.equal(p, q) for p, q in zip(x.shape, y.shape, strict=True))
        for x, y in zip(a, b, strict=True)
    )


def topological_order(nodes: Iterable[Node]) -> list[Node]:
    """Nodes sorted so producers come first; ties keep the given order (deterministic)."""
    import networkx as nx

    nodes = list(nodes)
    position = {id(n): i for i, n in enumerate(nodes)}
    g = nx.DiGraph()
    for n in nodes:
        g.add_node(position[id(n)])
        for v in n.present_inputs():
            if v.producer is not None and id(v.producer) in position:
                g.add_edge(position[id(v.producer)], position[id(n)])
    return [nodes[i] for i in nx.lexicographical_topological_sort(g)]
