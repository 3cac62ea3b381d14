"""The ONNX frontend: model-zoo graphs, translations where ONNX semantics differ from the
records, folding, names, fallback through onnx.reference, errors, and a torch round trip."""

from __future__ import annotations

import glob
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import coreml_compile
from coreml_compile.compiler.frontends.onnx_import import to_ir
from coreml_compile.errors import InputSpecError, ModelFileError, UnsupportedOpError

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
MODELS = Path(__file__).resolve().parents[2] / "models"


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    # Outputs given without a shape get the one ONNX infers (the checker wants one).
    inferred = onnx.shape_inference.infer_shapes(model).graph.output
    for out, known in zip(model.graph.output, inferred, strict=True):
        if not out.type.tensor_type.HasField("shape"):
            out.CopyFrom(known)
    return model


def _f32(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _check(model, feeds, *, ops=None, atol=1e-5, want=None):
    """Compile fp32 with no fallback; outputs must match onnx.reference (or ``want``)."""
    compiled = coreml_compile.compile(model, precision="fp32", allow_fallback=False)
    got = compiled.predict(feeds)
    want = ReferenceEvaluator(model).run(None, feeds) if want is None else want
    names = [o.name for o in model.graph.output]
    assert compiled.output_names == names
    for name, w in zip(names, want, strict=True):
        np.testing.assert_allclose(got[name], w, atol=atol, rtol=1e-4)
    if ops is not None:
        assert compiled.graph.op_counts() == ops
    return compiled


# -- the onnx model zoo's "light" graphs -----------------------------------------------------

LIGHT_MODELS = sorted(os.path.basename(f)[6:-5] for f in glob.glob(f"{LIGHT}/light_*.onnx"))


def test_light_models_are_there():
    assert len(LIGHT_MODELS) == 9, LIGHT_MODELS


@pytest.mark.slow
@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_zoo_graph_runs_whole_on_core_ml(name):
    path = f"{LIGHT}/light_{name}.onnx"
    # allow_fallback=False: every node must lower to Core ML.
    compiled = coreml_compile.compile(path, precision="fp32", allow_fallback=False)
    assert compiled.plan is None
    (input_name,) = compiled.input_names
    shape = compiled.input_specs()[input_name][0]
    n = int(np.prod(shape))
    # The inputs onnx's backend test runner feeds these graphs.
    x = (np.arange(n).reshape(shape) / n).astype(np.float32)
    expected = numpy_helper.to_array(onnx.load_tensor(f"{LIGHT}/light_{name}_output_0.pb"))
    (out,) = compiled.predict(x).values()
    assert out.shape == expected.shape
    assert _cosine(out, expected) >= 0.9999
    np.testing.assert_allclose(out, expected, rtol=1e-3, atol=1e-5)


def test_zoo_graph_folds_constant_of_shape_weights_and_keeps_names():
    g = to_ir(f"{LIGHT}/light_resnet50.onnx")
    ops = g.op_counts()
    assert ops["conv"] == 53 and ops["batch_norm"] == 53 and ops["add"] == 16
    assert "onnx" not in ops and len(g.constants) >= 53
    # "gpu_0/data_0" is made identifier-safe.
    assert [v.name for v in g.inputs] == ["gpu_0_data_0"]
    assert [v.name for v in g.outputs] == ["gpu_0_softmax_1"]


# -- translations --------------------------------------------------------------------------


@pytest.mark.parametrize("trans_a,trans_b", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_gemm_transposes_alpha_beta_with_constant_weight(trans_a, trans_b):
    rng = np.random.default_rng(0)
    a_shape = [5, 3] if trans_a else [3, 5]
    w = rng.standard_normal([4, 5] if trans_b else [5, 4]).astype(np.float32)
    c = rng.standard_normal([4]).astype(np.float32)
    node = helper.make_node(
        "Gemm", ["a", "w", "c"], ["y"], transA=trans_a, transB=trans_b, alpha=0.5, beta=2.0
    )
    model = _model(
        [node], [_f32("a", a_shape)], [_f32("y", [3, 4])], [_init("w", w), _init("c", c)]
    )
    a = rng.standard_normal(a_shape).astype(np.float32)
    compiled = _check(model, {"a": a})
    assert "linear" in compiled.graph.op_counts()


def test_gemm_with_two_inputs_and_a_matrix_bias():
    rng = np.random.default_rng(1)
    node = helper.make_node("Gemm", ["a", "b", "c"], ["y"], transB=1, alpha=2.0, beta=0.5)
    model = _model(
        [node], [_f32("a", [3, 5]), _f32("b", [4, 5]), _f32("c", [3, 4])], [_f32("y", [3, 4])]
    )
    feeds = {k: rng.standard_normal(s).astype(np.float32) for k, s in
             [("a", [3, 5]), ("b", [4, 5]), ("c", [3, 4])]}  # fmt: skip
    _check(model, feeds)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
def test_conv_auto_pad(auto_pad):
    rng = np.random.default_rng(2)
    w = rng.standard_normal([4, 3, 3, 3]).astype(np.float32)
    node = helper.make_node(
        "Conv", ["x", "w"], ["y"], auto_pad=auto_pad, strides=[2, 2], kernel_shape=[3, 3]
    )
    model = _model([node], [_f32("x", [1, 3, 8, 8])], [_f32("y", None)], [_init("w", w)])
    # One conv: SAME on an even size with stride 2 pads one side more, per side in the record.
    _check(model, {"x": rng.standard_normal([1, 3, 8, 8]).astype(np.float32)}, atol=1e-4,
           ops={"conv": 1})  # fmt: skip


def test_conv_asymmetric_pads_and_groups():
    rng = np.random.default_rng(3)
    w = rng.standard_normal([4, 2, 3, 3]).astype(np.float32)
    b = rng.standard_normal([4]).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[0, 1, 2, 1], group=2)
    model = _model(
        [node], [_f32("x", [1, 4, 6, 6])], [_f32("y", None)], [_init("w", w), _init("b", b)]
    )
    _check(model, {"x": rng.standard_normal([1, 4, 6, 6]).astype(np.float32)}, atol=1e-4)


@pytest.mark.parametrize(
    "starts,ends,axes,steps",
    [
        ([1, -3], [-1, 100], [-1, -2], [1, 1]),
        ([-1], [-100], [2], [-2]),  # negative step: a flip, then a slice
        ([0, 5], [4, 0], [1, 2], [2, -1]),
    ],
)
def test_slice_negative_axes_and_steps(starts, ends, axes, steps):
    x = np.arange(2 * 5 * 6, dtype=np.float32).reshape(2, 5, 6)
    inits = [
        _init("s", np.array(starts, np.int64)),
        _init("e", np.array(ends, np.int64)),
        _init("a", np.array(axes, np.int64)),
        _init("t", np.array(steps, np.int64)),
    ]
    node = helper.make_node("Slice", ["x", "s", "e", "a", "t"], ["y"])
    model = _model([node], [_f32("x", [2, 5, 6])], [_f32("y", None)], inits)
    _check(model, {"x": x})


@pytest.mark.parametrize(
    "mode,pads",
    [
        ("constant", [0, 0, 1, 2, 0, 0, 2, 1]),
        ("constant", [0, 1, -1, 0, 0, 0, 1, -2]),  # negative pads crop
        ("reflect", [0, 0, 2, 1, 0, 0, 1, 2]),
        ("edge", [0, 0, 1, 3, 0, 0, 2, 0]),
    ],
)
def test_pad_modes(mode, pads):
    x = np.random.default_rng(4).standard_normal([1, 2, 5, 6]).astype(np.float32)
    inits = [_init("p", np.array(pads, np.int64)), _init("v", np.array(1.5, np.float32))]
    node = helper.make_node("Pad", ["x", "p", "v"] if mode == "constant" else ["x", "p"], ["y"],
                            mode=mode)  # fmt: skip
    model = _model([node], [_f32("x", [1, 2, 5, 6])], [_f32("y", None)], inits)
    want = None
    if min(pads) < 0:  # onnx.reference cannot crop: crop by hand, then pad
        cropped = x[:, :, 1:, :4]
        want = [np.pad(cropped, [(0, 0), (1, 0), (0, 1), (0, 0)], constant_values=1.5)]
    _check(model, {"x": x}, want=want)


def test_pad_attribute_form_of_opset_7():
    x = np.random.default_rng(5).standard_normal([1, 1, 3, 4]).astype(np.float32)
    node = helper.make_node("Pad", ["x"], ["y"], pads=[0, 0, 1, 0, 0, 0, 0, 2], value=-1.0)
    model = _model([node], [_f32("x", [1, 1, 3, 4])], [_f32("y", None)], opset=7)
    model.ir_version = 3
    _check(model, {"x": x})


@pytest.mark.parametrize("opset", [11, 13, 18])
def test_split_sizes_as_attribute_or_input(opset):
    x = np.arange(2 * 7, dtype=np.float32).reshape(2, 7)
    inits = []
    if opset >= 13:
        inits = [_init("s", np.array([2, 5], np.int64))]
        node = helper.make_node("Split", ["x", "s"], ["a", "b"], axis=-1)
    else:
        node = helper.make_node("Split", ["x"], ["a", "b"], axis=-1, split=[2, 5])
    model = _model([node], [_f32("x", [2, 7])], [_f32("a", None), _f32("b", None)], inits, opset)
    _check(model, {"x": x})


def test_split_into_equal_parts_without_sizes():
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    node = helper.make_node("Split", ["x"], ["a", "b", "c"], axis=1, num_outputs=3)
    model = _model([node], [_f32("x", [2, 6])], [_f32(n, None) for n in "abc"], opset=18)
    _check(model, {"x": x})


def test_pools_with_same_upper_and_asymmetric_excluded_padding():
    x = np.random.default_rng(6).standard_normal([1, 2, 7, 7]).astype(np.float32)
    nodes = [
        helper.make_node("MaxPool", ["x"], ["m"], kernel_shape=[3, 3], strides=[2, 2],
                         auto_pad="SAME_UPPER"),
        helper.make_node("AveragePool", ["x"], ["a"], kernel_shape=[3, 3], pads=[0, 0, 1, 2]),
        helper.make_node("AveragePool", ["x"], ["b"], kernel_shape=[2, 2], pads=[1, 1, 1, 1],
                         strides=[2, 2], count_include_pad=1),
        helper.make_node("GlobalAveragePool", ["x"], ["g"]),
    ]  # fmt: skip
    model = _model(nodes, [_f32("x", [1, 2, 7, 7])], [_f32(n, None) for n in "mabg"])
    _check(model, {"x": x})


@pytest.mark.parametrize(
    "mode,transform,scales",
    [
        ("nearest", "asymmetric", [1, 1, 2, 2]),
        ("linear", "half_pixel", [1, 1, 2, 3]),
        ("linear", "align_corners", [1, 1, 2, 2]),
        ("cubic", "half_pixel", [1, 1, 2, 2]),
    ],
)
def test_resize_modes_and_coordinate_transforms(mode, transform, scales):
    x = np.random.default_rng(7).standard_normal([1, 2, 4, 5]).astype(np.float32)
    inits = [_init("scales", np.array(scales, np.float32))]
    node = helper.make_node(
        "Resize", ["x", "", "scales"], ["y"], mode=mode,
        coordinate_transformation_mode=transform, nearest_mode="floor",
    )  # fmt: skip
    model = _model([node], [_f32("x", [1, 2, 4, 5])], [_f32("y", None)], inits)
    compiled = _check(model, {"x": x}, atol=1e-4)
    assert not {"onnx"} & set(compiled.graph.op_counts())


def test_shape_arithmetic_folds_to_one_reshape():
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["y"]),
    ]
    inits = [
        _init("zero", np.array(0, np.int64)),
        _init("axes", np.array([0], np.int64)),
        _init("minus1", np.array([-1], np.int64)),
    ]
    model = _model(nodes, [_f32("x", [2, 3, 4])], [_f32("y", None)], inits)
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    _check(model, {"x": x}, ops={"reshape": 1})


