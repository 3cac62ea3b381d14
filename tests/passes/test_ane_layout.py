"""The Neural Engine layout: linear on (B, S, C) as 1x1 conv on (B, C, 1, S)."""

from __future__ import annotations

import torch
from torch import nn

import coreml_compile
from coreml_compile.passes import ANE_LAYOUT
from tests.conftest import assert_close
from tests.passes.helpers import apply


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 8)
    ).eval()


def test_mlp_keeps_one_layout_change_at_each_end():
    before, after, graph = apply(_mlp(), (torch.randn(2, 5, 16),), *ANE_LAYOUT)
    assert before == {"linear": 3, "gelu": 1, "relu": 1}
    assert after == {"conv": 3, "gelu": 1, "relu": 1, "permute": 2, "squeeze": 1, "unsqueeze": 1}
    # Inside, every tensor is channels-first with a unit height: (B, C, 1, S).
    for node in graph.nodes:
        if node.op in ("conv", "gelu", "relu"):
            assert node.output.type.shape[2] == 1
    assert [tuple(v.type.shape) for v in graph.outputs] == [(2, 5, 8)]


def test_two_dimensional_linear_is_left_alone():
    _, after, _ = apply(nn.Linear(16, 8), (torch.randn(4, 16),), *ANE_LAYOUT)
    assert after == {"linear": 1}


def test_ane_layout_package_matches_torch():
    model = _mlp()
    x = torch.randn(2, 5, 16)
    compiled = coreml_compile.compile(model, (x,), ane_layout=True, precision="fp32")
    assert compiled.report.mil_ops["conv"] == 3
    with torch.no_grad():
        assert_close(compiled(x), model(x), "fp32", "ane layout")


def _attention_scores(q, k):
    return torch.softmax(q @ k.transpose(-1, -2) / 4.0, -1)


def test_large_attention_softmax_is_split_per_head():
    q, k = torch.randn(1, 4, 64, 16), torch.randn(1, 4, 64, 16)
    before, after, _ = apply(_attention_scores, (q, k), *ANE_LAYOUT)
    assert before["softmax"] == 1
    assert after["softmax"] == 4 and after["slice"] == 4 and after["cat"] == 1


def test_small_softmax_is_kept_whole():
    q, k = torch.randn(1, 4, 8, 16), torch.randn(1, 4, 8, 16)
    _, after, _ = apply(_attention_scores, (q, k), *ANE_LAYOUT)
    assert after["softmax"] == 1 and "cat" not in after


def test_split_softmax_package_matches_torch():
    q, k = torch.randn(1, 4, 64, 16), torch.randn(1, 4, 64, 16)

    class Scores(nn.Module):
        def forward(self, a, b):
            return _attention_scores(a, b)

    compiled = coreml_compile.compile(Scores(), (q, k), ane_layout=True, precision="fp32")
    assert compiled.report.mil_ops["softmax"] == 4
    assert_close(compiled(q, k), _attention_scores(q, k), "fp32", "split softmax")
