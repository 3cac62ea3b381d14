"""IR graphs survive JSON + raw arrays (how fallback partitions are stored in packages)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from coreml_compile.compiler.frontends.torch_export import trace
from coreml_compile.compiler.interpreter import run_graph
from coreml_compile.compiler.serialize import (
    ArrayWriter,
    GraphFormatError,
    graph_from_json,
    graph_to_json,
    read_array,
)
from tests.ops.samples import SAMPLES, Fn


def _round_trip(graph):
    arrays = ArrayWriter()
    text = json.dumps(graph_to_json(graph, arrays))
    return graph_from_json(json.loads(text), bytearray(arrays.getvalue()))


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: f"{s.op}-{s.id}")
def test_every_sample_graph_round_trips(sample):
    graph = trace(sample.module, sample.inputs)
    loaded = _round_trip(graph)
    loaded.verify()
    assert str(loaded) == str(graph)
    for a, b in zip(run_graph(loaded, sample.inputs), run_graph(graph, sample.inputs), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_aten_fallback_nodes_round_trip():
    module = Fn(lambda x: torch.linalg.inv(x) + torch.cumsum(x, 1, dtype=torch.float64).float())
    x = torch.randn(4, 4) + 4 * torch.eye(4)
    graph = trace(module, (x,))
    assert "aten" in graph.op_counts()
    loaded = _round_trip(graph)
    torch.testing.assert_close(run_graph(loaded, [x])[0], module(x))


def test_arrays_are_aligned_shared_and_not_copied():
    writer = ArrayWriter()
    a = np.arange(3, dtype=np.int8)
    b = np.ones((2, 5), np.float32)
    refs = [writer.add(a), writer.add(b), writer.add(a)]
    assert refs[0] is refs[2]  # the same array is stored once
    assert refs[1]["offset"] % 64 == 0
    blob = writer.getvalue()
    view = read_array(blob, refs[1])
    np.testing.assert_array_equal(view, b)
    assert not view.flags.owndata


def test_bad_documents_fail_with_a_named_error():
    graph = trace(Fn(lambda x: torch.relu(x) * 2.0), (torch.randn(3),))
    writer = ArrayWriter()
    doc = graph_to_json(graph, writer)
    blob = writer.getvalue()
    with pytest.raises(GraphFormatError, match="format"):
        graph_from_json({**doc, "format": 99}, blob)
    bad_op = json.loads(json.dumps(doc))
    bad_op["nodes"][0]["op"] = "no_such_op"
    with pytest.raises(GraphFormatError, match="no_such_op"):
        graph_from_json(bad_op, blob)
    if doc["constants"]:
        with pytest.raises(GraphFormatError, match="past the end"):
            graph_from_json(doc, b"")