def test_softmax_before_opset_13_flattens_at_axis():
    x = np.random.default_rng(8).standard_normal([2, 3, 4]).astype(np.float32)
    node = helper.make_node("Softmax", ["x"], ["y"], axis=1)
    model = _model([node], [_f32("x", [2, 3, 4])], [_f32("y", None)], opset=11)
    # onnx.reference computes opset 13's Softmax here; the opset 11 one is over (3, 4):
    flat = np.exp(x.reshape(2, 12) - x.reshape(2, 12).max(1, keepdims=True))
    _check(model, {"x": x}, want=[(flat / flat.sum(1, keepdims=True)).reshape(2, 3, 4)])


def test_elementwise_activations_and_reductions():
    rng = np.random.default_rng(9)
    nodes = [
        helper.make_node("LeakyRelu", ["x"], ["a"], alpha=0.2),
        helper.make_node("HardSigmoid", ["a"], ["b"], alpha=0.3, beta=0.4),
        helper.make_node("Clip", ["b", "lo", "hi"], ["c"]),
        helper.make_node("PRelu", ["x", "slope"], ["d"]),
        helper.make_node("Sum", ["c", "d", "x"], ["e"]),
        helper.make_node("ReduceMean", ["e"], ["f"], axes=[1, -1], keepdims=1),
        helper.make_node("Transpose", ["e"], ["g"], perm=[0, 2, 3, 1]),
        helper.make_node("Flatten", ["g"], ["h"], axis=2),
    ]
    inits = [
        _init("lo", np.array(0.1, np.float32)),
        _init("hi", np.array(0.6, np.float32)),
        _init("slope", rng.standard_normal([3, 1, 1]).astype(np.float32)),
    ]
    model = _model(nodes, [_f32("x", [1, 3, 4, 5])], [_f32("f", None), _f32("h", None)], inits)
    _check(model, {"x": rng.standard_normal([1, 3, 4, 5]).astype(np.float32)})


