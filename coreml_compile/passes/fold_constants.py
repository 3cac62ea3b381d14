"""Evaluate nodes whose inputs are all constants, at compile time.

    const %a = [1, 2]
    %b = mul(%a, 2.0)      ⇒   const %b = [2, 4]

A result is only folded when it is not much larger than its inputs (folding an
``expand`` of a scalar into a large tensor would grow the package, not shrink it), and
only for pure ops: a random op must run each time. Folding repeats until nothing folds.
"""

from __future__ import annotations

import numpy as np
import torch

from coreml_compile.compiler import dtypes
from coreml_compile.compiler.ir import Graph, Node, TensorType
from coreml_compile.compiler.ops import get_record, is_pure
from coreml_compile.passes import register_pass
from coreml_compile.passes._engine import NodeRule, rewrite
from coreml_compile.passes._rewrite import forward

# Fold when the result has at most this many elements, or no more than its inputs have.
_SMALL = 4096


@register_pass("fold_constants")
def fold_constants(graph: Graph) -> bool:
    return rewrite(graph, [NodeRule(_fold)])


def _fold(graph: Graph, node: Node) -> bool:
    inputs = list(node.present_inputs())
    record = get_record(node.op)
    # A shape-only node (full_like) needs static input shapes, not constant inputs.
    shape_only = record.shape_only and all(v.type.is_static for v in inputs)
    if not shape_only and not all(v.is_constant for v in inputs):
        return False
    # Factories (zeros, arange, full) fold; random ones must run each time.
    if not record.foldable or not is_pure(node):
        return False
    if not all(o.type.is_static for o in node.outputs):
        return False  # its size is only known at run time (arange(seq_len))
    sizes = sum(v.data.size for v in inputs if v.is_constant)
    if any(o.type.numel() > max(_SMALL, sizes) for o in node.outputs):
        return False
    # Graph outputs stay produced by a node (they keep the user's names).
    wanted = [o for o in node.outputs if o.users and o not in graph.outputs]
    if not wanted:
        return False
    tensors = [None if v is None else _example(v) for v in node.inputs]
    with torch.no_grad():
        results = record.run(tensors, node.attrs)
    changed = False
    for out, result in zip(node.outputs, results, strict=False):
        got = TensorType(dtypes.from_torch(result.dtype), tuple(result.shape))
        if out in wanted and got == out.type:
            folded = graph.add_constant(f"{out.name}_folded", result.numpy())
            changed |= forward(graph, out, folded)
    return changed


def _example(value) -> torch.Tensor:
    """A constant's data (copied: constants share memory with the user's model), or for a
    shape-only node's other inputs, an uninitialised tensor of the value's type."""
    if value.is_constant:
        return torch.from_numpy(np.array(value.data))
    return torch.empty(value.type.shape, dtype=dtypes.to_torch(value.type.dtype))
