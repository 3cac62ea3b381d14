"""The partitioner: maximal groups by kind, acyclic, in an executable order."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from coreml_compile.compiler.frontends.torch_export import trace
from coreml_compile.compiler.partition import COREML, FALLBACK, check_acyclic, partition
from coreml_compile.compiler.strategy import HybridExecutionStrategy
from tests.ops.samples import Fn


def inv(a):  # no Core ML lowering: becomes an `aten` fallback node
    return torch.linalg.inv(a)


CASES = {
    "start": (lambda a: torch.relu(inv(a)) * 2, [FALLBACK, COREML]),
    "middle": (lambda a: torch.relu(inv(torch.relu(a) + 1)) * 2, [COREML, FALLBACK, COREML]),
    "end": (lambda a: inv(torch.relu(a) + 1), [COREML, FALLBACK]),
    "parallel_branches": (
        lambda a: inv(a + 1) + torch.relu(a) * 3,
        [COREML, FALLBACK, COREML],
    ),
    "residual": (lambda a: a + inv(torch.relu(a) + 1), [COREML, FALLBACK, COREML]),
    "only_op": (inv, [FALLBACK]),
    "supported": (lambda a: torch.relu(a) * 2 + 1, [COREML]),
}


def _plan(fn, x=None, min_coreml_nodes=1, **kwargs):
    # Placement is under test here, not the strategy: keep even one-node partitions.
    x = torch.randn(3, 3) + 3 * torch.eye(3) if x is None else x
    graph = trace(Fn(fn), (x,))
    strategy = HybridExecutionStrategy(min_coreml_nodes=min_coreml_nodes, **kwargs)
    return graph, partition(graph, 16, strategy)


@pytest.mark.parametrize("case", list(CASES))
def test_placements(case):
    fn, kinds = CASES[case]
    graph, plan = _plan(fn)
    assert [p.kind for p in plan.partitions] == kinds
    assert check_acyclic(graph, plan)
    # Executable in order: every input is a graph input or an earlier partition's output.
    available = {id(v) for v in graph.inputs}
    for p in plan.partitions:
        assert all(id(v) in available for v in p.inputs), case
        available |= {id(v) for v in p.outputs}
    assert all(id(v) in available for v in graph.outputs)
    # Every node is in exactly one partition; fallback nodes say why.
    names = [n.name for p in plan.partitions for n in p.nodes]
    assert sorted(names) == sorted(n.name for n in graph.nodes)
    for p in plan.partitions:
        if p.kind == FALLBACK:
            assert set(p.reasons) == {n.name for n in p.nodes}
            assert all("no Core ML lowering" in r for r in p.reasons.values())


def test_fully_supported_model_is_one_core_ml_partition():
    graph, plan = _plan(CASES["supported"][0])
    (only,) = plan.partitions
    assert only.kind == COREML and plan.coreml_share == 1.0
    assert [v.name for v in only.outputs] == ["output"]


def test_tiny_core_ml_partition_between_fallbacks_runs_as_fallback():
    fn = lambda a: inv(torch.relu(inv(a)))  # noqa: E731 - one relu wedged between two
    _, plan = _plan(fn)
    assert [p.kind for p in plan.partitions] == [FALLBACK, COREML, FALLBACK]
    _, plan = _plan(fn, min_coreml_nodes=2)
    assert [p.kind for p in plan.partitions] == [FALLBACK]
    (reason,) = [r for r in plan.partitions[0].reasons.values() if "relu" in r]
    assert "below the minimum of 2" in reason


def test_strategy_keeps_convolutions_and_large_matmuls_on_core_ml():
    conv = nn.Conv2d(3, 3, 1).eval()
    big = torch.randn(3, 256)

    def with_conv(a):
        return inv(conv(inv(a)[None, None].expand(1, 3, 3, 3))[0, 0])

    def with_matmul(a):
        return inv((inv(a).repeat(1, 86)[:, :256] @ big.T)[:, :3] @ big[:, :3].T)

    _, plan = _plan(with_conv, min_coreml_nodes=50)
    (kept,) = [p for p in plan.partitions if p.kind == COREML]
    assert kept.decision == "holds a convolution"
    _, plan = _plan(with_matmul, min_coreml_nodes=50, large_matmul_macs=256 * 3 * 3)
    assert [p.kind for p in plan.partitions].count(COREML) >= 1
    assert any("multiply-accumulates" in p.decision for p in plan.partitions)
    _, plan = _plan(with_matmul, min_coreml_nodes=50)  # too small to be worth it
    assert [p.kind for p in plan.partitions] == [FALLBACK]


def test_battery_mode_keeps_every_supported_node_on_core_ml():
    fn = lambda a: inv(torch.relu(inv(a)))  # noqa: E731
    _, plan = _plan(fn, min_coreml_nodes=10, battery=True)
    assert [p.kind for p in plan.partitions] == [FALLBACK, COREML, FALLBACK]
    assert "battery" in plan.partitions[1].decision


def test_disconnected_supported_nodes_share_a_partition():
    # Two independent supported branches around one fallback op: still 2 Core ML parts.
    _, plan = _plan(lambda a: (torch.relu(a) * 2, inv(a), torch.sigmoid(a) + 1))
    kinds = [p.kind for p in plan.partitions]
    assert kinds.count(COREML) == 1 and kinds.count(FALLBACK) == 1


def test_independent_supported_work_joins_the_partition_after_the_fallback():
    # relu(a) * 2 does not depend on inv: it runs with the Core ML work after it, not
    # in a partition of its own before the fallback.
    _, plan = _plan(lambda a: torch.sigmoid(inv(a) + 1) + torch.relu(a) * 2)
    assert [p.kind for p in plan.partitions] == [FALLBACK, COREML]
    assert len(plan.partitions[1].nodes) == 5


def test_merging_keeps_partitions_acyclic_and_in_order():
    # Two fallbacks in sequence with supported work between and beside them.
    def fn(a):
        b = inv(torch.relu(a) + 1)
        c = torch.sigmoid(a) * 3  # independent: may join either Core ML partition
        return inv(b * 2 + c) + c

    graph, plan = _plan(fn)
    assert check_acyclic(graph, plan)
    available = {id(v) for v in graph.inputs}
    for p in plan.partitions:
        assert all(id(v) in available for v in p.inputs)
        available |= {id(v) for v in p.outputs}
    kinds = [p.kind for p in plan.partitions]
    assert all(a != b for a, b in zip(kinds, kinds[1:], strict=False)), kinds


def test_resnet_with_an_unsupported_op_in_the_middle():
    import resnet

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = resnet.resnet18()

        def forward(self, x):
            x = self.net.maxpool(self.net.relu(self.net.bn1(self.net.conv1(x))))
            x = self.net.layer2(self.net.layer1(x))
            x = torch.special.i0(x)  # no record and no decomposition: fallback
            x = self.net.layer4(self.net.layer3(x))
            return self.net.fc(self.net.avgpool(x).flatten(1))

    graph = trace(Wrapped().eval(), (torch.randn(1, 3, 64, 64),))
    plan = partition(graph, 16)
    assert [p.kind for p in plan.partitions] == [COREML, FALLBACK, COREML]
    assert plan.coreml_share > 0.95 and check_acyclic(graph, plan)
