"""Pipelines: levels, skipping, the per-pass report, and every pass keeping results."""

from __future__ import annotations

import pytest
import torch

import coreml_compile
from coreml_compile.compiler.frontends.torch_export import trace
from coreml_compile.compiler.interpreter import run_graph
from coreml_compile.passes import (
    ANE_LAYOUT,
    COMPRESSION,
    LEGALIZE,
    PIPELINES,
    all_passes,
    pipeline,
    run_pipeline,
)
from tests.ops.samples import SAMPLES


def test_levels_and_skipping():
    # The legalisation passes run first at every level; they can be skipped like any pass.
    assert pipeline(0) == LEGALIZE and pipeline("O1") == LEGALIZE + PIPELINES["O1"]
    assert pipeline(0, skip=LEGALIZE) == [] and pipeline(["fold_constants"])[0] == LEGALIZE[0]
    assert "fold_batch_norm" not in pipeline(2, skip=["fold_batch_norm"])
    with pytest.raises(ValueError, match="unknown pass 'fold_everything'"):
        pipeline(2, skip=["fold_everything"])
    with pytest.raises(ValueError, match="unknown optimisation level"):
        pipeline(7)


def test_every_pass_is_in_a_pipeline():
    # Compression passes join a pipeline through the compile options, not a level.
    assert set(all_passes()) == (
        set(PIPELINES["O2"]) | set(COMPRESSION) | set(ANE_LAYOUT) | set(LEGALIZE)
    )


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: f"{s.op}-{s.id}")
def test_o2_keeps_results_of_every_sample(sample):
    graph = trace(sample.module, sample.inputs)
    before = run_graph(graph, sample.inputs)
    records = run_pipeline(graph, pipeline("O2"), verify=True)
    assert [r.name for r in records] == pipeline("O2")
    after = run_graph(graph, sample.inputs)
    for a, b in zip(after, before, strict=True):
        assert a.shape == b.shape
        assert torch.allclose(a.double(), b.double(), rtol=1e-5, atol=1e-5)


def test_report_records_each_pass():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    compiled = coreml_compile.compile(model, (torch.randn(1, 3, 8, 8),))
    by_name = {r.name: r for r in compiled.report.passes}
    fold = by_name["fold_batch_norm"]
    assert fold.changed and (fold.nodes_before, fold.nodes_after) == (2, 1)
    assert fold.weight_bytes_after < fold.weight_bytes_before
    unoptimised = coreml_compile.compile(model, (torch.randn(1, 3, 8, 8),), optimize=0)
    assert [r.name for r in unoptimised.report.passes] == LEGALIZE
    assert unoptimised.report.mil_ops["batch_norm"] == 1
