"""Rewrite tensors of rank above 5 (Core ML's limit) as equivalent ones of rank <= 5.

Axes that stay next to each other, in order, through everything a tensor goes through
can be merged into one. Swin's window partition is the main case:

    %v = reshape(%x: [2,8,8,3]) shape=[2,2,4,2,4,3]
    %p = permute(%v) dims=[0,1,3,2,4,5]                    (rank 6)
    %w = reshape(%p) shape=[-1,4,4,3]
        ⇒   %v = reshape(%x) shape=[4,4,2,12]             (axes 0+1 and 4+5 merged)
            %p = permute(%v) dims=[0,2,1,3]
            %w = reshape(%p) shape=[8,4,4,3]

In a ``reshape → permute → reshape`` chain, size-1 axes are dropped too, and when merging
still leaves more than 5 axes (a 3-D pixel shuffle moves 7 groups), the permutation is done
as a few rank-4 block swaps (``[pre, mid, moved, post] → [pre, moved, mid, post]``), each
moving a run of axes to its place.

Other rank > 5 values are lowered as a *region*: the values connected through reshapes,
permutes, element-wise ops, reductions and softmax. Each boundary between two axes of a
value is merged or kept, and the ops tie boundaries together (a permute ties the boundary
of two input axes to the one of the same axes in its output, if they stay adjacent, else
keeps both; an element-wise op (a record marked ``elementwise``) ties its inputs' and
output's boundaries, and keeps those between a broadcast axis and a full one; a reduction
keeps those between a reduced axis and a kept one; softmax keeps those around its axis).
Every boundary that nothing keeps is merged:

    %v = reshape(%x: [2,8,8,3]) shape=[2,2,4,2,4,3]
    %m = mean(%v) dim=[-1]                                 (rank 6 in, rank 5 out)
        ⇒   %v = reshape(%x) shape=[128,3]
            %m = mean(%v) dim=[1]
            %r = reshape(%m) shape=[2,2,4,2,4]

A region is rewritten whole or not at all: if a value still has more than 5 groups, or a
rank > 5 value is a graph input or output, has symbolic dimensions, or meets an op this
pass does not know, it is left as it is (and falls back to torch, saying why).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from coreml_compile.compiler.ir import Graph, Node, Value
from coreml_compile.compiler.ops import MAX_RANK, get_record
from coreml_compile.compiler.ops._helpers import normalize_axes
from coreml_compile.passes import register_pass
from coreml_compile.passes._rewrite import drop_dead, forward, new_constant, replace_with_node

_RESHAPES = ("reshape", "flatten", "squeeze", "unsqueeze")
_PERMUTES = ("permute", "transpose")
# One value in, the same value out: looked through between a permute and its reshapes.
_PASS_THROUGH = ("identity",)
# Reductions that give the same result over two adjacent axes as over their merge.
_REDUCTIONS = frozenset({"sum", "mean", "amax", "amin", "all", "any"})
# Ops along one axis (``dim``): that axis must stay whole and alone.
_ALONG_AXIS = frozenset({"softmax", "log_softmax", "safe_softmax"})


def _high(value: Value | None) -> bool:
    return value is not None and value.type.rank > MAX_RANK


def _prod(sizes: Sequence[int]) -> int:
    return math.prod(sizes)


def _perm(node: Node) -> list[int]:
    rank = node.inputs[0].type.rank
    if node.op == "permute":
        return [d % rank for d in node.attrs["dims"]]
    perm = list(range(rank))
    a, b = node.attrs["dim0"] % rank, node.attrs["dim1"] % rank
    perm[a], perm[b] = perm[b], perm[a]
    return perm


@register_pass("lower_rank")
def lower_rank(graph: Graph) -> bool:
    changed = False
    for node in list(graph.nodes):
        if node.op in _PERMUTES and _high(node.inputs[0]) and node in graph.nodes:
            changed |= _lower_permute_chain(graph, node)
    changed |= _split_shared_reshapes(graph)
    for values, nodes in _regions(graph):
        changed |= _lower_region(graph, values, nodes)
    return changed


# -- reshape → permute → reshape chains --------------------------------------------------


def _lower_permute_chain(graph: Graph, node: Node) -> bool:
    src = node.inputs[0]
    entry = src.producer
    if entry is None or entry.op not in _RESHAPES:
        return False
    x = entry.inputs[0]
    ends = _reshape_readers(graph, node.output)
    if ends is None or not all(v.type.is_static for v in [x, src, *(e.output for e in ends)]):
        return False
    sizes, group_perm = _merge_axes(src.type.shape, _perm(node))
    current = x
    for shape, dims in _transpose_steps(sizes, group_perm):
        if tuple(current.type.shape) != tuple(shape):
            current = graph.add_node(
                "reshape", [current], {"shape": list(shape)}, name=entry.name, before=node
            ).output
        current = graph.add_node(
            "permute", [current], {"dims": list(dims)}, name=node.name, before=node
        ).output
    for end in ends:
        target = end.output
        if current.type != target.type or not forward(graph, target, current):
            attrs = {"shape": list(target.type.shape)}
            replace_with_node(graph, target, "reshape", [current], attrs, before=end)
    drop_dead(graph, current.producer)  # unread if every end was the input's own shape
    return True


def _reshape_readers(graph: Graph, value: Value) -> list[Node] | None:
    """The reshapes that read ``value`` (through identities), or None if anything else does."""
    ends: dict[int, Node] = {}
    work = [value]
    while work:
        v = work.pop()
        if v in graph.outputs or not v.users:
            return None
        for user in v.users:
            if user.op in _RESHAPES:
                ends[id(user)] = user
            elif user.op in _PASS_THROUGH:
                work.append(user.output)
            else:
                return None
    return list(ends.values())


def _merge_axes(shape: Sequence[int], perm: Sequence[int]) -> tuple[list[int], list[int]]:
    """Sizes of the groups of input axes that stay together and in order through ``perm``
    (size-1 axes dropped), and the permutation of those groups."""
    kept = [a for a in range(len(shape)) if shape[a] != 1]
    position = {a: i for i, a in enumerate(kept)}
    runs: list[list[int]] = []
    for a in perm:
        if shape[a] == 1:
            continue
        if runs and position[a] == position[runs[-1][-1]] + 1:
            runs[-1].append(a)
        else:
            runs.append([a])
    groups = sorted(runs, key=lambda run: run[0])
    sizes = [_prod([shape[a] for a in g]) for g in groups]
    return sizes, [groups.index(run) for run in runs]


def _transpose_steps(
    sizes: Sequence[int], group_perm: Sequence[int]
) -> list[tuple[list[int], list[int]]]:
    """(shape, dims) permutes of rank <= MAX_RANK that together move groups by ``group_perm``."""
    n = len(group_perm)
    if group_perm == list(range(n)):
        return []
    if n <= MAX_RANK:
        return [(list(sizes), list(group_perm))]
    steps = []
    current = list(range(n))
    for j in range(n):
        if current[j] == group_perm[j]:
            continue
        i = current.index(group_perm[j])
        length = 1
        while i + length < n and current[i + length] == group_perm[j + length]:
            length += 1
        # [pre, mid, moved, post] -> [pre, moved, mid, post]
        blocks = [current[:j], current[j:i], current[i : i + length], current[i + length :]]
        present = [k for k, block in enumerate(blocks) if block]
        shape = [_prod([sizes[g] for g in blocks[k]]) for k in present]
        dims = [present.index(k) for k in (0, 2, 1, 3) if blocks[k]]
        steps.append((shape, dims))
        current = blocks[0] + blocks[2] + blocks[1] + blocks[3]
    return steps


# -- regions of rank > 5 values -----------------------------------------------------------


def _split_shared_reshapes(graph: Graph) -> bool:
    """Give each reader of a rank > 5 reshape its own copy, so that one reader's needs
    (``v.mean(-1)`` merges all but the last axis) do not limit another's (``v.sum(2)``)."""
    changed = False
    for node in list(graph.nodes):
        out = node.outputs[0] if node.op in _RESHAPES else None
        if out is None or not _high(out) or out in graph.outputs:
            continue
        readers = list({id(u): u for u in out.users}.values())
        for reader in readers[1:]:
            copy = graph.add_node(
                node.op, node.inputs, node.attrs, [out.type], name=node.name, before=node
            )
            for i, v in enumerate(reader.inputs):
                if v is out:
                    graph.set_input(reader, i, copy.output)
            changed = True
    return changed


