"""Purity: random ops are never merged or folded; ops with effects are never dropped."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from coreml_compile.compiler.frontends.torch_export import trace
from coreml_compile.compiler.interpreter import run_graph
from coreml_compile.compiler.ir import Graph, Node, TensorType
from coreml_compile.compiler.ops import has_effects, is_pure
from coreml_compile.passes import pipeline, run_pipeline

x = torch.randn(2, 3)


def _o2(module: nn.Module):
    graph = trace(module.eval(), (x,))
    run_pipeline(graph, pipeline("O2"), verify=True)
    return graph


class TwoDraws(nn.Module):
    def forward(self, a):
        return torch.rand_like(a) - torch.rand_like(a)


class NoiseFromBuffer(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("shape_of", torch.zeros(2, 3))

    def forward(self, a):
        return a + torch.rand_like(self.shape_of)


def test_two_random_draws_are_not_merged():
    graph = _o2(TwoDraws())
    assert graph.op_counts() == {"aten": 2, "sub": 1}
    (out,) = run_graph(graph, (x,))
    assert out.abs().max() > 0  # merged, it would be rand - rand == 0


def test_random_op_on_a_constant_is_not_folded():
    graph = _o2(NoiseFromBuffer())
    assert graph.op_counts() == {"add": 1, "aten": 1}
    (first,) = run_graph(graph, (x,))
    (second,) = run_graph(graph, (x,))
    assert not torch.equal(first, second)  # folded, every call would return the same


def _graph_with(op: str, attrs: dict, count: int, on_constant: bool = False) -> Graph:
    g = Graph()
    t = TensorType("float32", (2, 3))
    a = g.add_constant("c", np.ones((2, 3), np.float32)) if on_constant else g.add_input("a", t)
    outs = [g.add_node(op, [a], attrs).output for _ in range(count)]
    g.outputs.append(outs[0] if count == 1 else g.add_node("add", outs[:2], {"alpha": 1}).output)
    return g


def test_training_dropout_is_random():
    train, infer = _graph_with("dropout", {"p": 0.5, "train": True}, 2), None
    assert not is_pure(train.nodes[0]) and not has_effects(train.nodes[0])
    run_pipeline(train, ["eliminate_common_subexpressions", "fold_constants"], verify=True)
    assert train.op_counts() == {"dropout": 2, "add": 1}
    on_constant = _graph_with("dropout", {"p": 0.5, "train": True}, 1, on_constant=True)
    run_pipeline(on_constant, ["fold_constants"], verify=True)
    assert on_constant.op_counts() == {"dropout": 1}
    infer = _graph_with("dropout", {"p": 0.5, "train": False}, 2)
    assert is_pure(infer.nodes[0])
    run_pipeline(infer, ["eliminate_common_subexpressions"], verify=True)
    assert infer.op_counts() == {"dropout": 1, "add": 1}


def test_unread_random_ops_go_and_ops_with_effects_stay():
    g = Graph()
    a = g.add_input("a", TensorType("float32", (2, 3)))
    draw = {"target": "aten::rand_like.default", "args": [{"input": 0}], "kwargs": {}}
    g.add_node("aten", [a], draw)
    g.outputs.append(g.add_node("relu", [a]).output)
    run_pipeline(g, ["eliminate_dead_code"], verify=True)
    assert g.op_counts() == {"relu": 1}
    # An op that writes its argument, or one torch cannot resolve, is kept.
    for target in ("aten::add_.Tensor", "aten::no_such_op.default"):
        node = Node("aten", "effect", [a], {"target": target}, [])
        assert has_effects(node) and not is_pure(node)
        g.add_existing_node(node)
        run_pipeline(g, ["eliminate_dead_code"])
        assert node in g.nodes