def test_mvn_space_to_depth_crd_max_pool_wide_pads_and_a_castlike_pad_value():
    nodes = [
        # default axes: the function body reads them, ONNX's inference must see them
        helper.make_node("MeanVarianceNormalization", ["x"], ["m"]),
        helper.make_node("SpaceToDepth", ["x"], ["s"], blocksize=2, mode="CRD"),
        # pads above half the kernel (torch's max pooling refuses them)
        helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[3, 3], pads=[2, 2, 2, 2]),
        # CastLike reads only x's type: its constant folds into the Pad's value
        helper.make_node("CastLike", ["low", "x"], ["low_x"]),
        helper.make_node("Pad", ["x", "pads", "low_x"], ["y"]),
    ]
    inits = [
        _init("low", np.array(-3.0, np.float64)),
        _init("pads", np.array([0, 0, 1, 0, 0, 0, 0, 2], np.int64)),
    ]
    shapes = {"m": [2, 3, 4, 4], "s": [2, 12, 2, 2], "p": [2, 3, 6, 6], "y": [2, 3, 5, 6]}
    outs = [_f32(n, shape) for n, shape in shapes.items()]
    model = _model(nodes, [_f32("x", [2, 3, 4, 4])], outs, inits, opset=28)
    x = np.random.default_rng(12).standard_normal([2, 3, 4, 4]).astype(np.float32)
    compiled = _check(model, {"x": x}, atol=1e-4)
    assert "onnx" not in compiled.graph.op_counts()


