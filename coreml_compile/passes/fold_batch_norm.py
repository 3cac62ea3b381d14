"""Fold an inference batch norm into the convolution or linear layer before it.

    %c = conv(%x, %w, %b)
    %y = batch_norm(%c, %gamma, %beta, %mean, %var) eps
        ⇒   %y = conv(%x, %w * s, (%b - %mean) * s + %beta)     s = gamma / sqrt(var + eps)

The same for ``linear`` (a BatchNorm1d after a Linear). The producer must have no other
reader and every parameter must be a constant. New arrays are computed in float64 and
stored in the weight's dtype; the model's own tensors are never written.
"""

from __future__ import annotations

import numpy as np

from coreml_compile.compiler.ir import Graph
from coreml_compile.passes import register_pass
from coreml_compile.passes._engine import Const, Match, New, Pattern, Rule, rewrite
from coreml_compile.passes._rewrite import new_constant


def _fold(graph: Graph, m: Match) -> New | None:
    layer, w = m.node("layer"), m["w"].data
    # Batch norm scales dim 1; a linear layer's features are its last dim, so the two
    # coincide only at rank 2 (found by tests/runtime/test_fuzz_packages.py).
    if layer.op == "linear" and m.root.outputs[0].type.rank != 2:
        return None
    channels = w.shape[0]
    mean, var = (m[k].data.astype(np.float64).reshape(-1) for k in ("mean", "var"))
    if len(mean) != channels:
        return None
    gamma, beta, bias = (m[k] for k in ("gamma", "beta", "b"))
    g = gamma.data.astype(np.float64).reshape(-1) if gamma is not None else np.ones(channels)
    b0 = beta.data.astype(np.float64).reshape(-1) if beta is not None else np.zeros(channels)
    scale = g / np.sqrt(var + m.root.attrs["eps"])
    old_bias = bias.data.astype(np.float64) if bias is not None else np.zeros(channels)
    # The scale is computed in float64; the large multiply runs in the weight's dtype.
    new_w = w * scale.astype(w.dtype).reshape((-1,) + (1,) * (w.ndim - 1))
    new_b = (old_bias - mean) * scale + b0
    w_value = new_constant(graph, f"{layer.name}_weight_bn", new_w)
    b_value = new_constant(graph, f"{layer.name}_bias_bn", new_b.astype(w.dtype))
    return New(layer.op, [m["x"], w_value, b_value], layer.attrs, name=layer.name)


RULE = Rule(
    Pattern(
        "batch_norm",
        Pattern(("conv", "linear"), "x", Const("w"), Const("b?"), bind="layer", single_use=True),
        *(Const(name) for name in ("gamma?", "beta?", "mean", "var")),
    ),
    _fold,
)


@register_pass("fold_batch_norm")
def fold_batch_norm(graph: Graph) -> bool:
    return rewrite(graph, [RULE])