def _regions(graph: Graph) -> list[tuple[list[Value], list[Node]]]:
    """Connected groups of rank > 5 values, with every node that reads or writes one."""
    parent: dict[int, int] = {}
    values: dict[int, Value] = {}

    def find(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    touching = []
    for v in graph.values():
        if _high(v):
            parent[id(v)] = id(v)
            values[id(v)] = v
    for node in graph.nodes:
        high = [v for v in [*node.present_inputs(), *node.outputs] if _high(v)]
        if high:
            touching.append(node)
            for v in high[1:]:
                parent[find(id(v))] = find(id(high[0]))
    regions: dict[int, tuple[list[Value], list[Node]]] = {}
    for k, v in values.items():
        regions.setdefault(find(k), ([], []))[0].append(v)
    for node in touching:
        v = next(v for v in [*node.present_inputs(), *node.outputs] if _high(v))
        regions[find(id(v))][1].append(node)
    return list(regions.values())


class _Boundaries:
    """Union-find over (value, i) — the boundary between axes i and i+1 — with a keep flag."""

    def __init__(self) -> None:
        self.parent: dict[tuple[int, int], tuple[int, int]] = {}
        self.kept: set[tuple[int, int]] = set()

    def _find(self, key: tuple[int, int]) -> tuple[int, int]:
        self.parent.setdefault(key, key)
        while self.parent[key] != key:
            self.parent[key] = self.parent[self.parent[key]]
            key = self.parent[key]
        return key

    def tie(self, a: Value, i: int, b: Value, j: int) -> None:
        ra, rb = self._find((id(a), i)), self._find((id(b), j))
        if ra != rb:
            self.parent[ra] = rb
            if ra in self.kept:
                self.kept.add(rb)

    def keep(self, v: Value, i: int) -> None:
        if 0 <= i < v.type.rank - 1:
            self.kept.add(self._find((id(v), i)))

    def groups(self, v: Value) -> list[list[int]]:
        """v's axes in runs: a new run starts after each kept boundary."""
        runs = [[0]]
        for i in range(v.type.rank - 1):
            if self._find((id(v), i)) in self.kept:
                runs.append([i + 1])
            else:
                runs[-1].append(i + 1)
        return runs


def _constrain(node: Node, b: _Boundaries) -> bool:
    """Tie and keep the boundaries ``node`` needs; False if this pass cannot rewrite it."""
    ins = list(node.present_inputs())
    out = node.outputs[0] if len(node.outputs) == 1 else None
    if out is None:
        return False
    if node.op in _RESHAPES:
        return True  # a reshape is free: any grouping of either side reshapes to the other
    if node.op in _PERMUTES:
        x, perm = ins[0], _perm(node)
        rank = len(perm)
        where = {a: j for j, a in enumerate(perm)}
        for j in range(rank - 1):
            if perm[j + 1] == perm[j] + 1:
                b.tie(out, j, x, perm[j])
            else:
                b.keep(out, j)
        for i in range(rank - 1):
            if where[i] + 1 >= rank or perm[where[i] + 1] != i + 1:
                b.keep(x, i)
        return True
    if get_record(node.op).elementwise:
        if not _high(out):
            return False
        rank, shape = out.type.rank, out.type.shape
        for u in ins:
            offset = rank - u.type.rank
            if _high(u) and offset != 0:
                return False
            # A size-1 output axis counts as full: letting it join either kind would let a
            # group span a broadcast axis and a full one through it.
            kinds = ["full" if _size(u, a - offset) == shape[a] else "bcast" for a in range(rank)]
            for i in range(rank - 1):
                if {kinds[i], kinds[i + 1]} == {"full", "bcast"}:
                    b.keep(out, i)
                if _high(u):
                    b.tie(u, i, out, i)
        return True
    if node.op in _REDUCTIONS:
        x = ins[0]
        if not _high(x):
            return False
        rank = x.type.rank
        axes = set(normalize_axes(node.attrs["dim"], rank))
        for i in range(rank - 1):
            if (i in axes) != (i + 1 in axes):
                b.keep(x, i)
        if _high(out):
            if node.attrs["keepdim"]:
                for i in range(rank - 1):
                    b.tie(x, i, out, i)
            else:
                rest = [a for a in range(rank) if a not in axes]
                for k in range(len(rest) - 1):
                    if rest[k + 1] == rest[k] + 1:
                        b.tie(x, rest[k], out, k)
                    else:
                        b.keep(out, k)
        return True
    if node.op in _ALONG_AXIS:
        x = ins[0]
        rank = x.type.rank
        axis = node.attrs["dim"] % rank
        b.keep(x, axis - 1)
        b.keep(x, axis)
        for i in range(rank - 1):
            b.tie(x, i, out, i)
        return True
    return False


def _size(u: Value, axis: int) -> int:
    return u.type.shape[axis] if axis >= 0 else 1


def _lower_region(graph: Graph, values: list[Value], nodes: list[Node]) -> bool:
    for v in values:
        if v in graph.inputs or v in graph.outputs or not v.type.is_static:
            return False
    if any(not v.type.is_static for n in nodes for v in [*n.present_inputs(), *n.outputs]):
        return False
    b = _Boundaries()
    if not all(_constrain(node, b) for node in nodes):
        return False
    groups = {id(v): b.groups(v) for v in values}
    if any(len(g) > MAX_RANK for g in groups.values()):
        return False

    def grouped_shape(v: Value) -> list[int]:
        return [_prod([v.type.shape[a] for a in g]) for g in groups[id(v)]]

    new: dict[int, Value] = {}
    for v in values:
        if v.is_constant:
            new[id(v)] = new_constant(graph, v.name, v.data.reshape(grouped_shape(v)))

    def operand(v: Value | None) -> Value | None:
        return None if v is None else new[id(v)] if _high(v) else v

    for node in nodes:
        out = node.output
        target = grouped_shape(out) if _high(out) else list(out.type.shape)
        ins = [operand(v) for v in node.inputs]
        attrs = dict(node.attrs)
        op = node.op
        if op in _RESHAPES:
            op, attrs = "reshape", {"shape": target}
        elif op in _PERMUTES:
            x = node.inputs[0]
            starts = [g[0] for g in groups[id(x)]]
            perm = _perm(node)
            op, attrs = "permute", {"dims": [starts.index(perm[g[0]]) for g in groups[id(out)]]}
        elif get_record(op).elementwise:
            ins = [
                new[id(u)] if _high(u) else _broadcast_operand(graph, u, node, groups[id(out)])
                for u in node.inputs
            ]
        elif op in _REDUCTIONS or op in _ALONG_AXIS:
            x = node.inputs[0]
            axes = normalize_axes(attrs["dim"], x.type.rank)
            reduced = [k for k, g in enumerate(groups[id(x)]) if g[0] in axes]
            attrs["dim"] = reduced if op in _REDUCTIONS else reduced[0]
        result = graph.add_node(op, ins, attrs, name=node.name, before=node).output
        if _high(out) and list(result.type.shape) != target:
            raise RuntimeError(f"lower_rank: {node.name} gives {result.type}, not {target}")
        if list(result.type.shape) != target:  # leaving the region: back to the old shape
            result = graph.add_node(
                "reshape", [result], {"shape": list(target)}, name=node.name, before=node
            ).output
        if _high(out):
            new[id(out)] = result
        else:
            forward(graph, out, result)
    for node in reversed(nodes):
        drop_dead(graph, node)
    return True


def _broadcast_operand(
    graph: Graph, u: Value | None, node: Node, out_groups: list[list[int]]
) -> Value | None:
    """A low-rank operand of an element-wise op reshaped to the output's grouped axes."""
    if u is None or u.type.rank == 0:
        return u  # scalars broadcast as they are
    offset = node.output.type.rank - u.type.rank
    shape = [_prod([_size(u, a - offset) for a in g]) for g in out_groups]
    while len(shape) > u.type.rank and shape[0] == 1:
        shape.pop(0)  # leading 1s broadcast anyway
    if list(u.type.shape) == shape:
        return u
    if u.is_constant:
        return new_constant(graph, u.name, u.data.reshape(shape))
    return graph.add_node(
        "reshape", [u], {"shape": shape}, name=f"{u.name}_grouped", before=node
    ).output