def test_reduce_norms_and_log_sums_run_on_core_ml():
    rng = np.random.default_rng(10)
    ops = ["ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp"]
    nodes = [
        helper.make_node(op, ["x", "axes"], [f"y{i}"], keepdims=i % 2) for i, op in enumerate(ops)
    ]
    outs = [_f32(f"y{i}", None) for i in range(len(ops))]
    axes = _init("axes", np.array([-1, 1], np.int64))
    model = _model(nodes, [_f32("x", [2, 3, 4])], outs, [axes], opset=18)
    # Large values: log-sum-exp must not overflow on the way.
    x = (rng.random([2, 3, 4]) * 100).astype(np.float32)
    _check(model, {"x": x}, atol=1e-4)


# -- element types Core ML computes differently -----------------------------------------------


def test_small_integers_compute_in_int32_and_wrap_like_onnx():
    nodes = [
        helper.make_node("Add", ["a", "b"], ["s"]),
        helper.make_node("Mul", ["s", "b"], ["p"]),
        helper.make_node("Cast", ["p"], ["y"], to=TensorProto.UINT8),
    ]
    ins = [helper.make_tensor_value_info(n, TensorProto.INT8, [4]) for n in "ab"]
    outs = [helper.make_tensor_value_info("y", TensorProto.UINT8, [4])]
    model = _model(nodes, ins, outs)
    compiled = coreml_compile.compile(model, precision="fp32", allow_fallback=False)
    # Core ML has no int8 tensors: the program takes and gives int32.
    assert {v.type.dtype for v in [*compiled.graph.inputs, *compiled.graph.outputs]} == {"int32"}
    a = np.array([100, -100, 7, 127], np.int8)
    b = np.array([100, -100, -3, 2], np.int8)
    want = ReferenceEvaluator(model).run(None, {"a": a, "b": b})[0]
    got = compiled.predict({"a": a, "b": b})["y"]
    np.testing.assert_array_equal(got, want.astype(np.int32))


def test_a_fallback_op_reads_and_makes_its_onnx_integer_types():
    # QuantizeLinear saturates at uint8's bounds and BitShift overflows at its width: both
    # run through onnx.reference, which must see uint8 tensors, not the int32 Core ML uses.
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"]),
        helper.make_node("BitShift", ["q", "shift"], ["y"], direction="LEFT"),
    ]
    inits = [
        _init("scale", np.array(0.5, np.float32)),
        _init("zero", np.array(10, np.uint8)),
        _init("shift", np.array([1, 2, 3, 1], np.uint8)),
    ]
    outs = [helper.make_tensor_value_info("y", TensorProto.UINT8, [4])]
    model = _model(nodes, [_f32("x", [4])], outs, inits)
    compiled = coreml_compile.compile(model, precision="fp32")
    x = np.array([-20.0, 3.0, 60.0, 500.0], np.float32)
    want = ReferenceEvaluator(model).run(None, {"x": x})[0]
    np.testing.assert_array_equal(compiled.predict({"x": x})["y"], want.astype(np.int32))


