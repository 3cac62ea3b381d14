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
from coreml_compile.passes._rewrite import const, new_constant, only_user, replace_with_node


@register_pass("fold_batch_norm")
def fold_batch_norm(graph: Graph) -> bool:
    changed = False
    for bn in [n for n in graph.nodes if n.op == "batch_norm"]:
        x, gamma, beta, mean, var = bn.inputs
        layer = x.producer
        if layer is None or layer.op not in ("conv", "linear") or only_user(graph, x) is not bn:
            continue
        weight, bias = layer.inputs[1], layer.inputs[2]
        w = const(weight)
        params = [const(v) for v in (mean, var)]
        if (
            w is None
            or any(p is None for p in params)
            or (bias is not None and const(bias) is None)
        ):
            continue
        if any(v is not None and const(v) is None for v in (gamma, beta)):
            continue
        channels = w.shape[0]
        m, v = (p.astype(np.float64).reshape(-1) for p in params)
        g = const(gamma).astype(np.float64).reshape(-1) if gamma is not None else np.ones(channels)
        b0 = const(beta).astype(np.float64).reshape(-1) if beta is not None else np.zeros(channels)
        if len(m) != channels:
            continue
        scale = g / np.sqrt(v + bn.attrs["eps"])
        old_bias = const(bias).astype(np.float64) if bias is not None else np.zeros(channels)
        # The scale is computed in float64; the large multiply runs in the weight's dtype.
        new_w = w * scale.astype(w.dtype).reshape((-1,) + (1,) * (w.ndim - 1))
        new_b = (old_bias - m) * scale + b0
        w_value = new_constant(graph, f"{layer.name}_weight_bn", new_w)
        b_value = new_constant(graph, f"{layer.name}_bias_bn", new_b.astype(w.dtype))
        inputs = [layer.inputs[0], w_value, b_value]
        changed |= replace_with_node(graph, bn.output, layer.op, inputs, layer.attrs, layer.name)
    return changed
