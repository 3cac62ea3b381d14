"""Partitioning: which nodes go to Core ML, grouped into as few partitions as possible.

Every node is asked the one support question (``compiler.ops.unsupported_reason``);
the partitioner knows nothing about individual ops. Nodes are grouped by kind (Core ML
or fallback) and by how many kind changes lie on the longest path that reaches them:

    level(n) = max over producers p of level(p) + (kind(p) != kind(n))

Nodes of one kind and one level form one group. Groups built this way can be contracted
without creating a cycle (a path that leaves a group and comes back would change kind
twice, so its end would sit two levels higher), and ordering them by level is a valid
execution order. Groups of one kind are then merged wherever no path between them runs
through a third group, so that the partitions are maximal.

Whether a small Core ML partition between fallbacks is worth its two hand-offs is the
strategy's call (``compiler/strategy.py``); one that is not is run as fallback instead,
and the groups are formed again.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from coreml_compile.compiler.ir import Graph, Node, Value
from coreml_compile.compiler.ops import unsupported_reason
from coreml_compile.compiler.strategy import HybridExecutionStrategy

COREML = "coreml"
FALLBACK = "fallback"


@dataclass
class Partition:
    index: int
    kind: str
    nodes: list[Node]
    # Values the partition reads from outside it (graph inputs or earlier partitions);
    # constants are not listed: each partition carries the constants it reads.
    inputs: list[Value] = field(default_factory=list)
    # Values later partitions or the graph's outputs read.
    outputs: list[Value] = field(default_factory=list)
    # For fallback partitions: why each node could not go to Core ML.
    reasons: dict[str, str] = field(default_factory=dict)
    # For Core ML partitions: why the strategy kept it there (empty if it is the model).
    decision: str = ""

    @property
    def name(self) -> str:
        return f"partition_{self.index}"


@dataclass
class Plan:
    partitions: list[Partition]

    @property
    def coreml_share(self) -> float:
        total = sum(len(p.nodes) for p in self.partitions)
        on_core_ml = sum(len(p.nodes) for p in self.partitions if p.kind == COREML)
        return on_core_ml / total if total else 1.0


def _levels(graph: Graph, kind: dict[int, str]) -> dict[int, int]:
    level: dict[int, int] = {}
    for node in graph.nodes:  # the IR keeps nodes in topological order
        best = 0
        for v in node.present_inputs():
            p = v.producer
            if p is not None:
                best = max(best, level[id(p)] + (kind[id(p)] != kind[id(node)]))
        level[id(node)] = best
    return level


def _groups(graph: Graph, kind: dict[int, str]) -> list[tuple[str, list[Node]]]:
    """Partitions in execution order: (kind, nodes in graph order)."""
    level = _levels(graph, kind)
    position = {id(n): i for i, n in enumerate(graph.nodes)}
    grouped: dict[tuple[int, str], list[Node]] = {}
    for node in graph.nodes:
        grouped.setdefault((level[id(node)], kind[id(node)]), []).append(node)
    # Core ML first among groups of one level: they are independent, and Core ML's
    # results are then ready for the fallback groups of the next level.
    order = sorted(grouped, key=lambda key: (key[0], key[1] != COREML))
    groups = [(k, grouped[(lvl, k)]) for lvl, k in order]
    groups = _merge(groups, position)
    for _k, nodes in groups:
        nodes.sort(key=lambda n: position[id(n)])
    return groups


def _merge(
    groups: list[tuple[str, list[Node]]], position: dict[int, int]
) -> list[tuple[str, list[Node]]]:
    """Merge groups of one kind wherever no path between them leaves the kind.

    Grouping by level runs every node as early as it can, which can split work that
    could run as one partition: a Core ML branch that does not depend on a fallback
    lands before it, away from the Core ML work after it. Two groups can merge unless
    a path from one to the other passes through a third group (contracting them would
    then make a cycle); reachability is kept as bitsets over the groups.
    """
    members = [list(nodes) for _k, nodes in groups]
    kinds = [k for k, _nodes in groups]
    while True:
        succ = _successors(members)
        order = _topological(succ, [min(position[id(n)] for n in m) for m in members])
        renumber = {old: new for new, old in enumerate(order)}
        members = [members[g] for g in order]
        kinds = [kinds[g] for g in order]
        succ = [{renumber[h] for h in succ[g]} for g in order]
        # Groups are now in a topological order: reach[g] has bit h if g reaches h.
        reach = [0] * len(members)
        for g in reversed(range(len(members))):
            bits = 1 << g
            for h in succ[g]:
                bits |= reach[h]
            reach[g] = bits
        pair = _mergeable_pair(kinds, succ, reach)
        if pair is None:
            return list(zip(kinds, members, strict=True))
        a, b = pair
        members[a].extend(members.pop(b))
        kinds.pop(b)


def _successors(members: list[list[Node]]) -> list[set[int]]:
    owner = {id(n): g for g, nodes in enumerate(members) for n in nodes}
    succ: list[set[int]] = [set() for _ in members]
    for g, nodes in enumerate(members):
        for node in nodes:
            for out in node.outputs:
                for user in out.users:
                    if owner[id(user)] != g:
                        succ[g].add(owner[id(user)])
    return succ


def _topological(succ: list[set[int]], key: list[int]) -> list[int]:
    """A topological order of the groups; among ready groups, the smallest key first."""
    indegree = [0] * len(succ)
    for targets in succ:
        for h in targets:
            indegree[h] += 1
    ready = [(key[g], g) for g in range(len(succ)) if indegree[g] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _key, g = heapq.heappop(ready)
        order.append(g)
        for h in succ[g]:
            indegree[h] -= 1
            if indegree[h] == 0:
                heapq.heappush(ready, (key[h], h))
    return order


def _mergeable_pair(
    kinds: list[str], succ: list[set[int]], reach: list[int]
) -> tuple[int, int] | None:
    for a in range(len(kinds)):
        for b in range(a + 1, len(kinds)):
            if kinds[a] != kinds[b]:
                continue
            # An indirect path a -> s -> ... -> b (s another group) forbids the merge.
            if not any(s != b and reach[s] >> b & 1 for s in succ[a]):
                return a, b
    return None


def partition(
    graph: Graph, generation: int, strategy: HybridExecutionStrategy | None = None
) -> Plan:
    """Split ``graph`` into Core ML and fallback partitions for a target generation."""
    strategy = strategy or HybridExecutionStrategy()
    reasons = {id(n): unsupported_reason(n, generation) for n in graph.nodes}
    kind = {id(n): FALLBACK if reasons[id(n)] else COREML for n in graph.nodes}
    while True:
        groups = _groups(graph, kind)
        # Why each Core ML group stays there (only asked when there is a fallback).
        kept: dict[int, str] = {}
        if len(groups) == 1:
            break
        demoted = False
        for i, (k, nodes) in enumerate(groups):
            if k != COREML:
                continue
            decision = strategy.keep_on_coreml(nodes)
            if decision.where == COREML:
                kept[i] = decision.reason
                continue
            demoted = True
            for node in nodes:
                kind[id(node)] = FALLBACK
                reasons[id(node)] = f"{node.op}: {decision.reason}"
        if not demoted:
            break
    partitions = [
        Partition(
            i,
            k,
            nodes,
            reasons={n.name: reasons[id(n)] for n in nodes if reasons[id(n)]},
            decision=kept.get(i, ""),
        )
        for i, (k, nodes) in enumerate(groups)
    ]
    _connect(graph, partitions)
    return Plan(partitions)


def _connect(graph: Graph, partitions: list[Partition]) -> None:
    """Fill in each partition's inputs and outputs."""
    owner = {id(n): p.index for p in partitions for n in p.nodes}
    graph_outputs = {id(v) for v in graph.outputs}
    for p in partitions:
        seen: set[int] = set()
        for node in p.nodes:
            for v in node.present_inputs():
                if v.is_constant or id(v) in seen:
                    continue
                if v.producer is None or owner[id(v.producer)] != p.index:
                    seen.add(id(v))
                    p.inputs.append(v)
        for node in p.nodes:
            for v in node.outputs:
                read_outside = any(owner[id(u)] != p.index for u in v.users)
                if read_outside or id(v) in graph_outputs:
                    p.outputs.append(v)


def check_acyclic(graph: Graph, plan: Plan) -> bool:
    """True if contracting each partition to one vertex leaves a DAG (networkx)."""
    import networkx as nx

    owner = {n.name: p.index for p in plan.partitions for n in p.nodes}
    contracted = nx.DiGraph()
    contracted.add_nodes_from(p.index for p in plan.partitions)
    for a, b in graph.to_networkx().edges:
        if owner[a] != owner[b]:
            contracted.add_edge(owner[a], owner[b])
    return nx.is_directed_acyclic_graph(contracted)
