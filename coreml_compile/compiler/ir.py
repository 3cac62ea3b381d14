"""The IR: a typed SSA graph of Values and Nodes.

- A ``Value`` is produced once: by a node, or it is a graph input, or a constant
  (a numpy array in ``Value.data``). It knows its producer and its users, so a rewrite
  edits the graph in place instead of rebuilding it.
- A ``Node`` applies one op of the op table (``node.op`` names its record) to input
  Values and attributes; optional inputs that are absent are ``None``.
- ``Graph.nodes`` is kept in a topological order that only changes when a pass asks,
  so printing, lowering and saving are deterministic.

Dimensions are ints, or strings naming a symbolic dimension ("batch", "seq"): the
frontends fill them in, so dynamic shapes fit without changing these types.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from coreml_compile.compiler import dtypes
from coreml_compile.errors import IRVerificationError

Dim = int | str


@dataclass(frozen=True)
class TensorType:
    dtype: str
    shape: tuple[Dim, ...]

    def __post_init__(self) -> None:
        if self.dtype not in dtypes.NUMPY:
            raise ValueError(f"unknown dtype {self.dtype!r}")
        object.__setattr__(self, "shape", tuple(self.shape))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    def numel(self) -> int:
        if not self.is_static:
            raise ValueError(f"{self} has symbolic dimensions")
        return int(np.prod(self.shape, dtype=np.int64))

    def __str__(self) -> str:
        return f"{dtypes.SHORT[self.dtype]}[{','.join(str(d) for d in self.shape)}]"


class Value:
    """An SSA value: a graph input, a constant, or one output of a node."""

    __slots__ = ("name", "type", "producer", "users", "data")

    def __init__(self, name: str, type: TensorType, data: np.ndarray | None = None):
        self.name = name
        self.type = type
        self.producer: Node | None = None
        # A node that reads this value twice appears twice: removing one use is exact.
        self.users: list[Node] = []
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


class Graph:
    """A computation: inputs, constants, nodes in topological order, outputs."""

    def __init__(self, name: str = "main"):
        self.name = name
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.nodes: list[Node] = []
        self.constants: dict[str, Value] = {}
        self._names: set[str] = set()

    # -- construction -----------------------------------------------------------------

    def fresh_name(self, base: str) -> str:
        """A name no value or node of this graph has, derived from ``base``."""
        base = _NAME_SAFE.sub("_", base) or "v"
        if base[0].isdigit():
            base = "_" + base
        name, i = base, 1
        while name in self._names:
            name = f"{base}_{i}"
            i += 1
        self._names.add(name)
        return name

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
        from coreml_compile.compiler.ops import get_record

        attrs = dict(attrs or {})
        node_name = self.fresh_name(name or op)
        if output_types is None:
            output_types = get_record(op).infer(list(inputs), attrs)
        outputs = []
        for i, t in enumerate(output_types):
            out = Value(node_name if i == 0 else self.fresh_name(f"{node_name}_{i}"), t)
            outputs.append(out)
        node = Node(op, node_name, inputs, attrs, outputs)
        for v in node.present_inputs():
            v.users.append(node)
        for out in outputs:
            out.producer = node
        if before is None:
            self.nodes.append(node)
        else:
            self.nodes.insert(self.nodes.index(before), node)
        return node

    # -- editing ----------------------------------------------------------------------

    def replace_all_uses(self, old: Value, new: Value) -> None:
        """Make every reader of ``old`` (nodes and graph outputs) read ``new``."""
        for user in old.users:
            user.inputs = [new if v is old else v for v in user.inputs]
            new.users.append(user)
        old.users = []
        self.outputs = [new if v is old else v for v in self.outputs]

    def set_input(self, node: Node, index: int, value: Value | None) -> None:
        old = node.inputs[index]
        if old is not None:
            old.users.remove(node)
        node.inputs[index] = value
        if value is not None:
            value.users.append(node)

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

    def extract(
        self, nodes: Sequence[Node], inputs: Sequence[Value], outputs: Sequence[Value], name: str
    ) -> Graph:
        """A new graph of copies of ``nodes`` computing ``outputs`` from ``inputs``.

        Values and nodes keep their names, so a partition's boundary tensors are found by
        name in both graphs; constants the nodes read come along (their arrays are shared,
        not copied).
        """
        sub = Graph(name)
        copies: dict[int, Value] = {}

        def copy(v: Value) -> Value:
            c = Value(v.name, v.type, v.data)
            sub._names.add(v.name)
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
            new = Node(node.op, node.name, ins, node.attrs, [copy(o) for o in node.outputs])
            sub._names.add(node.name)
            for v in new.present_inputs():
                v.users.append(new)
            for out in new.outputs:
                out.producer = new
            sub.nodes.append(new)
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
        from coreml_compile.compiler.ops import get_record

        defined: set[int] = set()
        seen_names: set[str] = set()

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
            record = get_record(node.op)
            for out in node.outputs:
                if out.producer is not node:
                    raise IRVerificationError(f"{out.name} does not name {node.name} as producer")
                define(out)
            if check_types:
                inferred = record.infer(node.inputs, node.attrs)
                recorded = [o.type for o in node.outputs]
                if list(inferred) != recorded:
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