def test_float64_models_compute_in_float32():
    nodes = [helper.make_node("Mul", ["x", "w"], ["m"]), helper.make_node("Exp", ["m"], ["y"])]
    ins = [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [2, 3])]
    outs = [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [2, 3])]
    model = _model(nodes, ins, outs, [_init("w", np.full([3], 0.5))])
    compiled = coreml_compile.compile(model, precision="fp32", allow_fallback=False)
    assert compiled.graph.inputs[0].type.dtype == "float32"
    x = np.random.default_rng(11).standard_normal([2, 3])
    want = ReferenceEvaluator(model).run(None, {"x": x})[0]
    got = compiled.predict({"x": x.astype(np.float32)})["y"]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_bfloat16_weights_are_held_exactly_and_compute_on_core_ml():
    import ml_dtypes

    # A bf16 weight and a bf16 graph input: held in float32 (exactly), computed on Core ML.
    rng = np.random.default_rng(3)
    w = rng.standard_normal([4, 3]).astype(ml_dtypes.bfloat16)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    ins = [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [2, 4])]
    outs = [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [2, 3])]
    model = _model(nodes, ins, outs, [_init("w", w)])
    compiled = coreml_compile.compile(model, precision="fp32", allow_fallback=False)
    assert compiled.graph.inputs[0].type.dtype == "float32"
    exact = w.astype(np.float32)
    held = [c.data for c in compiled.graph.constants.values() if c.data.size == w.size]
    assert any(np.array_equal(h.reshape(-1), exact.reshape(-1)) for h in held) or any(
        np.array_equal(h.reshape(-1), exact.T.reshape(-1)) for h in held
    ), [h.dtype for h in held]
    x = rng.standard_normal([2, 4]).astype(ml_dtypes.bfloat16)
    want = ReferenceEvaluator(model).run(None, {"x": x})[0].astype(np.float32)
    got = compiled.predict({"x": x.astype(np.float32)})["y"]
    # Computed in float32: within bfloat16's rounding of ONNX's bfloat16 result.
    np.testing.assert_allclose(got, want, rtol=2**-7, atol=1e-6)


def test_a_cast_that_rounds_to_a_narrow_float_runs_in_onnx_reference():
    nodes = [
        helper.make_node("Cast", ["x"], ["r"], to=TensorProto.FLOAT8E4M3FN),
        helper.make_node("Cast", ["r"], ["y"], to=TensorProto.FLOAT),
    ]
    model = _model(nodes, [_f32("x", [5])], [_f32("y", [5])], opset=21)
    with pytest.raises(UnsupportedOpError, match="onnx::Cast"):
        coreml_compile.compile(model, precision="fp32", allow_fallback=False)
    compiled = coreml_compile.compile(model, precision="fp32")
    (node,) = [n for n in compiled.graph.nodes if n.op == "onnx"]
    assert node.attrs["output_types"] == [TensorProto.FLOAT8E4M3FN]
    x = np.array([0.4789, 1e6, -3.3, 1e-7, 17.0], np.float32)
    want = ReferenceEvaluator(model).run(None, {"x": x})[0]
    got = compiled.predict({"x": x})["y"]
    np.testing.assert_array_equal(got, want)
    assert got[1] == 448 and got[2] != x[2]  # saturated and rounded, not passed through


def test_int4_weights_dequantize_through_onnx_reference_and_wrap_on_casts():
    import ml_dtypes

    q = np.array([[-8, 7, 3], [1, -1, 0]], ml_dtypes.int4)
    nodes = [
        helper.make_node("DequantizeLinear", ["q", "scale"], ["w"]),
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node("Cast", ["x"], ["xi"], to=TensorProto.INT4),
        helper.make_node("Cast", ["xi"], ["y"], to=TensorProto.FLOAT),
    ]
    inits = [_init("q", q), _init("scale", np.array(0.5, np.float32))]
    outs = [_f32("m", [2, 3]), _f32("y", [2, 2])]
    model = _model(nodes, [_f32("x", [2, 2])], outs, inits, opset=21)
    compiled = coreml_compile.compile(model, precision="fp32")
    # The int4 weights are held in int32; the program never holds an int4 tensor.
    assert {v.type.dtype for v in compiled.graph.values()} <= {"float32", "int32"}
    x = np.array([[9.0, -10.0], [2.5, 7.0]], np.float32)
    want = ReferenceEvaluator(model).run(None, {"x": x})
    got = compiled.predict({"x": x})
    np.testing.assert_allclose(got["m"], want[0], rtol=1e-6)
    np.testing.assert_array_equal(got["y"], want[1])  # 9 -> -7, -10 -> 6: int4 wraps


