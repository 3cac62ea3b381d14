"""Recurrent layers (compiler/ops/recurrent.py) beyond the per-op sample tests: each
sample lowered whole on the targets whose code paths differ (iOS16: fp32-only recurrent
ops, a GRU step by step; iOS18: fp16 recurrent ops, the gru op), saved packages, an
embedding + LSTM classifier compiled with no fallback, what Core ML cannot express, and
coremltools-written packages of these layers on the reference executor.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import coreml_compile
from coreml_compile.compiler.frontends.torch_export import trace
from coreml_compile.compiler.ops import unsupported_reason
from coreml_compile.errors import UnsupportedOpError
from tests.conftest import assert_close
from tests.ops.samples import SAMPLES

RECURRENT = [s for s in SAMPLES if s.op in ("lstm", "gru", "rnn") and "on_torch" not in s.id]
# The MIL op each record lowers to, per target generation (a GRU before iOS18: none).
MIL_OP = {"lstm": "lstm", "rnn": "rnn", "gru": "gru"}


def _flat(out):
    return list(out) if isinstance(out, tuple | list) else [out]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("target", ["iOS16", "iOS18"])
@pytest.mark.parametrize("sample", RECURRENT, ids=lambda s: f"{s.op}-{s.id}")
def test_recurrent_sample_lowers_whole(sample, target, precision):
    compiled = coreml_compile.compile(
        sample.module,
        sample.inputs,
        precision=precision,
        minimum_deployment_target=target,
        allow_fallback=False,
    )
    assert compiled.plan is None
    ops = compiled.report.mil_ops
    if sample.op == "gru" and target == "iOS16":
        # Step by step: one state product per step and direction, no gru op.
        assert "gru" not in ops and ops.get("linear", 0) > 1, ops
    else:
        assert ops.get(MIL_OP[sample.op], 0) >= 1, ops
        # Never unrolled: no per-step gate arithmetic beside the recurrent ops.
        assert not {"sigmoid", "tanh", "mul"} & set(ops), ops
    with torch.no_grad():
        expected = _flat(sample.module(*sample.inputs))
    actual = _flat(compiled(*sample.inputs))
    for a, e in zip(actual, expected, strict=True):
        assert_close(a, e, precision, f"{sample.op}-{sample.id} {target}")


@pytest.mark.parametrize("target", ["iOS16", "iOS18"])
def test_saved_packages_run(tmp_path, target):
    for sample in RECURRENT:
        if "bidirectional" not in sample.id:
            continue
        compiled = coreml_compile.compile(
            sample.module, sample.inputs, minimum_deployment_target=target, allow_fallback=False
        )
        loaded = coreml_compile.load(compiled.save(tmp_path / f"{sample.op}-{target}.mlpackage"))
        with torch.no_grad():
            expected = _flat(sample.module(*sample.inputs))
        for a, e in zip(_flat(loaded(*sample.inputs)), expected, strict=True):
            assert_close(a, e, "fp16", f"{sample.op}-{sample.id} {target} saved")


class Classifier(nn.Module):
    """Token embeddings, a 2-layer bidirectional LSTM, a linear head on the final states."""

    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(1000, 64)
        self.lstm = nn.LSTM(64, 64, num_layers=2, batch_first=True, bidirectional=True)
        self.head = nn.Linear(128, 4)

    def forward(self, tokens):
        _, (h, _) = self.lstm(self.embedding(tokens))
        return self.head(torch.cat((h[-2], h[-1]), dim=-1))


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_embedding_lstm_classifier_compiles_whole(precision):
    torch.manual_seed(0)
    model = Classifier().eval()
    tokens = torch.randint(0, 1000, (2, 16), generator=torch.Generator().manual_seed(0))
    compiled = coreml_compile.compile(model, (tokens,), precision=precision, allow_fallback=False)
    assert compiled.plan is None
    ops = compiled.report.mil_ops
    assert ops.get("lstm") == 2, ops  # one op per (bidirectional) layer
    assert compiled.report.mil_op_count < 40, ops  # the unrolled form had ~1000
    with torch.no_grad():
        expected = model(tokens)
    assert_close(compiled(tokens), expected, precision, f"classifier {precision}")


def test_what_core_ml_cannot_express_is_named_and_runs_on_torch():
    torch.manual_seed(0)
    model = nn.LSTM(4, 6, proj_size=3).eval()
    x = torch.randn(5, 2, 4)
    graph = trace(model, (x,))
    (node,) = [n for n in graph.nodes if n.op == "lstm"]
    assert "proj_size" in unsupported_reason(node, 16)
    with pytest.raises(UnsupportedOpError, match="proj_size"):
        coreml_compile.compile(model, (x,), allow_fallback=False)
    compiled = coreml_compile.compile(model, (x,), precision="fp32")
    with torch.no_grad():
        out, (h, c) = model(x)
    for a, e in zip(_flat(compiled(x)), [out, h, c], strict=True):
        assert_close(a, e, "fp32", "lstm proj_size on torch")


def test_training_dropout_between_layers_is_refused():
    torch.manual_seed(0)
    model = nn.GRU(4, 6, num_layers=2, dropout=0.5)
    x = torch.randn(5, 2, 4)
    graph = trace(model.eval(), (x,))
    (node,) = [n for n in graph.nodes if n.op == "gru"]
    assert unsupported_reason(node, 16) is None
    node.attrs["train"] = True
    assert "random" in unsupported_reason(node, 16)


def test_coremltools_packages_of_recurrent_layers_run(tmp_path):
    """coremltools' own lowering (written independently of ours) checks the MIL kernels."""
    ct = pytest.importorskip("coremltools")

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(4, 6, num_layers=2, bidirectional=True, batch_first=True)
            self.rnn = nn.RNN(12, 5, batch_first=True)

        def forward(self, x):
            y, (h, c) = self.lstm(x)
            z, hr = self.rnn(y)
            return z, h, c, hr

    torch.manual_seed(0)
    model = Model().eval()
    x = torch.randn(2, 7, 4)
    with torch.no_grad():
        expected = model(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, x)
        mlmodel = ct.convert(
            traced,
            inputs=[ct.TensorType(name="x", shape=x.shape)],
            convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT32,
            minimum_deployment_target=ct.target.iOS16,
        )
    path = tmp_path / "coremltools.mlpackage"
    mlmodel.save(str(path))
    outputs = coreml_compile.load(path).predict({"x": x.numpy()})
    names = [o.name for o in mlmodel.get_spec().description.output]
    for name, want in zip(names, expected, strict=True):
        assert_close(torch.from_numpy(np.asarray(outputs[name])), want, "fp32", name)
