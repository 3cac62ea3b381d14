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
    g.nodes.reorder(reversed(g.nodes))
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


def test_node_list_inserts_removes_and_orders_in_constant_time():
    g = _small_graph()
    mul, relu, add = g.nodes
    neg = g.add_node("neg", [mul.output], before=relu)
    assert list(g.nodes) == [mul, neg, relu, add] and len(g.nodes) == 4
    keys = [g.nodes.order_key(n) for n in g.nodes]
    assert keys == sorted(keys) and neg in g and neg in g.nodes
    # Many insertions at one place exhaust the gaps between order keys: they are renumbered.
    before = relu
    for _ in range(100):
        before = g.add_node("neg", [mul.output], before=before)
    order = list(g.nodes)
    assert [g.nodes.order_key(n) for n in order] == sorted(g.nodes.order_key(n) for n in order)
    assert order[1] is neg and order[2] is before and order[-2:] == [relu, add]
    for node in order[1:-2]:
        if node is not neg:
            g.remove_node(node)
    g.replace_all_uses(neg.output, mul.output)
    g.remove_node(neg)
    assert list(g.nodes) == [mul, relu, add] and neg not in g and g.nodes[-1] is add
    g.verify()


def test_iterating_nodes_while_editing_sees_the_nodes_as_they_were():
    g = _small_graph()
    seen = []
    for node in g.nodes:
        seen.append(node.op)
        if node.op == "mul":
            g.add_node("neg", [node.output], before=g.nodes[1])
    assert seen == ["mul", "relu", "add"] and [n.op for n in g.nodes][:2] == ["mul", "neg"]


def test_users_count_each_read_and_edit_in_constant_time():
    g = Graph()
    x = g.add_input("x", TensorType("float32", (2,)))
    square = g.add_node("mul", [x, x])
    neg = g.add_node("neg", [x])
    assert x.users == [square, square, neg] and len(x.users) == 3
    assert x.users.count(square) == 2 and x.users.distinct() == [square, neg]
    assert x.users.only() is None and square.output.users.only() is None
    g.outputs.append(g.add_node("add", [square.output, neg.output], {"alpha": 1}).output)
    g.set_input(neg, 0, square.output)
    assert x.users == [square, square] and x.users.only() is square
    assert square.output.users == [g.nodes[-1], neg]
    g.verify()


def test_add_existing_node_takes_its_names():
    g = _small_graph()
    copy = g.extract(list(g.nodes), g.inputs, g.outputs, "copy")
    assert [n.name for n in copy.nodes] == [n.name for n in g.nodes]
    assert copy.fresh_name("mul") == "mul_1" and copy.fresh_name("x") == "x_1"
    copy.verify()


def test_naming_many_nodes_alike_stays_fast():
    g = Graph()
    x = g.add_input("x", TensorType("float32", (2,)))
    for _ in range(3000):
        x = g.add_node("neg", [x], output_types=[x.type]).output
    assert x.name == "neg_2999" and len(g._names) == 3001
