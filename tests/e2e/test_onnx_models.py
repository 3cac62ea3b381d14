"""models/ through torch.onnx.export and the ONNX frontend: every model the TorchScript
exporter handles compiles with no fallback and agrees with torch; where the exported
graph spells the same ops, the Core ML program has the same ops as the torch path.

(llama is left out: the exporter has no rms_norm.)
"""

from __future__ import annotations

import importlib
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import coreml_compile

MODELS = Path(__file__).resolve().parents[2] / "models"
# The exported graph spells these as the torch path sees them: the same Core ML ops.
SAME_OPS = ("resnet", "mobilenetv2", "shufflenet", "deeplab", "unet")
# These compile whole and agree, but the exporter writes some ops out in pieces
# (attention's scaling, torch's roll as slices, the GRU's state slicing), and the Core
# ML programs differ by a few ops.
OTHERS = ("mobilevit", "swin", "bert", "vit", "text_rnn")

pytestmark = pytest.mark.slow


def _load(name: str):
    sys.path.insert(0, str(MODELS))
    try:
        module = importlib.import_module(name)
    finally:
        sys.path.remove(str(MODELS))
    return module.model().eval(), tuple(module.example_inputs())


def _cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("name", SAME_OPS + OTHERS)
def test_a_model_exported_to_onnx_compiles_whole_and_agrees_with_torch(tmp_path, name):
    model, inputs = _load(name)
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, inputs, str(path), dynamo=False)
    via_onnx = coreml_compile.compile(str(path), precision="fp32", allow_fallback=False)
    with torch.no_grad():
        want = model(*inputs)
    want = want[0] if isinstance(want, tuple | list) else want
    feeds = dict(zip(via_onnx.input_names, (x.numpy() for x in inputs), strict=True))
    got = via_onnx.predict(feeds)[via_onnx.output_names[0]]
    assert _cosine(got, want.numpy()) >= 0.9999
    if name in SAME_OPS:
        via_torch = coreml_compile.compile(model, inputs, precision="fp32", allow_fallback=False)
        assert via_onnx.report.mil_ops == via_torch.report.mil_ops
