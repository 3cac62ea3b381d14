"""fuse_channel_shuffle: concat → reshape → transpose → reshape as one interleaved concat."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import coreml_compile
from tests.ops.samples import Fn
from tests.passes.helpers import apply


def _shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    # torchvision's channel_shuffle.
    b, c, h, w = x.size()
    x = x.view(b, groups, c // groups, h, w)
    return torch.transpose(x, 1, 2).contiguous().view(b, -1, h, w)


def _three(a: torch.Tensor) -> torch.Tensor:
    return _shuffle(torch.cat([a, a * 2, a.sin()], 1), 3)


def _last_axis(a: torch.Tensor) -> torch.Tensor:
    # (2, 5, 4) and (2, 5, 4) along the last axis, shuffled with a permute.
    c = torch.cat([a, a.exp()], -1)
    return c.reshape(2, 5, 2, 4).permute(0, 1, 3, 2).reshape(2, 5, 8)


@pytest.mark.parametrize(
    ("fn", "x"),
    [
        (lambda a: _shuffle(torch.cat([a, a.relu()], 1), 2), torch.randn(1, 6, 4, 4)),
        (_three, torch.randn(2, 4, 3, 3)),
        (_last_axis, torch.randn(2, 5, 4)),
    ],
    ids=["two", "three", "last_axis"],
)
def test_shuffle_after_a_concat_is_one_interleaved_concat(fn, x):
    # remove_noops first drops the identity that ``.contiguous()`` traces to.
    before, after, graph = apply(fn, (x,), "remove_noops", "fuse_channel_shuffle")
    assert before["reshape"] == 2 and "cat" in before
    assert "reshape" not in after and "transpose" not in after and "permute" not in after
    (cat,) = [n for n in graph.nodes if n.op == "cat"]
    assert cat.attrs["interleave"] is True


def test_interleaved_concat_lowers_to_core_ml():
    fn = Fn(lambda a: _shuffle(torch.cat([a, a.relu(), -a], 1), 3))
    x = torch.randn(1, 4, 5, 5)
    compiled = coreml_compile.compile(fn, (x,), precision="fp32")
    assert compiled.report.mil_ops.get("transpose") is None
    assert compiled.report.mil_ops["concat"] == 1
    (out,) = compiled.predict(x.numpy()).values()
    np.testing.assert_allclose(out, fn(x).numpy(), rtol=1e-6, atol=1e-6)


def _kept(fn, x):
    _, after, graph = apply(fn, (x,), "remove_noops", "fuse_channel_shuffle")
    assert after["reshape"] >= 2 and after["transpose"] == 1
    assert not any(n.attrs.get("interleave") for n in graph.nodes if n.op == "cat")


def test_groups_other_than_the_number_of_inputs_are_kept():
    # Two inputs of 4 channels shuffled in 4 groups: not an interleaving of the inputs.
    _kept(lambda a: _shuffle(torch.cat([a, a.relu()], 1), 4), torch.randn(1, 4, 3, 3))


def test_inputs_of_different_sizes_are_kept():
    def f(a):
        c = torch.cat([a, a[:, :2].relu()], 1)  # 4 + 2 channels
        return _shuffle(c, 2)

    _kept(f, torch.randn(1, 4, 3, 3))


def test_the_inverse_shuffle_is_kept():
    # Split into (channels per group, groups) first: this un-interleaves.
    def f(a):
        c = torch.cat([a, a.relu()], 1)
        return c.view(1, 3, 2, 3, 3).transpose(1, 2).reshape(1, 6, 3, 3)

    _kept(f, torch.randn(1, 3, 3, 3))


def test_shuffle_whose_parts_are_read_elsewhere_is_kept():
    def f(a):
        c = torch.cat([a, a.relu()], 1)
        grouped = c.view(1, 2, 3, 3, 3)
        return torch.transpose(grouped, 1, 2).reshape(1, 6, 3, 3), grouped.sum()

    _kept(f, torch.randn(1, 3, 3, 3))


def test_shuffle_of_a_single_tensor_is_kept():
    _kept(lambda a: _shuffle(a.relu(), 2), torch.randn(1, 6, 3, 3))


def test_shuffle_of_a_concat_read_elsewhere_is_kept():
    def f(a):
        c = torch.cat([a, a.relu()], 1)
        return _shuffle(c, 2), c.sum()

    _kept(f, torch.randn(1, 3, 3, 3))
