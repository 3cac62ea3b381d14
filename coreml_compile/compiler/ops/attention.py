"""Attention: ``F.scaled_dot_product_attention`` as one record.

Kept whole, it lowers to Core ML's own ``scaled_dot_product_attention`` op from iOS18
(which the Neural Engine runs fused) and to matmul, softmax, matmul before; and the
frontend need not decompose it (three rounds of torch's decompositions, seconds per
attention model).
"""

from __future__ import annotations

import math

import numpy as np
import torch.nn.functional as F

from coreml_compile.compiler.ops import Op


def _repeat_heads(c, x, dims, groups: int, name: str):
    """(B, Hkv, S, E) -> (B, Hkv * groups, S, E), each head repeated ``groups`` times in
    place, as torch's enable_gqa does (query head h reads key/value head h // groups).
    ``dims``: x's IR shape, whose dynamic sizes become run-time values."""
    *lead, heads, s, e = dims
    five = c.mb.expand_dims(x=x, axes=[len(lead) + 1], name=f"{name}_heads")
    reps = [1] * (len(lead) + 1) + [groups, 1, 1]
    tiled = c.mb.tile(x=five, reps=reps, name=f"{name}_tiled")
    shape = c.sizes([*lead, heads * groups, s, e])
    return c.mb.reshape(x=tiled, shape=shape, name=f"{name}_repeated")


def _causal_mask(c, length, source):
    """key j is visible from query i where j <= i: a constant for static lengths, else
    built from two ranges at run time."""
    if isinstance(length, int) and isinstance(source, int):
        return np.tril(np.ones((length, source), dtype=bool))
    one = np.int32(1)
    rows = c.mb.range_1d(start=np.int32(0), end=_scalar(c, length), step=one)
    cols = c.mb.range_1d(start=np.int32(0), end=_scalar(c, source), step=one)
    rows = c.mb.expand_dims(x=rows, axes=[1])
    cols = c.mb.expand_dims(x=cols, axes=[0])
    return c.mb.less_equal(x=cols, y=rows, name=c.name + "_causal")


def _scalar(c, dim):
    size = c.size(dim)
    return np.int32(size) if isinstance(size, int) else size


class ScaledDotProductAttention(Op):
    """softmax(query @ key^T * scale + mask) @ value, as torch computes it.

    ``attn_mask`` is bool (True takes part) or float (added); ``is_causal`` masks keys
    after each query; ``enable_gqa`` lets several query heads share a key/value head.
    """

    name = "sdpa"
    dynamic = True
    inputs = ("query", "key", "value", "attn_mask?")
    attrs = {"dropout_p": 0.0, "is_causal": False, "scale": None, "enable_gqa": False}
    accelerated = "matmul"

    def macs(node):
        q, k = node.inputs[0].type, node.inputs[1].type
        return 2 * q.numel() * k.shape[-2]

    def kernel(query, key, value, attn_mask, *, dropout_p, is_causal, scale, enable_gqa):
        return F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=attn_mask,
            dropout_p=dropout_p,
            is_causal=is_causal,
            scale=scale,
            enable_gqa=enable_gqa,
        )

    def lower(c, query, key, value, attn_mask, *, dropout_p, is_causal, scale, enable_gqa):
        width = query.shape[-1]
        # Head counts from the IR types: MIL may name one dynamic size two ways.
        heads, kv_heads = (v.type.shape[-3] if v.type.rank >= 3 else 1 for v in c.node.inputs[:2])
        if query.rank >= 3 and heads != kv_heads:
            groups = heads // kv_heads
            key_dims, value_dims = (v.type.shape for v in c.node.inputs[1:3])
            key = _repeat_heads(c, key, key_dims, groups, c.name + "_key")
            value = _repeat_heads(c, value, value_dims, groups, c.name + "_value")
        mask = attn_mask
        if is_causal:
            # torch's causal mask is the lower triangle aligned at the top-left corner.
            mask = _causal_mask(c, c.node.inputs[0].type.shape[-2], c.node.inputs[1].type.shape[-2])
        default = 1.0 / math.sqrt(width)
        if c.generation >= 18:
            if scale is not None and not math.isclose(scale, default, rel_tol=1e-7):
                # Core ML's op always divides by sqrt(width): fold the rest into the query.
                query = c.mb.mul(
                    x=query, y=c.scalar(scale / default, like=query), name=c.name + "_q_scaled"
                )
            kwargs = {} if mask is None else {"attn_mask": mask}
            return c.mb.scaled_dot_product_attention(
                query=query, key=key, value=value, name=c.name, **kwargs
            )
        scores = c.mb.matmul(x=query, y=key, transpose_y=True, name=c.name + "_scores")
        scaled = c.mb.mul(
            x=scores,
            y=c.scalar(default if scale is None else scale, like=scores),
            name=c.name + "_scaled",
        )
        if mask is not None:
            is_bool = isinstance(mask, np.ndarray) or c.mil_dtype_of(mask) == "bool"
            if is_bool:
                scaled = c.mb.select(
                    cond=mask,
                    a=scaled,
                    b=c.scalar(float("-inf"), like=scaled),
                    name=c.name + "_masked",
                )
            else:
                (mask,) = c.promote(mask)
                scaled = c.mb.add(x=scaled, y=mask, name=c.name + "_masked")
        weights = c.mb.softmax(x=scaled, axis=-1, name=c.name + "_weights")
        return c.mb.matmul(x=weights, y=value, name=c.name)

    def check(node, generation):
        if node.attrs["dropout_p"]:
            return "attention with dropout (training) has no Core ML lowering"
        q, k = node.inputs[0].type, node.inputs[1].type
        if q.rank < 2 or k.rank != q.rank:
            return "query and key must have one rank of at least 2"
        if not isinstance(q.shape[-1], int):
            return "a dynamic head size (the default scale is 1/sqrt of it)"
        if q.rank >= 3:
            heads, kv_heads = q.shape[-3], k.shape[-3]
            if not (isinstance(heads, int) and isinstance(kv_heads, int)):
                if heads != kv_heads:
                    return "dynamic numbers of query and key/value heads that may differ"
            elif heads % kv_heads:
                return "query heads must be a multiple of key/value heads"
        return None
