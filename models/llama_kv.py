"""A Llama-style decoder with its KV cache kept between calls, seeded weights.

The blocks are models/llama.py's (RMSNorm, rotary embeddings, grouped-query attention,
SwiGLU); the difference is the cache. Each layer keeps its keys and values in buffers
(``k_cache``, ``v_cache``: batch 1, KV heads, CONTEXT positions, head dim) that
forward() writes in place, so they compile to Core ML states (iOS18), as Apple's recipe
for on-device language models has it.

One call takes the next ``n`` tokens and an additive ``causal_mask`` of shape
(1, 1, n, end): ``end`` is how many positions are filled after the call, so the tokens
sit at positions ``end - n .. end - 1``. A prompt is one call with ``n`` = its length
(prefill); each generated token is then one call with ``n`` = 1 (decode). ``n`` and
``end`` are dynamic: :func:`dynamic_shapes` declares them for torch.export.

Model file: ``model()``, ``example_inputs()`` = (tokens, causal_mask),
``dynamic_shapes()``; output: logits (1, n, VOCAB).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from llama import (
    DIM,
    HEADS,
    KV_HEADS,
    LAYERS,
    VOCAB,
    DecoderLayer,
    apply_rotary,
    repeat_kv,
    rotary_tables,
)
from torch import Tensor, nn
from zoo_helpers import seeded, token_batch

# Core ML states need iOS18 (benchmarks/coverage.py reads this).
MINIMUM_TARGET = "iOS18"
# Positions the cache holds. A call may fill up to CONTEXT - 1 of them: at exactly
# CONTEXT, torch.export would need a special case (the slice would be the whole buffer).
CONTEXT = 64
HEAD_DIM = DIM // HEADS


class CachedAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj = nn.Linear(DIM, HEADS * HEAD_DIM, bias=False)
        self.k_proj = nn.Linear(DIM, KV_HEADS * HEAD_DIM, bias=False)
        self.v_proj = nn.Linear(DIM, KV_HEADS * HEAD_DIM, bias=False)
        self.o_proj = nn.Linear(HEADS * HEAD_DIM, DIM, bias=False)
        self.register_buffer("k_cache", torch.zeros(1, KV_HEADS, CONTEXT, HEAD_DIM))
        self.register_buffer("v_cache", torch.zeros(1, KV_HEADS, CONTEXT, HEAD_DIM))

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor) -> Tensor:
        b, n, _ = x.shape
        end = mask.shape[-1]
        q = self.q_proj(x).view(b, n, HEADS, HEAD_DIM).transpose(1, 2)
        k = self.k_proj(x).view(b, n, KV_HEADS, HEAD_DIM).transpose(1, 2)
        v = self.v_proj(x).view(b, n, KV_HEADS, HEAD_DIM).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        # Write this call's keys and values, then attend over everything cached so far.
        self.k_cache[:, :, end - n : end] = k
        self.v_cache[:, :, end - n : end] = v
        keys = repeat_kv(self.k_cache[:, :, :end], HEADS // KV_HEADS)
        values = repeat_kv(self.v_cache[:, :, :end], HEADS // KV_HEADS)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        return self.o_proj(out.transpose(1, 2).reshape(b, n, HEADS * HEAD_DIM))


class CachedLlama(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed_tokens = nn.Embedding(VOCAB, DIM)
        self.layers = nn.ModuleList(DecoderLayer(CachedAttention()) for _ in range(LAYERS))
        self.norm = nn.RMSNorm(DIM, eps=1e-5)
        self.lm_head = nn.Linear(DIM, VOCAB, bias=False)
        cos, sin = rotary_tables(HEAD_DIM, CONTEXT)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, tokens: Tensor, causal_mask: Tensor) -> Tensor:
        n, end = tokens.shape[1], causal_mask.shape[-1]
        cos, sin = self.cos[end - n : end], self.sin[end - n : end]
        x = self.embed_tokens(tokens)
        for layer in self.layers:
            x = layer(x, cos, sin, causal_mask)
        return self.lm_head(self.norm(x))


def causal_mask(n: int, end: int) -> Tensor:
    """The additive mask for ``n`` new tokens at positions end - n .. end - 1: token i
    sees every position up to its own."""
    positions = torch.arange(end - n, end)[:, None]
    visible = torch.arange(end)[None, :] <= positions
    mask = torch.zeros(n, end).masked_fill(~visible, float("-inf"))
    return mask[None, None]


def model() -> CachedLlama:
    return seeded(CachedLlama, seed=13)


def example_inputs() -> tuple[Tensor, Tensor]:
    tokens = token_batch(VOCAB, 8, seed=13)
    return tokens, causal_mask(8, 8)


def dynamic_shapes() -> tuple[dict, dict]:
    """torch.export's dynamic_shapes: ``n`` new tokens, ``end`` filled positions."""
    n = torch.export.Dim("new_tokens", min=1, max=CONTEXT - 1)
    end = torch.export.Dim("filled", min=1, max=CONTEXT - 1)
    return {1: n}, {2: n, 3: end}
