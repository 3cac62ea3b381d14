"""lower_rank: rank > 5 chains rewritten at rank <= 5, checked in the IR and in packages."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest
import torch
from torch import nn

import coreml_compile
from coreml_compile.compiler.ir import Graph, TensorType
from coreml_compile.compiler.ops import MAX_RANK
from coreml_compile.errors import UnsupportedOpError
from coreml_compile.passes.lower_rank import _transpose_steps, lower_rank
from tests.ops.samples import Fn
from tests.passes.helpers import apply

B, H, W, C, WIN = 2, 8, 8, 3, 4


def window_partition(x):
    x = x.view(B, H // WIN, WIN, W // WIN, WIN, C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, WIN, WIN, C)


def window_reverse(x):
    x = x.view(B, H // WIN, W // WIN, WIN, WIN, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, C)


def pixel_shuffle_3d(x):  # (1, 2*8, 3, 3, 3) -> (1, 2, 6, 6, 6): 8 dims, 7 groups
    x = x.view(1, 2, 2, 2, 2, 3, 3, 3).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(1, 2, 6, 6, 6)


def max_rank(graph) -> int:
    return max(v.type.rank for v in graph.values())


def check_package(fn, inputs, optimize="O2"):
    """Compile whole onto Core ML (no fallback) and run it in fp32 and fp16 against torch."""
    module = fn if isinstance(fn, nn.Module) else Fn(fn)
    module.eval()
    with torch.no_grad():
        expected = module(*inputs)
    scale = expected.abs().max().item()
    for precision, tolerance in (("fp32", 1e-5), ("fp16", 2e-3)):
        compiled = coreml_compile.compile(
            module, inputs, precision=precision, optimize=optimize, allow_fallback=False
        )
        assert max_rank(compiled.graph) <= MAX_RANK
        got = compiled(*inputs)
        assert got.shape == expected.shape
        error = (got - expected).abs().max().item()
        assert error <= tolerance * scale, (precision, error, scale)


@pytest.mark.parametrize("optimize", ["O0", "O2"])
def test_window_partition_is_one_rank_4_transpose(optimize):
    x = torch.randn(B, H, W, C)
    before, after, graph = apply(window_partition, (x,), "lower_rank")
    assert max_rank(graph) == 4 and after == {"reshape": 2, "permute": 1}, (before, after)
    (permute,) = [n for n in graph.nodes if n.op == "permute"]
    # (B*H/w, w, W/w, w*C) -> (B*H/w, W/w, w, w*C)
    assert list(permute.inputs[0].type.shape) == [4, 4, 2, 12]
    assert permute.attrs["dims"] == [0, 2, 1, 3]
    check_package(window_partition, (x,), optimize)


@pytest.mark.parametrize("optimize", ["O0", "O2"])
def test_window_reverse(optimize):
    x = torch.randn(B * 4, WIN, WIN, C)
    _, after, graph = apply(window_reverse, (x,), "lower_rank")
    assert max_rank(graph) == 4 and after == {"reshape": 2, "permute": 1}
    check_package(window_reverse, (x,), optimize)


def test_partition_then_reverse_round_trips():
    x = torch.randn(B, H, W, C)

    def f(a):
        return window_reverse(window_partition(a) * 2.0)

    _, _, graph = apply(f, (x,), "lower_rank")
    assert max_rank(graph) <= MAX_RANK
    check_package(f, (x,))


@pytest.mark.parametrize("optimize", ["O0", "O2"])
def test_rank_6_reductions_and_elementwise(optimize):
    x = torch.randn(B, H, W, C)
    scale = torch.arange(1.0, 5.0).view(4, 1, 1, 1)

    def f(a):
        v = a.view(2, 2, 4, 2, 4, 3)
        mean = v.mean(-1)  # rank 6 in, rank 5 out
        summed = (torch.exp(v) * scale + 1).sum(2).relu()  # broadcast along axis 2, reduced
        return mean, summed

    _, after, graph = apply(f, (x,), "lower_rank")
    assert max_rank(graph) <= MAX_RANK
    # mean(-1) of the view: everything before the last axis is one group
    (mean,) = [n for n in graph.nodes if n.op == "mean"]
    assert list(mean.inputs[0].type.shape) == [128, 3] and mean.attrs["dim"] == [1]
    check_package(lambda a: torch.cat([t.flatten() for t in f(a)]), (x,), optimize)


def test_size_one_axes_do_not_bridge_broadcast_and_full_axes():
    x = torch.randn(B, H, W, C)
    y = torch.randn(8, 1, 1, 1)

    def f(a):  # axis 0 is broadcast for y, axis 1 has size 1, axis 2 is full
        return (a.view(2, 1, 8, 2, 4, 3) * y).sum(-1)

    _, _, graph = apply(f, (x,), "lower_rank")
    assert max_rank(graph) <= MAX_RANK
    check_package(f, (x,))


def test_softmax_axis_stays_alone():
    x = torch.randn(B, H, W, C)

    def f(a):
        v = a.view(2, 2, 4, 2, 4, 3).softmax(2)
        return v.permute(0, 1, 3, 2, 4, 5).sum(-1)

    _, _, graph = apply(f, (x,), "lower_rank")
    assert max_rank(graph) <= MAX_RANK
    (softmax,) = [n for n in graph.nodes if n.op == "softmax"]
    assert softmax.output.type.shape[softmax.attrs["dim"]] == 4
    check_package(f, (x,))


def test_rank_7_needs_two_block_swaps():
    x = torch.randn(2, 8, 8, 3)

    def f(a):  # 6 groups after merging: done as two rank <= 4 permutes
        v = a.view(2, 2, 2, 2, 2, 4, 3).permute(0, 2, 1, 3, 4, 6, 5)
        return v.reshape(32, 12).softmax(-1)

    _, after, graph = apply(f, (x,), "lower_rank")
    assert max_rank(graph) <= 4 and after["permute"] == 2, after
    check_package(f, (x,))


def test_pixel_shuffle_3d_rank_8():
    x = torch.randn(1, 16, 3, 3, 3)
    _, after, graph = apply(pixel_shuffle_3d, (x,), "lower_rank")
    assert max_rank(graph) <= MAX_RANK and after["permute"] == 3, after
    assert all(n.output.type.rank <= 4 for n in graph.nodes if n.op == "permute")
    check_package(pixel_shuffle_3d, (x,))


def test_maxvit_grid_partition_moves_every_axis():
    x = torch.randn(2, 3, 8, 8)

    def f(a):  # (B, C, gh, H/gh, gw, W/gw) -> (B, gh, gw, H/gh, W/gw, C): no two stay adjacent
        v = a.view(2, 3, 2, 4, 2, 4).permute(0, 2, 4, 3, 5, 1)
        return v.reshape(-1, 16, 3)

    _, after, graph = apply(f, (x,), "lower_rank")
    assert max_rank(graph) <= 4 and after["permute"] >= 2, after
    check_package(f, (x,))


def test_transpose_steps_compose_to_any_permutation():
    rng = random.Random(0)
    for n in range(1, 9):
        for _ in range(30):
            perm = list(range(n))
            rng.shuffle(perm)
            sizes = [rng.randint(2, 3) for _ in range(n)]
            x = np.arange(np.prod(sizes)).reshape(sizes)
            y = x
            steps = _transpose_steps(sizes, perm)
            for shape, dims in steps:
                assert len(shape) <= MAX_RANK
                y = y.reshape(shape).transpose(dims)
            assert np.array_equal(y.reshape(-1), x.transpose(perm).reshape(-1)), (sizes, perm)
            assert len(steps) <= max(n - 1, 1)
    assert _transpose_steps([2, 3], [0, 1]) == []


def test_size_one_axes_are_dropped():
    x = torch.randn(1, 8, 8, 3)

    def f(a):  # batch 1 and a size-1 axis in the middle do not count as groups
        v = a.view(1, 2, 4, 1, 2, 4, 3).permute(0, 3, 1, 4, 2, 5, 6)
        return v.reshape(4, 16, 3)

    _, after, graph = apply(f, (x,), "lower_rank")
    assert max_rank(graph) == 4 and after == {"reshape": 2, "permute": 1}, after
    check_package(f, (x,))


def test_a_permutation_that_cannot_be_merged_falls_back():
    x = torch.randn(B, H, W, C)

    def f(a):
        # Reversing all axes keeps no two adjacent, and the add reads the rank-6 result
        # itself, so neither merging nor block swaps between reshapes apply.
        v = a.view(2, 2, 4, 2, 4, 3).permute(5, 4, 3, 2, 1, 0) + 1.0
        return v.reshape(-1)

    before, after, graph = apply(f, (x,), "lower_rank")
    assert before == after and max_rank(graph) == 6
    with pytest.raises(UnsupportedOpError, match="rank 6 exceeds Core ML's limit of 5"):
        coreml_compile.compile(Fn(f), (x,), allow_fallback=False)
    compiled = coreml_compile.compile(Fn(f), (x,), precision="fp32")
    assert any("rank 6" in r for r in compiled.report.fallback_reasons.values())
    assert torch.allclose(compiled(x), f(x))


def test_a_rank_6_model_input_is_left_alone():
    x = torch.randn(2, 2, 4, 2, 4, 3)  # the model takes rank 6: its interface cannot change
    before, after, graph = apply(
        lambda a: a.permute(0, 1, 3, 2, 4, 5).reshape(8, 4, 4, 3), (x,), "lower_rank"
    )
    assert before == after and max_rank(graph) == 6


def test_symbolic_dims_are_left_alone():
    graph = Graph()
    x = graph.add_input("x", TensorType("float32", ("batch", 8, 8, 3)))
    view_type = TensorType("float32", ("batch", 2, 4, 2, 4, 3))
    view = graph.add_node("reshape", [x], {"shape": [-1, 2, 4, 2, 4, 3]}, [view_type])
    perm_type = TensorType("float32", ("batch", 2, 2, 4, 4, 3))
    perm = graph.add_node("permute", [view.output], {"dims": [0, 1, 3, 2, 4, 5]}, [perm_type])
    out = graph.add_node(
        "reshape",
        [perm.output],
        {"shape": [-1, 4, 4, 3]},
        [TensorType("float32", ("windows", 4, 4, 3))],
    )
    graph.outputs = [out.output]
    assert not lower_rank(graph) and len(graph.nodes) == 3


class SwinBlock(nn.Module):
    """A shifted-window attention block as in Swin: window partition, attention with a
    relative position bias and the shift mask, window reverse, MLP."""

    def __init__(self, dim=8, heads=2, window=4, shift=2, res=8):
        super().__init__()
        self.heads, self.w, self.shift, self.res = heads, window, shift, res
        self.scale = (dim // heads) ** -0.5
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.table = nn.Parameter(torch.randn((2 * window - 1) ** 2, heads) * 0.5)
        grid = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
        flat = torch.stack(grid).flatten(1)
        rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0) + (window - 1)
        self.register_buffer("index", rel[..., 0] * (2 * window - 1) + rel[..., 1])
        image = torch.zeros(1, res, res, 1)
        spans = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
        for k, (hs, ws) in enumerate(itertools.product(spans, spans)):
            image[:, hs, ws, :] = k
        windows = self._partition(image).view(-1, window * window)
        mask = windows.unsqueeze(1) - windows.unsqueeze(2)
        self.register_buffer("mask", (mask != 0).float() * -100.0)

    def _partition(self, x):
        b, h, w, c = x.shape
        x = x.view(b, h // self.w, self.w, w // self.w, self.w, c)
        return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, self.w, self.w, c)

    def _reverse(self, windows):
        c, n = windows.shape[-1], self.res // self.w
        x = windows.view(-1, n, n, self.w, self.w, c)
        return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, self.res, self.res, c)

    def forward(self, x):
        b, _, c = x.shape
        n = self.w * self.w
        shortcut = x
        x = self.norm1(x).view(b, self.res, self.res, c)
        x = torch.roll(x, (-self.shift, -self.shift), (1, 2))
        windows = self._partition(x).view(-1, n, c)
        bw = windows.shape[0]
        qkv = self.qkv(windows).reshape(bw, n, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.table[self.index.view(-1)].view(n, n, -1).permute(2, 0, 1)
        attn = attn + bias.unsqueeze(0)
        nw = self.mask.shape[0]
        attn = attn.view(bw // nw, nw, self.heads, n, n) + self.mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, self.heads, n, n).softmax(-1)
        x = self.proj((attn @ v).transpose(1, 2).reshape(bw, n, c))
        x = self._reverse(x.view(-1, self.w, self.w, c))
        x = torch.roll(x, (self.shift, self.shift), (1, 2)).reshape(b, self.res * self.res, c)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


@pytest.mark.parametrize("optimize", ["O0", "O2"])
def test_swin_block_runs_whole_on_core_ml(optimize):
    torch.manual_seed(0)
    block = SwinBlock().eval()
    x = torch.randn(2, 64, 8)
    _, _, graph = apply(block, (x,), "lower_rank")
    assert max_rank(graph) <= MAX_RANK
    check_package(block, (x,), optimize)
