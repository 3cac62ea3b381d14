"""Run one pass on a traced model and check it kept the model's results."""

from __future__ import annotations

import torch
from torch import nn

from coreml_compile.compiler.frontends.torch_export import trace
from coreml_compile.compiler.interpreter import run_graph
from coreml_compile.passes import run_pipeline
from tests.ops.samples import Fn


def apply(module: nn.Module, inputs: tuple, *passes: str):
    """(graph before, graph after) op counts, asserting the results did not change."""
    if not isinstance(module, nn.Module):
        module = Fn(module)
    graph = trace(module.eval(), inputs)
    before_ops = graph.op_counts()
    before = run_graph(graph, inputs)
    run_pipeline(graph, passes, verify=True)
    after = run_graph(graph, inputs)
    for a, b in zip(after, before, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5), (a - b).abs().max()
    with torch.no_grad():
        expected = module(*inputs)
    expected = list(expected) if isinstance(expected, tuple | list) else [expected]
    for a, e in zip(after, expected, strict=True):
        assert torch.allclose(a, e, rtol=1e-4, atol=1e-5)
    return before_ops, graph.op_counts(), graph
