"""onnx's backend test suite (node cases) run on coreml_compile.onnx_backend.

Each case compiles a one-node (or function-expanded) model for the shapes of its inputs
and runs the package; ops with no record run through onnx.reference in a fallback
partition. The cases known not to pass are listed, grouped by cause, in
tests/compiler/onnx_backend_expected_failures.py and run as strict xfails; every other CPU
node case must pass.
The whole suite takes about 20 minutes on 2 cores: CI runs a fixed twentieth of it (marked
slow); COREML_COMPILE_ONNX_BACKEND=all runs every case.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import onnx.backend.test
import pytest
from onnx import TensorProto, helper

from coreml_compile.onnx_backend import CoreMLBackend
from tests.compiler.onnx_backend_expected_failures import EXPECTED_FAILURES

warnings.filterwarnings("ignore", category=RuntimeWarning, module="onnx")

backend_test = onnx.backend.test.BackendTest(CoreMLBackend, __name__)
backend_test.include(r"_cpu$")

_NODE_CASES = backend_test.test_cases["OnnxBackendNodeModelTest"]
# Cases known to fail are strict xfails: one that starts passing fails the run, so the
# list stays true (remove its name).
_EXPECTED = {name: cause for cause, names in EXPECTED_FAILURES.items() for name in names}
for _name in [n for n in vars(_NODE_CASES) if n.startswith("test_")]:
    if not _name.endswith("_cpu"):
        delattr(_NODE_CASES, _name)
    elif _name in _EXPECTED:
        _mark = pytest.mark.xfail(strict=True, reason=f"expected failure: {_EXPECTED[_name]}")
        setattr(_NODE_CASES, _name, _mark(getattr(_NODE_CASES, _name)))
# The whole suite takes about 20 minutes on 2 cores: CI runs every twentieth case (a fixed
# sample); COREML_COMPILE_ONNX_BACKEND=all runs them all.
if os.environ.get("COREML_COMPILE_ONNX_BACKEND") != "all":
    for _i, _name in enumerate(sorted(n for n in vars(_NODE_CASES) if n.startswith("test_"))):
        if _i % 20:
            delattr(_NODE_CASES, _name)
OnnxBackendNodeModelTest = pytest.mark.slow(_NODE_CASES)
# One name for the class: pytest collects every TestCase a module holds, under each name.
del _NODE_CASES


def test_backend_prepare_and_run():
    node = helper.make_node("Gemm", ["a", "b"], ["y"], transB=1)
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 4]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [3, 4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert CoreMLBackend.supports_device("CPU") and not CoreMLBackend.supports_device("CUDA")
    rep = CoreMLBackend.prepare(model)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal([2, 4]).astype(np.float32), rng.standard_normal([3, 4])
    (y,) = rep.run([a, b.astype(np.float32)])
    np.testing.assert_allclose(y, a @ b.T, rtol=1e-5, atol=1e-5)
    # Another batch size compiles again (symbolic dims come from the inputs).
    (y5,) = CoreMLBackend.run_model(model, [np.ones([5, 4], np.float32), b.astype(np.float32)])
    assert y5.shape == (5, 3) and y5.dtype == np.float32


def test_inputs_that_decide_shapes_are_compiled_in_as_constants():
    # A Reshape's shape fed as a graph input: Core ML needs it at compile time, so the rep
    # compiles the model again with that input bound (once per value).
    node = helper.make_node("Reshape", ["x", "shape"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6]),
            helper.make_tensor_value_info("shape", TensorProto.INT64, [2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["r", "c"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    rep = CoreMLBackend.prepare(model)
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    for shape in ([3, 4], [4, -1]):
        (y,) = rep.run([x, np.array(shape, np.int64)])
        np.testing.assert_array_equal(y, x.reshape(shape))
    assert len(rep._compiled) == 2


def test_a_rank0_input_reaches_a_fallback_partition_as_a_scalar():
    node = helper.make_node("Trilu", ["x", "k"], ["y"], upper=0)  # no record: onnx.reference
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4]),
            helper.make_tensor_value_info("k", TensorProto.INT64, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(1).standard_normal([3, 4]).astype(np.float32)
    (y,) = CoreMLBackend.run_model(model, [x, np.array(-1, np.int64)])
    np.testing.assert_array_equal(y, np.tril(x, -1))
