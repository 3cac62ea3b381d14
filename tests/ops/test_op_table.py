"""Per-op tests, generated from the op table and tests/ops/samples.py.

For every sample: torch.export → IR holds the op; the IR verifies and the IR interpreter
matches torch; compile() gives a program coremltools serialises, and the reference
executor running that program matches torch in fp32 and in fp16.
"""

from __future__ import annotations

import pytest
import torch

import coreml_compile
from coreml_compile.compiler.frontends.torch_export import trace
from coreml_compile.compiler.interpreter import run_graph
from coreml_compile.compiler.ops import all_records
from tests.conftest import assert_close
from tests.ops.samples import SAMPLES


def _flat(out):
    return list(out) if isinstance(out, tuple | list) else [out]


def test_every_record_has_a_sample():
    sampled = {s.op for s in SAMPLES}
    # "aten" is the fallback record (tests/compiler/test_torch_frontend.py), "onnx" the
    # ONNX one (tests/compiler/test_onnx_frontend.py); compressed weights come only from
    # passes (tests/passes/test_compression_passes.py).
    elsewhere = {
        "aten",
        "onnx",
        "dequantize",
        "lut_to_dense",
        "sparse_to_dense",
        "sparse_dequantize",
        "sparse_lut_to_dense",
    }
    missing = set(all_records()) - sampled - elsewhere
    assert not missing, f"op records without samples in tests/ops/samples.py: {sorted(missing)}"


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: f"{s.op}-{s.id}")
def test_ir_matches_torch(sample):
    graph = trace(sample.module, sample.inputs)
    ops = set(graph.op_counts())
    assert sample.op in ops, f"{sample.op} not in traced graph ops {sorted(ops)}"
    assert ops <= {sample.op, *sample.also}, f"unexpected ops {sorted(ops)}"
    graph.verify()
    with torch.no_grad():
        expected = _flat(sample.module(*sample.inputs))
    actual = run_graph(graph, sample.inputs)
    for a, e in zip(actual, expected, strict=True):
        assert_close(a, e, "fp32", f"{sample.op}-{sample.id} IR")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: f"{s.op}-{s.id}")
def test_package_matches_torch(sample, precision):
    # -O0: each record's own lowering is under test, not what the passes leave of it.
    options = {"minimum_deployment_target": sample.target} if sample.target else {}
    compiled = coreml_compile.compile(
        sample.module,
        sample.inputs,
        precision=precision,
        optimize=0,
        # Every sample must lower, except those whose id says the op runs on torch.
        allow_fallback=sample.id.endswith("_on_torch"),
        **options,
    )
    with torch.no_grad():
        expected = _flat(sample.module(*sample.inputs))
    actual = _flat(compiled(*sample.inputs))
    for a, e in zip(actual, expected, strict=True):
        assert_close(a, e, precision, f"{sample.op}-{sample.id} package")


def test_a_3d_pool_whose_ceil_mode_adds_windows_is_refused():
    from coreml_compile.errors import UnsupportedOpError

    pool = torch.nn.MaxPool3d(2, ceil_mode=True)  # 5 wide: ceil gives 3 windows, floor 2
    with pytest.raises(UnsupportedOpError, match="ceil_mode adds windows"):
        coreml_compile.compile(pool, (torch.randn(1, 2, 5, 5, 5),), allow_fallback=False)