def test_the_loader_refuses_onnx_edge_types_that_do_not_fit():
    from coreml_compile.errors import PackageError
    from coreml_compile.package.validate import check_fallback_graph

    nodes = [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.BFLOAT16)]
    outs = [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [3])]
    g = to_ir(_model(nodes, [_f32("x", [3])], outs))
    (node,) = [n for n in g.nodes if n.op == "onnx"]
    check_fallback_graph(g, "partition_1")  # as compiled: fine
    node.attrs["output_types"] = [99]
    with pytest.raises(PackageError, match="output_types"):
        check_fallback_graph(g, "partition_1")
    node.attrs["output_types"] = [TensorProto.FLOAT16]  # not what the Cast makes
    with pytest.raises(PackageError, match="may not run"):
        check_fallback_graph(g, "partition_1")


@pytest.mark.parametrize(
    "op, attrs",
    [
        ("LSTM", {}),
        ("LSTM", {"direction": "reverse"}),
        ("LSTM", {"direction": "bidirectional", "layout": 1}),
        ("GRU", {"linear_before_reset": 1, "direction": "bidirectional"}),
        ("RNN", {"direction": "bidirectional"}),
        ("RNN", {"direction": "reverse", "layout": 1}),
    ],
)
def test_recurrent_layers_with_constant_weights_run_on_core_ml(op, attrs):
    rng = np.random.default_rng(7)
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    dirs = 2 if attrs.get("direction") == "bidirectional" else 1
    seq, batch, inp, hidden = 5, 2, 3, 4
    layout = attrs.get("layout", 0)
    x_shape = [batch, seq, inp] if layout else [seq, batch, inp]
    state = [batch, dirs, hidden] if layout else [dirs, batch, hidden]
    inits = [
        _init("w", rng.standard_normal([dirs, gates * hidden, inp]).astype(np.float32) * 0.5),
        _init("r", rng.standard_normal([dirs, gates * hidden, hidden]).astype(np.float32) * 0.5),
        _init("b", rng.standard_normal([dirs, 2 * gates * hidden]).astype(np.float32) * 0.5),
    ]
    names = ["x", "w", "r", "b", "", "h0"] + (["c0"] if op == "LSTM" else [])
    outs = ["y", "y_h"] + (["y_c"] if op == "LSTM" else [])
    node = helper.make_node(op, names, outs, hidden_size=hidden, **attrs)
    ins = [_f32("x", x_shape), _f32("h0", state)] + ([_f32("c0", state)] if op == "LSTM" else [])
    model = _model([node], ins, [helper.make_tensor_value_info(o, 1, None) for o in outs], inits)
    feeds = {
        i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(
            np.float32
        )
        for i in ins
    }
    compiled = _check(model, feeds, atol=1e-5)
    assert {op.lower()} <= set(compiled.graph.op_counts())


def test_a_gru_that_resets_before_the_hidden_product_falls_back():
    # ONNX's default GRU (linear_before_reset=0) is not torch's form, which the record is.
    rng = np.random.default_rng(8)
    inits = [
        _init("w", rng.standard_normal([1, 12, 3]).astype(np.float32)),
        _init("r", rng.standard_normal([1, 12, 4]).astype(np.float32)),
    ]
    node = helper.make_node("GRU", ["x", "w", "r"], ["y"], hidden_size=4)
    model = _model([node], [_f32("x", [5, 2, 3])], [_f32("y", [5, 1, 2, 4])], inits)
    with pytest.raises(UnsupportedOpError, match="onnx::GRU"):
        coreml_compile.compile(model, precision="fp32", allow_fallback=False)
    compiled = coreml_compile.compile(model, precision="fp32")
    x = rng.standard_normal([5, 2, 3]).astype(np.float32)
    want = ReferenceEvaluator(model).run(None, {"x": x})[0]
    np.testing.assert_allclose(compiled.predict({"x": x})["y"], want, rtol=1e-5, atol=1e-5)


# -- names, shapes, loading, errors ------------------------------------------------------------


def _symbolic_model():
    node = helper.make_node("Relu", ["input.1"], ["out/put"])
    x = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["batch", 3])
    return _model([node], [x], [_f32("out/put", ["batch", 3])])


