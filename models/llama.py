"""A Llama-style decoder-only language model (Touvron et al. 2023), seeded weights.

Pre-norm blocks with ``nn.RMSNorm``; attention with rotary position embeddings (cos/sin
tables as buffers, ``rotate_half`` by slicing and ``torch.cat``), grouped-query attention
(8 query heads over 2 key/value heads, repeated with expand + reshape) and a causal mask
built with ``torch.triu``, through ``F.scaled_dot_product_attention``; a SwiGLU gated MLP.
Small: 3 layers, hidden 128, sequence 32, vocabulary 512.
Model file: ``model()``, ``example_inputs()`` = (tokens,); output: logits (1, 32, 512).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from zoo_helpers import seeded, token_batch

VOCAB = 512
DIM = 128
LAYERS = 3
HEADS = 8
KV_HEADS = 2
HIDDEN = 344  # ~ 8/3 * DIM, as Llama sizes its MLP
MAX_SEQUENCE = 64
SEQUENCE = 32
ROPE_THETA = 10000.0


def rotary_tables(head_dim: int, length: int, theta: float = ROPE_THETA) -> tuple[Tensor, Tensor]:
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    angles = torch.cat((angles, angles), dim=-1)  # (length, head_dim)
    return angles.cos(), angles.sin()


def rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    return x * cos + rotate_half(x) * sin


def repeat_kv(x: Tensor, times: int) -> Tensor:
    """(B, kv_heads, S, D) -> (B, kv_heads * times, S, D), each head repeated in place."""
    b, h, s, d = x.shape
    return x[:, :, None].expand(b, h, times, s, d).reshape(b, h * times, s, d)


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.head_dim = DIM // HEADS
        self.q_proj = nn.Linear(DIM, HEADS * self.head_dim, bias=False)
        self.k_proj = nn.Linear(DIM, KV_HEADS * self.head_dim, bias=False)
        self.v_proj = nn.Linear(DIM, KV_HEADS * self.head_dim, bias=False)
        self.o_proj = nn.Linear(HEADS * self.head_dim, DIM, bias=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor) -> Tensor:
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, HEADS, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, s, KV_HEADS, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, s, KV_HEADS, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        k, v = repeat_kv(k, HEADS // KV_HEADS), repeat_kv(v, HEADS // KV_HEADS)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(out.transpose(1, 2).reshape(b, s, -1))


class FeedForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.gate_proj = nn.Linear(DIM, HIDDEN, bias=False)
        self.up_proj = nn.Linear(DIM, HIDDEN, bias=False)
        self.down_proj = nn.Linear(HIDDEN, DIM, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, attention: nn.Module | None = None):
        # ``attention``: another attention block with this one's call (llama_kv's cached one).
        super().__init__()
        self.input_norm = nn.RMSNorm(DIM, eps=1e-5)
        self.attn = attention if attention is not None else Attention()
        self.post_attention_norm = nn.RMSNorm(DIM, eps=1e-5)
        self.mlp = FeedForward()

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor) -> Tensor:
        x = x + self.attn(self.input_norm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_norm(x))


class Llama(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed_tokens = nn.Embedding(VOCAB, DIM)
        self.layers = nn.ModuleList(DecoderLayer() for _ in range(LAYERS))
        self.norm = nn.RMSNorm(DIM, eps=1e-5)
        self.lm_head = nn.Linear(DIM, VOCAB, bias=False)
        cos, sin = rotary_tables(DIM // HEADS, MAX_SEQUENCE)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, tokens: Tensor) -> Tensor:
        s = tokens.shape[1]
        x = self.embed_tokens(tokens)
        cos, sin = self.cos[:s], self.sin[:s]
        # Additive causal mask: -inf above the diagonal, as Meta's reference code builds it.
        mask = torch.triu(torch.full((s, s), float("-inf"), device=tokens.device), diagonal=1)
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        return self.lm_head(self.norm(x))


def model() -> Llama:
    return seeded(Llama, seed=12)


def example_inputs() -> tuple[Tensor]:
    return (token_batch(VOCAB, SEQUENCE, seed=12),)
