"""Fold a constant per-channel (or scalar) multiplication into the layer before it.

    %y = conv(%x, %w, %b)       %z = mul(%y, %s[C,1,1])  ⇒  %z = conv(%x, %w * s, %b * s)
    %y = linear(%x, %w, %b)     %z = mul(%y, %s[C])      ⇒  %z = linear(%x, %w * s, %b * s)
    %y = batch_norm(%x, %g, %beta, %mean, %var)
    %z = mul(%y, %s[C,1,1])             ⇒  %z = batch_norm(%x, %g * s, %beta * s, %mean, %var)

The same for conv_transpose (whose weight is (in, out/groups, *kernel)). Graphs exported
from Caffe2 write each batch norm as batch_norm → mul → add by per-channel constants;
fold_batch_norm takes the batch norm, this pass the mul, fuse_bias (which runs next) the
add, so each conv + batch norm is one conv again.

The constant must broadcast along the output channel only (the last dim for linear,
dim 1 for the others) or be a scalar, be finite (``0 * inf`` in a weight would make NaN
where the product had none), leave the output's type unchanged, and the layer must have
no other reader. New arrays are computed in float64 and stored in the weight's dtype.
"""

from __future__ import annotations

import numpy as np

from coreml_compile.compiler.ir import Graph
from coreml_compile.passes import register_pass
from coreml_compile.passes._channel_layers import batch_norm, layer, same_type
from coreml_compile.passes._engine import Const, Match, New, Pattern, Rule, rewrite
from coreml_compile.passes._rewrite import channel_vector, new_constant


def _scale(m: Match) -> np.ndarray | None:
    vector = channel_vector(m["s"].data, m.node("y"))
    if vector is None or not np.all(np.isfinite(vector)):
        return None
    return vector


def _scaled_weight(op: str, w: np.ndarray, scale: np.ndarray, groups: int) -> np.ndarray:
    if op == "conv_transpose":
        # (in, out/groups, *k): output channel g * out/groups + j is w[g's inputs, j].
        inputs, per_group = w.shape[0], w.shape[1]
        grouped = w.reshape(groups, inputs // groups, per_group, *w.shape[2:])
        factors = scale.astype(w.dtype).reshape(groups, 1, per_group, *(1,) * (w.ndim - 2))
        return (grouped * factors).reshape(w.shape)
    # conv (out, in/groups, *k) and linear (out, in): output channels lead.
    return w * scale.astype(w.dtype).reshape((-1,) + (1,) * (w.ndim - 1))


def _fold_into_layer(graph: Graph, m: Match) -> New | None:
    layer, weight, bias = m.node("y"), m["w"], m["b"]
    scale = _scale(m)
    if scale is None:
        return None
    w = weight.data
    groups = layer.attrs.get("groups", 1)
    w_value = new_constant(
        graph, f"{layer.name}_weight_scaled", _scaled_weight(layer.op, w, scale, groups)
    )
    b_value = None
    if bias is not None:
        new_b = bias.data.astype(np.float64) * scale
        b_value = new_constant(graph, f"{layer.name}_bias_scaled", new_b.astype(bias.data.dtype))
    return New(layer.op, [m["x"], w_value, b_value], layer.attrs, name=layer.name)


def _fold_into_batch_norm(graph: Graph, m: Match) -> New | None:
    bn, gamma, beta, mean = m.node("y"), m["gamma"], m["beta"], m["mean"]
    scale = _scale(m)
    if scale is None:
        return None
    dtype = mean.data.dtype
    g = gamma.data.astype(np.float64).reshape(-1) if gamma is not None else np.ones(len(scale))
    g_value = new_constant(graph, f"{bn.name}_gamma_scaled", (g * scale).astype(dtype))
    b_value = None
    if beta is not None:
        new_b = beta.data.astype(np.float64).reshape(-1) * scale
        b_value = new_constant(graph, f"{bn.name}_beta_scaled", new_b.astype(dtype))
    inputs = [m["x"], g_value, b_value, mean, m["var"]]
    return New("batch_norm", inputs, bn.attrs, name=bn.name)


def _mul_of(producer: Pattern) -> Pattern:
    return Pattern("mul", producer, Const("s"), commute=True)


RULES = [
    Rule(_mul_of(layer()), _fold_into_layer, check=same_type),
    Rule(_mul_of(batch_norm()), _fold_into_batch_norm, check=same_type),
]


@register_pass("fuse_scale")
def fuse_scale(graph: Graph) -> bool:
    return rewrite(graph, RULES)