def test_symbolic_dims_need_shapes_and_shapes_fill_them():
    with pytest.raises(InputSpecError, match="symbolic input dimension.*batch"):
        coreml_compile.compile(_symbolic_model())
    compiled = coreml_compile.compile(_symbolic_model(), [(4, 3)], precision="fp32")
    assert compiled.input_specs() == {"input_1": ([4, 3], True)}
    assert compiled.output_names == ["out_put"]
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
    np.testing.assert_allclose(compiled.predict(x)["out_put"], np.maximum(x, 0))
    # by name, and from an example tensor
    assert coreml_compile.compile(_symbolic_model(), {"input.1": (2, 3)}).input_specs()["input_1"][
        0
    ] == [2, 3]
    assert coreml_compile.compile(_symbolic_model(), torch.zeros(5, 3)).input_specs()["input_1"][
        0
    ] == [5, 3]


def test_a_given_shape_must_fit_the_static_dims():
    with pytest.raises(InputSpecError, match="dimension 3 cannot be 4"):
        coreml_compile.compile(_symbolic_model(), [(2, 4)])


def test_checker_failures_are_one_line_model_file_errors():
    node = helper.make_node("Relu", ["nope"], ["y"])
    model = _model([node], [_f32("x", [2])], [_f32("y", [2])])
    with pytest.raises(ModelFileError, match="ONNX checker") as info:
        coreml_compile.compile(model)
    assert "\n" not in str(info.value)


def test_opsets_before_7_are_upgraded_or_refused():
    # Opset 1's Not: the version converter upgrades it.
    b_in, n_out = (helper.make_tensor_value_info(n, TensorProto.BOOL, [2, 3]) for n in "bn")
    old = _model([helper.make_node("Not", ["b"], ["n"])], [b_in], [n_out], opset=1)
    old.ir_version = 3
    b = np.array([[True, False, True], [False, False, True]])
    _check(old, {"b": b}, want=[~b])
    # Opset 6: a PRelu slope per channel (broadcast along axis 1 then, along the trailing
    # axes from opset 7 on), and a Pad whose upgrade adds an initializer (IR version 3).
    nodes = [
        helper.make_node("Constant", [], ["half"], value=numpy_helper.from_array(np.float32(0.5))),
        helper.make_node("PRelu", ["x", "slope"], ["p"]),
        helper.make_node("Pad", ["p"], ["y"], pads=[0, 0, 1, 0, 0, 2], value=0.5),
        helper.make_node("Mul", ["y", "half"], ["z"]),
    ]
    six = _model(nodes, [_f32("x", [2, 3, 4]), _f32("slope", [3])], [_f32("z", [2, 3, 7])],
                 opset=6)  # fmt: skip
    six.ir_version = 3
    rng = np.random.default_rng(11)
    x = rng.standard_normal([2, 3, 4]).astype(np.float32)
    slope = np.array([0.1, 0.2, 0.3], np.float32)
    p = np.where(x < 0, x * slope[None, :, None], x)
    want = np.pad(p, [(0, 0), (0, 0), (1, 2)], constant_values=0.5) * 0.5
    _check(six, {"x": x, "slope": slope}, want=[want])
    # Opset 1's Pad (``paddings``) is one the converter cannot upgrade.
    pad = helper.make_node("Pad", ["x"], ["y"], paddings=[0, 0, 1, 1])
    model = _model([pad], [_f32("x", [2, 3])], [_f32("y", [2, 5])], opset=1)
    model.ir_version = 3
    with pytest.raises(ModelFileError, match="opset 1 is older .* cannot upgrade it"):
        coreml_compile.compile(model)


def test_a_path_with_external_data_compiles(tmp_path):
    w = np.random.default_rng(10).standard_normal([64, 32]).astype(np.float32)
    model = _model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], [_f32("x", [2, 64])],
        [_f32("y", [2, 32])], [_init("w", w)],
    )  # fmt: skip
    path = tmp_path / "ext.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, location="ext.bin",
                    size_threshold=0)  # fmt: skip
    assert (tmp_path / "ext.bin").is_file()
    compiled = coreml_compile.compile(str(path), precision="fp32")
    x = np.random.default_rng(11).standard_normal([2, 64]).astype(np.float32)
    np.testing.assert_allclose(compiled.predict(x)["y"], x @ w, rtol=1e-4, atol=1e-4)


# -- fallback through onnx.reference ------------------------------------------------------------


def _hardmax_model():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Hardmax", ["r"], ["h"], axis=-1),  # no record
        helper.make_node("Mul", ["h", "x"], ["y"]),
    ]
    return _model(nodes, [_f32("x", [3, 5])], [_f32("y", [3, 5])])


