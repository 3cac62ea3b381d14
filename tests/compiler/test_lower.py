"""Lowering and serialisation details: interface dtypes, metadata, weight writing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from torch import nn

import coreml_compile
from coreml_compile.compiler import lower


def _weights_digest(path: Path) -> str:
    return hashlib.sha256(
        (path / "Data/com.apple.CoreML/weights/weight.bin").read_bytes()
    ).hexdigest()


def test_fp16_weight_writer_writes_the_same_bytes_as_coremltools(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 6 * 6, 10))
    x = torch.randn(1, 3, 8, 8)
    ours = coreml_compile.compile(model, (x,)).save(tmp_path / "ours.mlpackage")

    # The same compile with coremltools' own weight writer.
    monkeypatch.setattr(lower, "fp16_weights_without_copies", _no_patch)
    theirs = coreml_compile.compile(model, (x,)).save(tmp_path / "theirs.mlpackage")
    assert _weights_digest(ours) == _weights_digest(theirs)


class _no_patch:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("precision,inner", [("fp16", "fp16"), ("fp32", "fp32")])
def test_interface_stays_fp32_and_metadata_is_recorded(precision, inner):
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    compiled = coreml_compile.compile(model, (torch.randn(2, 4),), precision=precision)
    spec = compiled.mlmodel.get_spec()
    array = spec.description.input[0].type.multiArrayType
    assert array.dataType == array.FLOAT32
    linear = [op for op in compiled.program.functions["main"].operations if op.op_type == "linear"]
    assert str(linear[0].outputs[0].dtype.__name__) == inner
    metadata = dict(spec.description.metadata.userDefined)
    assert metadata["coreml_compile.precision"] == precision
    # No date: two compiles of the same model must not differ by when they ran.
    assert "com.github.apple.coremltools.conversion_date" not in metadata


def test_int64_inputs_become_int32():
    compiled = coreml_compile.compile(nn.Embedding(10, 3), (torch.tensor([[1, 2, 3]]),))
    array = compiled.mlmodel.get_spec().description.input[0].type.multiArrayType
    assert array.dataType == array.INT32
    out = compiled(torch.tensor([[1, 2, 3]]))
    assert out.shape == (1, 3, 3)
