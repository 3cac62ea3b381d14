"""Evaluate nodes whose inputs are all constants, at compile time.

    const %a = [1, 2]
    %b = mul(%a, 2.0)      ⇒   const %b = [2, 4]

A result is only folded when it is not much larger than its inputs (folding an
``expand`` of a scalar into a large tensor would grow the package, not shrink it).
"""

from __future__ import annotations

import re

import numpy as np
import torch

from coreml_compile.compiler import dtypes
from coreml_compile.compiler.ir import Graph, TensorType
from coreml_compile.compiler.ops import get_record
from coreml_compile.passes import register_pass
from coreml_compile.passes._rewrite import forward

# Fold when the result has at most this many elements, or no more than its inputs have.
_SMALL = 4096
_RANDOM = re.compile(r"rand|normal|bernoulli|multinomial|dropout|uniform|empty")


@register_pass("fold_constants")
def fold_constants(graph: Graph) -> bool:
    changed = False
    for node in list(graph.nodes):
        inputs = list(node.present_inputs())
        if not all(v.is_constant for v in inputs):
            continue
        if not inputs and (node.op != "aten" or _RANDOM.search(node.attrs["target"])):
            # Factories (zeros, arange, full) fold; random ones must run each time.
            continue
        record = get_record(node.op)
        if not record.foldable or (node.op == "dropout" and node.attrs.get("train")):
            continue
        sizes = sum(v.data.size for v in inputs)
        if any(o.type.numel() > max(_SMALL, sizes) for o in node.outputs):
            continue
        # Graph outputs stay produced by a node (they keep the user's names).
        wanted = [o for o in node.outputs if o.users and o not in graph.outputs]
        if not wanted:
            continue
        # Inputs are copied: constants share memory with the user's model.
        tensors = [None if v is None else torch.from_numpy(np.array(v.data)) for v in node.inputs]
        with torch.no_grad():
            results = record.run(tensors, node.attrs)
        for out, result in zip(node.outputs, results, strict=False):
            got = TensorType(dtypes.from_torch(result.dtype), tuple(result.shape))
            if out not in wanted or got != out.type:
                continue
            folded = graph.add_constant(f"{out.name}_folded", result.numpy())
            changed |= forward(graph, out, folded)
    return changed
