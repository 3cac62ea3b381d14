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
