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
from coreml_compile.passes._rewrite import const, forward, new_constant


@register_pass("batch_norm_to_scale")
def batch_norm_to_scale(graph: Graph) -> bool:
    changed = False
    for bn in [n for n in graph.nodes if n.op == "batch_norm"]:
        x, gamma, beta, mean, var = bn.inputs
        if x.type.rank != 2 or const(mean) is None or const(var) is None:
            continue
        if any(v is not None and const(v) is None for v in (gamma, beta)):
            continue
        channels = x.type.shape[1]
        g = const(gamma).astype(np.float64) if gamma is not None else np.ones(channels)
        b = const(beta).astype(np.float64) if beta is not None else np.zeros(channels)
        scale = g / np.sqrt(const(var).astype(np.float64) + bn.attrs["eps"])
        shift = b - const(mean).astype(np.float64) * scale
        dtype = const(mean).dtype
        s = new_constant(graph, f"{bn.name}_scale", scale.astype(dtype))
        t = new_constant(graph, f"{bn.name}_shift", shift.astype(dtype))
        scaled = graph.add_node("mul", [x, s], {}, [x.type], name=f"{bn.name}_scaled", before=bn)
        shifted = graph.add_node(
            "add", [scaled.output, t], {"alpha": 1}, [bn.output.type], name=bn.name, before=bn
        )
        if forward(graph, bn.output, shifted.output):
            changed = True
        else:
            graph.remove_node(shifted)
            graph.remove_node(scaled)
    return changed
