"""Writes into buffers that the torch frontend functionalises itself (``_buffer_writes``).

torch.export leaves ``cache[:, a:b] = x`` as ``copy_`` into a ``slice`` of the buffer;
the translator turns that into ``slice_scatter`` of the buffer's current value instead of
asking torch to re-trace the whole program. Each model here runs three calls through
the IR, its state carried from call to call, and must agree with torch running the
same calls on its own buffers. The models whose views outlive a write must take torch's
functionalisation, and still agree.
"""

from __future__ import annotations

import copy
import inspect

import pytest
import torch
from torch import nn
from torch.export import Dim

import coreml_compile
from coreml_compile.compiler.frontends import torch_export

ROWS, WIDTH = 8, 3


class _Cache(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("cache", torch.zeros(1, ROWS, WIDTH))


class SliceWrite(_Cache):
    """A KV cache's write: rows [end - n, end) at positions taken from shapes."""

    def forward(self, x, mask):
        end = mask.shape[1]
        self.cache[:, end - x.shape[1] : end] = x
        return self.cache[:, :end].sum(1)


class BroadcastWrite(_Cache):
    def forward(self, x, mask):
        self.cache[:, 1:4] = x[:, :1]  # one row, broadcast over three
        return self.cache * mask[:, :1, None]


class IndexPut(_Cache):
    """A KV cache written at run-time positions: ``cache[:, pos] = x`` (index_put_)."""

    def forward(self, x, pos):
        self.cache[:, pos] = x
        return self.cache.sum(1)


class IndexCopy(_Cache):
    def forward(self, x, index):
        self.cache.index_copy_(1, index, x)
        return self.cache.mean(1)


class WholeCopy(_Cache):
    """An exponential moving average kept in a buffer, replaced whole with ``copy_``."""

    def forward(self, x, mask):
        self.cache.copy_(self.cache * 0.5 + x.mean(1, keepdim=True))
        return self.cache[:, :2] * mask[:, :1, None]


class Counter(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("count", torch.zeros(1))

    def forward(self, x, mask):
        self.count += 1
        return x * self.count


class ReadBeforeAndAfter(_Cache):
    def forward(self, x, mask):
        old = self.cache * 1
        self.cache[:, 0:2] = x[:, :2] + old[:, 4:6]
        self.cache[:, 2:4] = x[:, :2] * 2
        return old + self.cache


class ViewOutlivesWrite(_Cache):
    """``head`` is a view taken before the write and read after it: it sees the write."""

    def forward(self, x, mask):
        head = self.cache[:, 0:4]
        self.cache[:, 1:3] = x[:, :2]
        return head * 2


class SplitPieceOutlivesWrite(_Cache):
    """A piece of the buffer cut before a write and read after it sees the write."""

    def forward(self, x, mask):
        first, _ = self.cache.split(4, 1)
        self.cache[:, 0:2] = x
        return first.sum(1) * mask[:, :1]


class ChainedWrites(Counter):
    def forward(self, x, mask):
        first = self.count.add_(1)
        self.count.mul_(3)
        return x * first  # `first` is the buffer: it sees the multiplication


def _slice_inputs(call):
    n = 2 + call % 2
    return torch.randn(1, n, WIDTH), torch.ones(1, 2 + 2 * call)


def _fixed_inputs(call):
    return torch.randn(1, 2, WIDTH), torch.ones(1, 4)


def _position_inputs(call):
    n = 2 + call % 2
    return torch.randn(1, n, WIDTH), torch.arange(2 * call, 2 * call + n)


def _index_inputs(call):
    return torch.randn(1, 2, WIDTH), torch.tensor([call, ROWS - 1 - call])


CASES = {
    # model, inputs of call i, dynamic shapes, whether the translator writes by itself
    "slice write": (SliceWrite, _slice_inputs, lambda n: ({1: n}, {1: Dim("end", max=ROWS)}), True),
    "index_put_": (IndexPut, _position_inputs, lambda n: ({1: n}, {0: n}), True),
    "broadcast write": (BroadcastWrite, _fixed_inputs, None, True),
    "index_copy_": (IndexCopy, _index_inputs, None, True),
    "counter": (Counter, _fixed_inputs, None, True),
    "whole copy_": (WholeCopy, _fixed_inputs, None, True),
    "read before and after": (ReadBeforeAndAfter, _fixed_inputs, None, True),
    "view outlives a write": (ViewOutlivesWrite, _fixed_inputs, None, False),
    "split piece outlives a write": (SplitPieceOutlivesWrite, _fixed_inputs, None, False),
    "chained writes": (ChainedWrites, _fixed_inputs, None, True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_buffer_writes_agree_with_torch_call_after_call(case):
    factory, inputs, dynamic, by_itself = CASES[case]
    model = factory().eval()
    shapes = dynamic(Dim("n", min=1, max=4)) if dynamic else None
    ep = torch_export.export(copy.deepcopy(model), inputs(0), shapes)
    assert (torch_export._buffer_writes(ep) is not None) == by_itself
    compiled = coreml_compile.compile(
        copy.deepcopy(model),
        inputs(0),
        dynamic_shapes=shapes,
        minimum_deployment_target="iOS18",
        precision="fp32",
        allow_fallback=False,
    )
    state = compiled.make_state()
    (name,) = dict(model.named_buffers())
    names = list(inspect.signature(model.forward).parameters)
    for call in range(3):
        feed = inputs(call)
        want = model(*feed)
        feeds = dict(zip(names, (t.numpy() for t in feed), strict=True))
        got = compiled.predict(feeds, state=state)
        # Core ML keeps states in fp16: the tolerance is fp16's.
        tolerance = {"rtol": 2e-3, "atol": 2e-3}
        torch.testing.assert_close(torch.from_numpy(got["output"]), want, **tolerance)
        torch.testing.assert_close(
            torch.from_numpy(state.read_state(name)).float(),
            dict(model.named_buffers())[name],
            **tolerance,
        )


def test_the_translator_writes_a_kv_cache_without_torchs_retrace():
    """The cost this saves: run_decompositions({}) re-traces the whole program."""
    model = SliceWrite().eval()
    ep = torch_export.export(model, _slice_inputs(0))
    calls = []
    original = type(ep).run_decompositions

    def spy(self, *args, **kwargs):
        calls.append(args)
        return original(self, *args, **kwargs)

    type(ep).run_decompositions = spy
    try:
        graph = torch_export.to_ir(ep)
    finally:
        type(ep).run_decompositions = original
    assert calls == []
    assert graph.op_counts()["slice_scatter"] == 1
