"""Lay sequence models out for the Neural Engine: linear layers as 1x1 convolutions.

Apple's Neural Engine works on (B, C, 1, S) tensors, channels first; a linear layer on
(B, S, C) data runs faster as a 1x1 convolution on that layout (the principle of
Apple's ml-ane-transformers). This pass rewrites each such linear:

    %y = linear(%x: [B,S,Cin], %w, %b)
        ⇒   %t = permute(%x) dims=[0,2,1]         # (B, Cin, S)
            %u = unsqueeze(%t) dim=2              # (B, Cin, 1, S)
            %c = conv(%u, %w[Cout,Cin,1,1], %b)   # (B, Cout, 1, S)
            %y = permute(squeeze(%c, 2)) dims=[0,2,1]

and leaves the model's inputs and outputs as they were. Between two such layers the
inner layout changes are moved past element-wise ops by sink_transposes and cancelled by
cancel_transposes, so an MLP block keeps one layout change at each end. Opt-in: it is
not part of an -O level (``--ane-layout``).
"""

from __future__ import annotations

import numpy as np

from coreml_compile.compiler.ir import Graph, TensorType
from coreml_compile.passes import register_pass
from coreml_compile.passes._rewrite import const, forward, new_constant


@register_pass("ane_layout")
def ane_layout(graph: Graph) -> bool:
    changed = False
    for node in [n for n in graph.nodes if n.op == "linear"]:
        x, weight, bias = node.inputs
        w = const(weight)
        if x.type.rank != 3 or w is None or not x.type.is_static:
            continue
        b_, s_, c_in = x.type.shape
        c_out = w.shape[0]
        dtype = x.type.dtype
        t = graph.add_node(
            "permute", [x], {"dims": [0, 2, 1]}, [TensorType(dtype, (b_, c_in, s_))], before=node
        )
        u = graph.add_node(
            "unsqueeze", [t.output], {"dim": 2}, [TensorType(dtype, (b_, c_in, 1, s_))], before=node
        )
        kernel = new_constant(
            graph, f"{weight.name}_1x1", np.ascontiguousarray(w.reshape(c_out, c_in, 1, 1))
        )
        conv = graph.add_node(
            "conv",
            [u.output, kernel, bias],
            {"stride": [1, 1], "padding": [0, 0], "dilation": [1, 1], "groups": 1},
            [TensorType(dtype, (b_, c_out, 1, s_))],
            name=f"{node.name}_conv",
            before=node,
        )
        sq = graph.add_node(
            "squeeze", [conv.output], {"dim": 2}, [TensorType(dtype, (b_, c_out, s_))], before=node
        )
        back = graph.add_node(
            "permute",
            [sq.output],
            {"dims": [0, 2, 1]},
            [node.output.type],
            name=node.name,
            before=node,
        )
        changed |= forward(graph, node.output, back.output)
    return changed
