"""A BERT-style text encoder (Devlin et al. 2018) giving sentence embeddings, seeded weights.

Token, position and segment embeddings with LayerNorm, a stack of post-norm
``nn.TransformerEncoderLayer`` (GELU) with a key-padding mask from ``attention_mask``, then
sentence-transformers style pooling: the mean over unmasked tokens, L2-normalised with
``F.normalize``. Small: 2 layers, hidden 128, 4 heads, sequence 32.
Model file: ``model()``, ``example_inputs()`` = (input_ids, attention_mask).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from zoo_helpers import seeded, token_batch

VOCAB = 1000
HIDDEN = 128
LAYERS = 2
HEADS = 4
MAX_POSITIONS = 64
SEQUENCE = 32


class BertEncoder(nn.Module):
    def __init__(self, vocab: int = VOCAB, hidden: int = HIDDEN, layers: int = LAYERS):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden, padding_idx=0)
        self.position_embeddings = nn.Embedding(MAX_POSITIONS, hidden)
        self.token_type_embeddings = nn.Embedding(2, hidden)
        self.norm = nn.LayerNorm(hidden, eps=1e-12)
        self.dropout = nn.Dropout(0.1)
        layer = nn.TransformerEncoderLayer(
            hidden, HEADS, 4 * hidden, dropout=0.1, activation="gelu", batch_first=True,
            layer_norm_eps=1e-12,
        )  # fmt: skip
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.register_buffer("position_ids", torch.arange(MAX_POSITIONS)[None], persistent=False)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        length = input_ids.shape[1]
        positions = self.position_ids[:, :length]
        segments = torch.zeros_like(input_ids)
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)
            + self.token_type_embeddings(segments)
        )
        x = self.dropout(self.norm(x))
        x = self.encoder(x, src_key_padding_mask=attention_mask == 0)
        # Mean over the real tokens only, then unit length (a sentence embedding).
        weights = attention_mask.unsqueeze(-1).to(x.dtype)
        pooled = (x * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=-1)


def model() -> BertEncoder:
    return seeded(BertEncoder, seed=11)


def example_inputs() -> tuple[Tensor, Tensor]:
    input_ids = token_batch(VOCAB, SEQUENCE, seed=11)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[:, 24:] = 0  # the last 8 positions are padding
    input_ids[:, 24:] = 0
    return input_ids, attention_mask
