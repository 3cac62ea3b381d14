"""cancel_transposes around F.unfold / F.fold, on scalars, and on transposes it cannot read.

Issue 11 reported an IndexError from this pass on a transpose with no inputs recorded, in
a model using F.unfold/F.fold. No model reproduced it: through torch.export no such node
arises (unfold and fold are the im2col and col2im records now, and before were
decompositions with rank-6 permutes), and the rule's pattern does not match a node
without its input. What did crash the pass is a transpose of a 0-d tensor (``torch.t``
of a scalar: ZeroDivisionError). These tests pin all three.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from coreml_compile.compiler.ir import Graph, TensorType
from coreml_compile.passes import pipeline, run_pipeline
from tests.passes.helpers import apply

x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def test_transposes_between_unfold_and_fold_cancel():
    def f(a):
        cols = F.unfold(a, 2, stride=2).transpose(1, 2)  # (N, L, C*K): a token layout
        cols = torch.relu(cols).transpose(1, 2)
        return F.fold(cols, (8, 8), 2, stride=2)

    before, after, _ = apply(f, (x,), "sink_transposes", "cancel_transposes")
    assert before["transpose"] == 2 and "transpose" not in after and "permute" not in after
    assert after.keys() >= {"im2col", "col2im", "relu"}


def test_unfold_fold_models_through_the_default_pipeline():
    def overlapping(a):
        cols = F.unfold(a, (2, 3), dilation=(1, 2), padding=1, stride=(1, 2))
        cols = cols.permute(0, 2, 1).permute(0, 2, 1) * 0.5
        return F.fold(cols, (8, 8), (2, 3), dilation=(1, 2), padding=1, stride=(1, 2))

    def unbatched(a):
        return F.fold(F.unfold(a[0], 2, stride=2).t().t(), (8, 8), 2, stride=2)

    for f in (overlapping, unbatched):
        _, after, _ = apply(f, (x,), *pipeline("O2"))
        assert "transpose" not in after and "permute" not in after, (f.__name__, after)


def test_transposes_of_a_scalar_cancel():
    # torch.t of a 0-d tensor is a transpose of rank 0: composing it must not wrap its
    # dims around a rank of 0 (ZeroDivisionError before).
    before, after, _ = apply(lambda a: torch.t(torch.t(a.sum())) + 1, (x,), "cancel_transposes")
    assert before["transpose"] == 2 and "transpose" not in after


def test_a_transpose_without_its_input_is_left_alone():
    graph = Graph()
    graph.add_input("x", TensorType("float32", (2, 3)))
    f32 = TensorType("float32", (3, 2))
    inner = graph.add_node("transpose", [], {"dim0": 0, "dim1": 1}, [f32], name="inner")
    outer = graph.add_node(
        "transpose",
        [inner.output],
        {"dim0": 0, "dim1": 1},
        [TensorType("float32", (2, 3))],
        name="outer",
    )
    graph.outputs.append(outer.output)
    records = run_pipeline(graph, ["cancel_transposes"])
    assert not records[0].changed
    assert [n.name for n in graph.nodes] == ["inner", "outer"]
