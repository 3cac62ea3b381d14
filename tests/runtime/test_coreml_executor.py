"""Core ML itself: the same models on Core ML and on the reference executor must agree.

These need macOS (Core ML and coremltools' native library). Elsewhere they skip with the
reason; .github/workflows/macos.yml runs them on a macOS runner.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import coreml_compile
from coreml_compile.runtime.devices import COMPUTE_UNITS, coreml_available
from tests.conftest import assert_close

_ok, _why = coreml_available()
pytestmark = [pytest.mark.apple, pytest.mark.skipif(not _ok, reason=_why or "no Core ML")]


@pytest.mark.parametrize("units", COMPUTE_UNITS)
def test_resnet18_on_core_ml_matches_the_reference_executor(tmp_path, units):
    import resnet

    model = resnet.resnet18()
    (x,) = resnet.example_inputs()
    path = coreml_compile.compile(model, (x,)).save(tmp_path / "r18.mlpackage")
    on_core_ml = coreml_compile.load(path, backend="coreml", compute_units=units)
    reference = coreml_compile.load(path, backend="reference")
    assert on_core_ml.backend == f"coreml:{units}"
    got = on_core_ml.predict({"x": x.numpy()})["output"]
    want = reference.predict({"x": x.numpy()})["output"]
    assert got.shape == (1, 1000)
    assert_close(torch.from_numpy(got), torch.from_numpy(want), "fp16", f"core ml {units}")
    with torch.no_grad():
        assert_close(torch.from_numpy(got), model(x), "fp16", f"core ml {units} vs torch")


def test_core_ml_rejects_wrong_input_shape(tmp_path):
    compiled = coreml_compile.compile(torch.nn.ReLU(), (torch.randn(2, 3),), backend="coreml")
    with pytest.raises(Exception, match="expected shape"):
        compiled.predict({"input": np.zeros((3, 2), np.float32)})


def test_core_ml_names_missing_and_unknown_inputs_like_the_reference_executor(tmp_path):
    # One check for every executor (runtime/input_shapes.check_input_names).
    compiled = coreml_compile.compile(torch.nn.ReLU(), (torch.randn(2, 3),))
    path = compiled.save(tmp_path / "m.mlpackage")
    for backend in ("coreml", "reference"):
        loaded = coreml_compile.load(path, backend=backend)
        with pytest.raises(Exception, match=r"unknown input\(s\) extra"):
            loaded.predict({"input": np.zeros((2, 3), np.float32), "extra": np.zeros(1)})


@pytest.mark.parametrize("target", ["iOS16", "iOS18"])  # nested packages / multifunction
def test_partitioned_package_on_core_ml_matches_the_reference_executor(tmp_path, target):
    import resnet

    model = resnet.resnet18_with_fallback()
    (x,) = resnet.example_inputs()
    compiled = coreml_compile.compile(model, (x,), minimum_deployment_target=target)
    path = compiled.save(tmp_path / "r18f.mlpackage")
    on_core_ml = coreml_compile.load(path, backend="coreml")
    reference = coreml_compile.load(path, backend="reference")
    wheres = [p.where for p in on_core_ml.placements()]
    assert wheres[0].startswith("coreml:") and wheres[1].startswith("torch:")
    got = on_core_ml.predict({"x": x.numpy()})["output"]
    want = reference.predict({"x": x.numpy()})["output"]
    assert_close(torch.from_numpy(got), torch.from_numpy(want), "fp16", f"partitioned {target}")
