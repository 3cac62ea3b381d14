"""Turn a batch norm on (N, C) data into a per-channel scale and shift.

    %y = batch_norm(%x: [N,C], %gamma, %beta, %mean, %var) eps
        ⇒   %y = add(mul(%x, %s), %t)      s = gamma / sqrt(var + eps), t = beta - mean * s

Core ML's batch_norm takes ranks 3 to 5, so on (N, C) data it costs three ops (lift,
normalise, squeeze) where the scale and shift cost two. Batch norms after a convolution
or linear layer are folded into it by fold_batch_norm instead, which runs first.
"""

from __future__ import annotations

import numpy as np

from coreml_compile.compiler.ir import Graph
from coreml_compile.passes import register_pass
from coreml_compile.passes._engine import Const, Match, New, Pattern, Rule, rewrite
from coreml_compile.passes._rewrite import new_constant


def _scale_and_shift(graph: Graph, m: Match) -> New:
    bn, x, channels = m.root, m["x"], m["x"].type.shape[1]
    gamma, beta, mean, var = (m[k] for k in ("gamma", "beta", "mean", "var"))
    g = gamma.data.astype(np.float64) if gamma is not None else np.ones(channels)
    b = beta.data.astype(np.float64) if beta is not None else np.zeros(channels)
    scale = g / np.sqrt(var.data.astype(np.float64) + bn.attrs["eps"])
    shift = b - mean.data.astype(np.float64) * scale
    s = new_constant(graph, f"{bn.name}_scale", scale.astype(mean.data.dtype))
    t = new_constant(graph, f"{bn.name}_shift", shift.astype(mean.data.dtype))
    scaled = New("mul", [x, s], type=x.type, name=f"{bn.name}_scaled")
    return New("add", [scaled, t], {"alpha": 1})


RULE = Rule(
    Pattern("batch_norm", "x", *(Const(name) for name in ("gamma?", "beta?", "mean", "var"))),
    _scale_and_shift,
    check=lambda m: m["x"].type.rank == 2,
)


@register_pass("batch_norm_to_scale")
def batch_norm_to_scale(graph: Graph) -> bool:
    return rewrite(graph, [RULE])
