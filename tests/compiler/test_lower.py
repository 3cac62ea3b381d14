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


class _Heads(nn.Module):
    """What a transformer does with a dynamic sequence length: positions sliced to it,
    embeddings added, a view into heads, one of three projections selected, back again."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(50, 24)
        self.qkv = nn.Linear(24, 72)
        self.register_buffer("positions", torch.randn(1, 64, 24))

    def forward(self, tokens):
        n = tokens.shape[1]
        h = self.embed(tokens) + self.positions[:, :n]
        qkv = self.qkv(h).view(1, n, 3, 4, 6).permute(2, 0, 3, 1, 4)
        q = qkv[0]
        return q.transpose(1, 2).reshape(1, n, 24) + h


def test_dynamic_sizes_keep_their_coremltools_symbols():
    """Every dynamic size in the lowered program is the input's own symbol. Where
    coremltools makes a new one, each later reshape solves for it with sympy
    (milliseconds each): BERT's lowering took 3x its static time that way."""
    from coremltools.converters.mil.mil.types.symbolic import is_symbolic

    from coreml_compile.compiler.frontends.torch_export import export, to_ir

    tokens = torch.randint(0, 50, (1, 10))
    ep = export(_Heads().eval(), (tokens,), ({1: torch.export.Dim("n", min=2, max=64)},))
    function = lower.build_program(to_ir(ep), "fp32", "iOS16").functions["main"]
    (symbol,) = (d for d in function.inputs["tokens"].shape if is_symbolic(d))
    sizes = {
        (op.op_type, d)
        for op in function.operations
        for out in op.outputs
        if out.shape is not None
        for d in out.shape
        if is_symbolic(d)
    }
    assert {op for op, _ in sizes} >= {"slice_by_size", "reshape", "add", "linear"}
    assert {d for _, d in sizes} == {symbol}, sorted(map(str, sizes))


def test_a_program_prints_in_full_only_for_a_debug_log(caplog):
    graph = coreml_compile.compile(nn.ReLU(), (torch.randn(2, 3),)).graph
    program = lower.build_program(graph, "fp32")
    assert "relu" not in str(program)
    with caplog.at_level("DEBUG", logger="coremltools"):
        assert "relu" in str(program)


def test_op_names_are_unique_and_the_same_in_every_compile():
    """coremltools names an op it is not given a name for from a counter shared by the
    process; one such name equal to an IR node's made a package the loader misread."""
    from coreml_compile.compiler.frontends.torch_export import export, to_ir

    tokens = torch.randint(0, 50, (1, 10))
    ep = export(_Heads().eval(), (tokens,), ({1: torch.export.Dim("n", min=2, max=64)},))
    names = []
    for _ in range(2):
        function = lower.build_program(to_ir(ep), "fp32", "iOS16").functions["main"]
        outputs = [v.name for op in function.operations for v in op.outputs]
        assert len(outputs) == len(set(outputs)), sorted(outputs)
        # (coremltools still numbers the constants it makes for scalar arguments itself)
        names.append([op.name for op in function.operations if op.op_type != "const"])
    assert names[0] == names[1]
