"""Attention on iOS18: Core ML's own scaled_dot_product_attention op.

The per-op tests (test_op_table.py) compile for the default target, where attention is
matmul, softmax, matmul; these compile the same samples for iOS18, where it is one op.
"""

from __future__ import annotations

import pytest
import torch

import coreml_compile
from tests.conftest import assert_close
from tests.ops.samples import SAMPLES

ATTENTION = [s for s in SAMPLES if s.op == "sdpa"]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("sample", ATTENTION, ids=lambda s: s.id)
def test_ios18_lowers_to_one_attention_op(sample, precision):
    compiled = coreml_compile.compile(
        sample.module,
        sample.inputs,
        precision=precision,
        minimum_deployment_target="iOS18",
        allow_fallback=False,
    )
    assert compiled.report.mil_ops.get("scaled_dot_product_attention") == 1
    assert "softmax" not in compiled.report.mil_ops
    with torch.no_grad():
        expected = sample.module(*sample.inputs)
    assert_close(compiled(*sample.inputs), expected, precision, f"sdpa-{sample.id} iOS18")


def test_attention_is_not_decomposed_by_the_frontend():
    sample = ATTENTION[0]
    compiled = coreml_compile.compile(sample.module, sample.inputs, optimize=0)
    assert compiled.graph.op_counts() == {"sdpa": 1}
