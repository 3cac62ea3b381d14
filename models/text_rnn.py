"""A recurrent text classifier, seeded weights.

Token embeddings, a 2-layer bidirectional ``nn.LSTM`` (batch first), a ``nn.GRU`` over its
outputs, then the GRU's final hidden state concatenated with a max pool over time into a
linear classifier. Small: vocabulary 1000, embeddings 64, hidden 64, sequence 32.
Model file: ``model()``, ``example_inputs()`` = (tokens,); output: logits (1, 4).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from zoo_helpers import seeded, token_batch

VOCAB = 1000
EMBED = 64
HIDDEN = 64
SEQUENCE = 32
CLASSES = 4


class TextRNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, EMBED, padding_idx=0)
        self.lstm = nn.LSTM(
            EMBED, HIDDEN, num_layers=2, batch_first=True, bidirectional=True, dropout=0.1
        )
        self.gru = nn.GRU(2 * HIDDEN, HIDDEN, batch_first=True)
        self.dropout = nn.Dropout(0.2)
        self.classifier = nn.Linear(2 * HIDDEN, CLASSES)

    def forward(self, tokens: Tensor) -> Tensor:
        x, _ = self.lstm(self.embedding(tokens))  # (B, S, 2 * HIDDEN)
        y, h = self.gru(x)  # h: (1, B, HIDDEN)
        features = torch.cat((h[-1], y.amax(dim=1)), dim=-1)
        return self.classifier(self.dropout(features))


def model() -> TextRNN:
    return seeded(TextRNN, seed=16)


def example_inputs() -> tuple[Tensor]:
    return (token_batch(VOCAB, SEQUENCE, seed=16),)