def test_ops_with_no_record_fall_back_to_onnx_reference(tmp_path):
    model = _hardmax_model()
    compiled = coreml_compile.compile(model, precision="fp32")
    assert compiled.plan is not None
    assert any("onnx::Hardmax" in r for r in compiled.report.fallback_reasons.values())
    x = np.random.default_rng(12).standard_normal([3, 5]).astype(np.float32)
    want = ReferenceEvaluator(model).run(None, {"x": x})[0]
    np.testing.assert_allclose(compiled.predict(x)["y"], want, rtol=1e-5)
    # The package runs it again once saved and loaded (the loader checks the node first).
    compiled.save(tmp_path / "h.mlpackage")
    loaded = coreml_compile.load(tmp_path / "h.mlpackage")
    np.testing.assert_allclose(loaded.predict(x)["y"], want, rtol=1e-5)


def test_a_rank6_input_runs_in_a_package_that_is_all_fallback(tmp_path):
    # Core ML has no rank-6 tensors: the Transpose falls back, and the package's stand-in
    # Core ML model takes the input flattened.
    node = helper.make_node("Transpose", ["x"], ["y"], perm=[5, 4, 3, 2, 1, 0])
    model = _model([node], [_f32("x", [2, 1, 3, 1, 2, 3])], [_f32("y", [3, 2, 1, 3, 1, 2])])
    compiled = coreml_compile.compile(model, precision="fp32")
    assert compiled.plan is not None
    x = np.random.default_rng(13).standard_normal([2, 1, 3, 1, 2, 3]).astype(np.float32)
    compiled.save(tmp_path / "t.mlpackage")
    loaded = coreml_compile.load(tmp_path / "t.mlpackage")
    np.testing.assert_array_equal(loaded.predict(x)["y"], x.transpose(5, 4, 3, 2, 1, 0))


def test_no_fallback_lists_the_onnx_op():
    with pytest.raises(UnsupportedOpError, match="onnx::Hardmax"):
        coreml_compile.compile(_hardmax_model(), allow_fallback=False)


def test_custom_domain_ops_do_not_compile():
    node = helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")
    graph = helper.make_graph([node], "g", [_f32("x", [2])], [_f32("y", [2])])
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
    )
    with pytest.raises(ModelFileError, match="only standard ONNX ops"):
        coreml_compile.compile(model)


def test_the_loader_refuses_a_tampered_onnx_node():
    import base64

    from coreml_compile.errors import PackageError
    from coreml_compile.package.validate import check_fallback_graph

    g = to_ir(_hardmax_model())
    (node,) = [n for n in g.nodes if n.op == "onnx"]
    check_fallback_graph(g, "partition_1")  # as compiled: fine
    proto = onnx.NodeProto.FromString(base64.b64decode(node.attrs["node"]))
    proto.domain = "com.example"
    node.attrs["node"] = base64.b64encode(proto.SerializeToString()).decode()
    with pytest.raises(PackageError, match="may not run"):
        check_fallback_graph(g, "partition_1")
    node.attrs["node"] = "not base64!"
    with pytest.raises(PackageError, match="may not run"):
        check_fallback_graph(g, "partition_1")


# -- the CLI ------------------------------------------------------------------------------------


def test_cli_compiles_an_onnx_file(tmp_path):
    from click.testing import CliRunner

    from coreml_compile.cli.main import cli

    path = tmp_path / "m.onnx"
    onnx.save(_symbolic_model(), str(path))
    out = tmp_path / "m.mlpackage"
    result = CliRunner().invoke(cli, ["compile", str(path), "-o", str(out), "--input-shape", "2,3"])
    assert result.exit_code == 0, result.output
    assert out.is_dir()
    result = CliRunner().invoke(cli, ["compile", str(path), "-o", str(out)])
    assert result.exit_code != 0 and "symbolic input dimension" in result.output


# -- round trip with torch ------------------------------------------------------------------------


def _export(model, inputs, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, inputs, str(path), dynamo=False, input_names=["x"], output_names=["logits"]
        )


@pytest.mark.slow
def test_resnet18_through_onnx_matches_its_torch_path(tmp_path):
    sys.path.insert(0, str(MODELS))
    try:
        import resnet
    finally:
        sys.path.remove(str(MODELS))
    model = resnet.resnet18().eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "r18.onnx"
    _export(model, (x,), path)
    via_onnx = coreml_compile.compile(str(path), precision="fp32", allow_fallback=False)
    via_torch = coreml_compile.compile(model, (x,), precision="fp32", allow_fallback=False)
    assert via_onnx.report.mil_ops == via_torch.report.mil_ops
    a = via_onnx.predict({"x": x.numpy()})["logits"]
    b = via_torch.predict(x.numpy())[via_torch.output_names[0]]
    with torch.no_grad():
        ref = model(x).numpy()
    assert _cosine(a, ref) >= 0.9999 and _cosine(a, b) >= 0.9999
    np.testing.assert_allclose(a, ref, rtol=1e-3, atol=1e-3)
