"""fold_embedding_lookups: position and segment lookups that need no gather."""

from __future__ import annotations

import importlib

import torch
from torch import nn
from torch.export import Dim

import coreml_compile
from tests.passes.helpers import apply


class Embeddings(nn.Module):
    """BERT's: word, position (a sliced buffer of 0..N-1) and segment (all zeros)."""

    def __init__(self, positions: torch.Tensor | None = None):
        super().__init__()
        self.words = nn.Embedding(50, 8)
        self.positions = nn.Embedding(16, 8)
        self.segments = nn.Embedding(2, 8)
        ids = torch.arange(16)[None] if positions is None else positions
        self.register_buffer("position_ids", ids, persistent=False)

    def forward(self, ids):
        n = ids.shape[1]
        segment = self.segments(torch.zeros_like(ids))
        return self.words(ids) + self.positions(self.position_ids[:, :n]) + segment


ids = torch.randint(0, 50, (1, 6))


def test_position_and_segment_lookups_need_no_gather():
    before, after, _ = apply(Embeddings(), (ids,), "fold_embedding_lookups", "eliminate_dead_code")
    assert before["embedding"] == 3 and after["embedding"] == 1, (before, after)
    assert "full_like" not in after


def test_lookups_that_are_not_positions_or_broadcast_are_kept():
    reversed_positions = Embeddings(torch.arange(15, -1, -1)[None])
    _, after, _ = apply(reversed_positions, (ids,), "fold_embedding_lookups", "eliminate_dead_code")
    assert after["embedding"] == 2  # the reversed positions stay a lookup

    table = torch.randn(2, 8)

    def segment_returned(a):
        return nn.functional.embedding(torch.zeros_like(a), table)

    _, after, _ = apply(segment_returned, (ids,), "fold_embedding_lookups")
    assert after["embedding"] == 1  # an output, not read by an add: kept


def test_a_dynamic_encoder_looks_up_only_its_words():
    bert = importlib.import_module("bert")
    model = bert.model().eval()
    seq = Dim("seq", min=2, max=bert.MAX_POSITIONS)
    compiled = coreml_compile.compile(
        model, bert.example_inputs(), dynamic_shapes=({1: seq}, {1: seq}), precision="fp32"
    )
    assert compiled.report.ir_ops["embedding"] == 1
    for n in (5, 29):
        tokens = torch.randint(0, 1000, (1, n), generator=torch.Generator().manual_seed(n))
        mask = torch.ones(1, n, dtype=torch.int64)
        with torch.no_grad():
            want = model(tokens, mask)
        (got,) = compiled.predict(
            {"input_ids": tokens.numpy(), "attention_mask": mask.numpy()}
        ).values()
        torch.testing.assert_close(torch.from_numpy(got), want, rtol=1e-4, atol=1e-5)
