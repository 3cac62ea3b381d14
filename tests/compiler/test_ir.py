"""The IR's invariants: links, verification, printing, the networkx view, editing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from coreml_compile.compiler.frontends.torch_export import trace
from coreml_compile.compiler.interpreter import run_graph
from coreml_compile.compiler.ir import Graph, TensorType
from coreml_compile.errors import IRVerificationError


def _small_graph() -> Graph:
    g = Graph("small")
    x = g.add_input("x", TensorType("float32", (2, 3)))
    w = g.add_constant("w", np.ones((3,), np.float32))
    y = g.add_node("mul", [x, w]).output
    z = g.add_node("relu", [y]).output
    g.outputs.append(g.add_node("add", [z, x], {"alpha": 1}).output)
    return g


def test_builder_infers_types_and_links():
    g = _small_graph()
    g.verify()
    mul, relu, add = g.nodes
    assert mul.output.type == TensorType("float32", (2, 3))
    assert relu.inputs[0] is mul.output and mul.output.users == [relu]
    assert g.inputs[0].users == [mul, add]
    assert str(add.output.type) == "f32[2,3]"


def test_verify_rejects_use_before_definition():
    g = _small_graph()
    g.nodes.reverse()
    with pytest.raises(IRVerificationError, match="before it is defined"):
        g.verify()


def test_verify_rejects_wrong_recorded_type():
    g = _small_graph()
    g.nodes[1].outputs[0].type = TensorType("float32", (3, 2))
    with pytest.raises(IRVerificationError, match="infers"):
        g.verify()


def test_verify_rejects_broken_user_links():
    g = _small_graph()
    g.nodes[1].inputs[0].users.clear()
    with pytest.raises(IRVerificationError, match="user"):
        g.verify()


def test_replace_all_uses_and_remove_node():
    g = _small_graph()
    mul, relu, add = g.nodes
    g.replace_all_uses(relu.output, mul.output)
    g.remove_node(relu)
    g.verify()
    assert [n.op for n in g.nodes] == ["mul", "add"]
    out = run_graph(g, [torch.full((2, 3), -1.0)])[0]
    assert torch.equal(out, torch.full((2, 3), -2.0))


def test_remove_node_refuses_when_used():
    g = _small_graph()
    with pytest.raises(IRVerificationError, match="still used"):
        g.remove_node(g.nodes[0])


def test_printer_and_networkx_view():
    g = _small_graph()
    text = str(g)
    assert text.splitlines()[0] == "graph small(%x: f32[2,3]) {"
    assert "%mul: f32[2,3] = mul(%x, %w)" in text
    assert text.splitlines()[-2] == "  return %add"
    nxg = g.to_networkx()
    assert sorted(nxg.edges) == [("mul", "relu"), ("relu", "add")]


def test_fresh_names_are_unique_and_deterministic():
    names = [Graph().fresh_name("a") for _ in range(2)]
    assert names == ["a", "a"]
    g = Graph()
    assert [g.fresh_name("conv.weight") for _ in range(3)] == [
        "conv_weight",
        "conv_weight_1",
        "conv_weight_2",
    ]


def test_trace_is_deterministic():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    x = torch.randn(1, 3, 8, 8)
    assert str(trace(model, (x,))) == str(trace(model, (x,)))


def test_rename_never_duplicates_a_name():
    g = _small_graph()
    mul, relu, _ = g.nodes
    g.rename(relu.output, "mul")  # taken by the mul's output: a fresh variant instead
    assert relu.output.name == "mul_1" and mul.output.name == "mul"
    g.rename(relu.output, "activated")
    assert relu.output.name == "activated"
    g.rename(mul.output, "mul_1")  # freed by the rename above
    assert mul.output.name == "mul_1"
    g.verify()
