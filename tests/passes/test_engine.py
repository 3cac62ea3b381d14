"""The rewrite engine: pattern matching, replacements, and running to a fixed point."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from coreml_compile.compiler.frontends.torch_export import trace
from coreml_compile.compiler.interpreter import run_graph
from coreml_compile.compiler.ir import Graph, TensorType
from coreml_compile.passes import PIPELINES, get_pass
from coreml_compile.passes._engine import Const, New, Pattern, Rule, rewrite

T = TensorType("float32", (2, 3))


def _graph():
    g = Graph()
    x = g.add_input("x", T)
    return g, x


def test_pattern_binds_variables_and_commutes():
    g, x = _graph()
    gate = g.add_node("sigmoid", [x]).output
    y = g.add_node("mul", [gate, x]).output  # operands in the other order
    g.outputs.append(y)
    silu = Pattern("mul", "x", Pattern("sigmoid", "x", bind="gate"), commute=True)
    m = silu.match(g, y.producer)
    assert m is not None and m["x"] is x and m["gate"] is gate and m.node("gate").op == "sigmoid"
    assert Pattern("mul", "x", Pattern("sigmoid", "x")).match(g, y.producer) is None
    # A name used twice must be the same value.
    other = g.add_input("other", T)
    z = g.add_node("mul", [other, gate]).output
    assert silu.match(g, z.producer) is None


def test_single_use_constants_and_optional_inputs():
    g, x = _graph()
    w = g.add_constant("w", np.ones((4, 3), np.float32))
    lin = g.add_node("linear", [x, w, None]).output
    relu = g.add_node("relu", [lin]).output
    g.outputs.append(relu)
    pattern = Pattern("relu", Pattern("linear", "x", Const("w"), Const("b?"), single_use=True))
    m = pattern.match(g, relu.producer)
    assert m is not None and m["w"] is w and m["b"] is None
    required = Pattern("relu", Pattern("linear", "x", Const("w"), Const("b")))
    assert required.match(g, relu.producer) is None
    g.outputs.append(lin)  # a graph output is read outside the pattern
    assert pattern.match(g, relu.producer) is None


def test_rules_run_to_a_fixed_point():
    # neg(neg(neg(neg(x)))) cancels pairwise, whatever order the nodes are visited in.
    g, x = _graph()
    v = x
    for _ in range(6):
        v = g.add_node("neg", [v]).output
    g.outputs.append(g.add_node("relu", [v]).output)
    rule = Rule(Pattern("neg", Pattern("neg", "x", single_use=True)), lambda graph, m: m["x"])
    assert rewrite(g, [rule]) and g.op_counts() == {"relu": 1}
    assert not rewrite(g, [rule])
    g.verify()


def test_replacement_builds_nested_nodes():
    g, x = _graph()
    y = g.add_node("exp", [x]).output
    g.outputs.append(y)
    rule = Rule(
        Pattern("exp", "x"),
        lambda graph, m: New("add", [New("mul", [m["x"], m["x"]], type=T), m["x"]], {"alpha": 1}),
    )
    assert rewrite(g, [rule])
    g.verify()
    assert [n.op for n in g.nodes] == ["mul", "add"] and g.outputs[0].name == "exp"


def test_a_rule_set_that_never_settles_is_stopped():
    g, x = _graph()
    g.outputs.append(g.add_node("relu", [g.add_node("neg", [x]).output]).output)
    flip = Rule(
        Pattern(("neg", "abs"), "x"),
        lambda graph, m: New({"neg": "abs", "abs": "neg"}[m.root.op], [m["x"]]),
    )
    with pytest.raises(RuntimeError, match="fixed point"):
        rewrite(g, [flip])


class _Block(nn.Module):
    """Work for every clean-up and fusion pass, several times over."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        for _ in range(3):
            y = self.bn(self.conv(nn.functional.pad(x, (1, 1, 1, 1))))[..., 1:-1, 1:-1]
            y = (y * 1.0).permute(0, 2, 3, 1).permute(0, 3, 1, 2)
            y = y * torch.sigmoid(y) + torch.ones(1) * 2
            x = torch.softmax(y, dim=1) + torch.relu(x) + torch.relu(x)
        return x.mean((2, 3), keepdim=True).flatten(1)


def test_every_pass_reaches_its_fixed_point():
    model = _Block().eval()
    model.bn.running_mean.uniform_(-1, 1)
    x = torch.randn(1, 4, 6, 6)
    graph = trace(model, (x,))
    expected = run_graph(graph, (x,))
    for name in PIPELINES["O2"]:
        get_pass(name)(graph)
        assert not get_pass(name)(graph), f"{name} changed the graph again"
        graph.verify()
    assert torch.allclose(run_graph(graph, (x,))[0], expected[0], atol=1e-5)
    assert "batch_norm" not in graph.op_counts() and "permute" not in graph.op_counts()
