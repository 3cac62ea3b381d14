from __future__ import annotations

import torch
from torch import nn
from torch.export import Dim

import coreml_compile
from tests.passes.helpers import apply


def test_slices_that_cut_an_axis_into_pieces_become_one_split():
    def f(a):
        b, c, d = a[:, :2], a[:, 5:], a[:, 2:5]  # out of order, covering 0..7 once
        return b.sum(1) + c.sum(1) + d.sum(1) + d.mean()

    _, after, graph = apply(f, (torch.randn(2, 7, 3),), "merge_slices", "eliminate_dead_code")
    assert "slice" not in after and after["split"] == 1
    (split,) = [n for n in graph.nodes if n.op == "split"]
    assert split.attrs["split_size"] == [2, 3, 2] and split.attrs["dim"] == 1


def test_slices_that_do_not_tile_the_axis_are_kept():
    cases = [
        lambda a: a[:, :3] + a[:, 3:6],  # a gap at the end
        lambda a: a[:, :4] + a[:, 3:7],  # overlapping
        lambda a: a[:, 0:6:2] + a[:, 1:7:2],  # steps
        lambda a: a[:, :3] + a[3:, :3].sum(),  # another axis
    ]
    for f in cases:
        _, after, _ = apply(f, (torch.randn(7, 7),), "merge_slices", "eliminate_dead_code")
        assert "split" not in after, f


def test_a_graph_output_slice_keeps_its_name():
    def f(a):
        return a[..., :4], a[..., 4:]

    _, after, graph = apply(f, (torch.randn(2, 10),), "merge_slices", "eliminate_dead_code")
    assert after == {"split": 1}
    assert [o.producer.op for o in graph.outputs] == ["split", "split"]


class _Rotate(nn.Module):
    def forward(self, a):
        return torch.cat([-a[..., 8:], a[..., :8]], -1) * 2


def test_halves_of_a_static_axis_split_when_other_axes_are_dynamic():
    """Rotary embeddings cut each head in halves while the sequence length varies."""
    model = _Rotate()
    compiled = coreml_compile.compile(
        model,
        (torch.randn(1, 5, 16),),
        dynamic_shapes=({1: Dim("n", min=2, max=32)},),
        precision="fp32",
    )
    assert compiled.report.ir_ops.get("split") == 1 and "slice" not in compiled.report.ir_ops
    for n in (3, 17):
        x = torch.randn(1, n, 16)
        (got,) = compiled.predict({"a": x.numpy()}).values()
        torch.testing.assert_close(torch.from_numpy(got), model(x))
