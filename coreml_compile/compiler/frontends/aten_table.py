"""Which IR op each ATen overload becomes: one line per overload.

An entry names the IR record and, where the names differ, which ATen argument feeds
each IR input or attribute. Unless an entry says otherwise, IR input ``x`` reads ATen's
``self`` or ``input`` and ``y`` reads ``other``; every other IR name reads the ATen
argument of the same name. ``fixed`` sets attributes the overload implies, and
``accept`` rejects calls the record does not model (those stay ``aten`` fallback nodes).

In-place overloads (``relu_``) use the entry of their functional twin (``relu``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Mapping:
    op: str
    rename: dict[str, str] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)
    accept: Callable[[dict[str, Any]], bool] | None = None


M = Mapping

ATEN_TO_IR: dict[str, Mapping] = {
    # element-wise arithmetic
    "aten::add.Tensor": M("add"),
    "aten::add.Scalar": M("add"),
    "aten::sub.Tensor": M("sub"),
    "aten::sub.Scalar": M("sub"),
    "aten::rsub.Scalar": M("sub", {"x": "other", "y": "self"}),
    "aten::rsub.Tensor": M("sub", {"x": "other", "y": "self"}),
    "aten::mul.Tensor": M("mul"),
    "aten::mul.Scalar": M("mul"),
    "aten::div.Tensor": M("div"),
    "aten::div.Scalar": M("div"),
    "aten::div.Tensor_mode": M("div"),
    "aten::pow.Tensor_Scalar": M("pow", {"y": "exponent"}),
    "aten::pow.Tensor_Tensor": M("pow", {"y": "exponent"}),
    "aten::pow.Scalar": M("pow", {"y": "exponent"}),
    "aten::sqrt.default": M("sqrt"),
    "aten::rsqrt.default": M("rsqrt"),
    "aten::exp.default": M("exp"),
    "aten::log.default": M("log"),
    "aten::neg.default": M("neg"),
    "aten::abs.default": M("abs"),
    "aten::erf.default": M("erf"),
    "aten::clamp.default": M("clamp"),
    "aten::clamp_min.default": M("clamp"),
    "aten::clamp_max.default": M("clamp"),
    # activations
    "aten::relu.default": M("relu"),
    "aten::sigmoid.default": M("sigmoid"),
    "aten::tanh.default": M("tanh"),
    "aten::silu.default": M("silu"),
    "aten::gelu.default": M("gelu"),
    "aten::hardswish.default": M("hardswish"),
    "aten::hardsigmoid.default": M("hardsigmoid"),
    "aten::hardtanh.default": M("hardtanh"),
    "aten::relu6.default": M("hardtanh", fixed={"min_val": 0.0, "max_val": 6.0}),
    "aten::leaky_relu.default": M("leaky_relu"),
    "aten::elu.default": M("elu"),
    "aten::softmax.int": M("softmax"),
    "aten::_softmax.default": M("softmax"),
    "aten::log_softmax.int": M("log_softmax"),
    "aten::_log_softmax.default": M("log_softmax"),
    # matrix products and convolutions
    "aten::matmul.default": M("matmul"),
    "aten::mm.default": M("matmul", {"y": "mat2"}),
    "aten::bmm.default": M("matmul", {"y": "mat2"}),
    "aten::linear.default": M("linear"),
    "aten::addmm.default": M("addmm", {"bias": "self", "x": "mat1", "y": "mat2"}),
    "aten::conv1d.default": M("conv"),
    "aten::conv2d.default": M("conv"),
    "aten::conv3d.default": M("conv"),
    "aten::conv1d.padding": M("conv"),
    "aten::conv2d.padding": M("conv"),
    "aten::conv3d.padding": M("conv"),
    "aten::conv_transpose1d.default": M("conv_transpose"),
    "aten::conv_transpose2d.input": M("conv_transpose"),
    "aten::conv_transpose3d.input": M("conv_transpose"),
    "aten::embedding.default": M("embedding"),
    # pooling
    "aten::max_pool2d.default": M("max_pool2d"),
    "aten::avg_pool2d.default": M("avg_pool2d"),
    "aten::adaptive_avg_pool2d.default": M("adaptive_avg_pool2d"),
    "aten::adaptive_max_pool2d.default": M("adaptive_max_pool2d"),
    # normalisation
    "aten::batch_norm.default": M("batch_norm", accept=lambda a: not a["training"]),
    "aten::_native_batch_norm_legit_no_training.default": M("batch_norm"),
    "aten::layer_norm.default": M("layer_norm"),
    "aten::group_norm.default": M("group_norm"),
    "aten::instance_norm.default": M("instance_norm", accept=lambda a: a["use_input_stats"]),
    # reductions
    "aten::sum.dim_IntList": M("sum", accept=lambda a: a.get("dtype") is None),
    "aten::sum.default": M("sum", accept=lambda a: a.get("dtype") is None),
    "aten::mean.dim": M("mean", accept=lambda a: a.get("dtype") is None),
    "aten::mean.default": M("mean", accept=lambda a: a.get("dtype") is None),
    "aten::amax.default": M("amax"),
    "aten::amin.default": M("amin"),
    # data movement
    "aten::reshape.default": M("reshape"),
    "aten::view.default": M("reshape", {"shape": "size"}),
    "aten::_unsafe_view.default": M("reshape", {"shape": "size"}),
    "aten::flatten.using_ints": M("flatten"),
    "aten::permute.default": M("permute"),
    "aten::transpose.int": M("transpose"),
    "aten::t.default": M("transpose", fixed={"dim0": 0, "dim1": -1}),
    # Tensor.T: reverses all dims; as a transpose only for the ranks where it is one.
    "aten::numpy_T.default": M(
        "transpose",
        fixed={"dim0": 0, "dim1": -1},
        accept=lambda a: a["self"].meta["val"].dim() <= 2,
    ),
    "aten::squeeze.default": M("squeeze"),
    "aten::squeeze.dim": M("squeeze"),
    "aten::squeeze.dims": M("squeeze"),
    "aten::unsqueeze.default": M("unsqueeze"),
    "aten::cat.default": M("cat"),
    "aten::concat.default": M("cat"),
    "aten::slice.Tensor": M("slice"),
    "aten::select.int": M("select"),
    "aten::expand.default": M("expand"),
    "aten::pad.default": M("pad"),
    "aten::constant_pad_nd.default": M("pad", fixed={"mode": "constant"}),
    "aten::reflection_pad2d.default": M("pad", {"pad": "padding"}, {"mode": "reflect"}),
    "aten::replication_pad2d.default": M("pad", {"pad": "padding"}, {"mode": "replicate"}),
    # casts and identities
    "aten::to.dtype": M("cast"),
    "aten::_to_copy.default": M("cast", accept=lambda a: a.get("device") is None),
    "aten::dropout.default": M("dropout"),
    "aten::clone.default": M("identity"),
    "aten::contiguous.default": M("identity"),
    "aten::alias.default": M("identity"),
    "aten::detach.default": M("identity"),
    "aten::lift_fresh_copy.default": M("identity"),
}

# Overloads whose result shares storage with their input: an in-place update of such a
# result also changes the input, which the simple rebinding of in-place ops cannot model.
VIEW_OPS = frozenset(
    {
        "aten::view.default",
        "aten::_unsafe_view.default",
        "aten::reshape.default",
        "aten::flatten.using_ints",
        "aten::permute.default",
        "aten::transpose.int",
        "aten::t.default",
        "aten::numpy_T.default",
        "aten::squeeze.default",
        "aten::squeeze.dim",
        "aten::squeeze.dims",
        "aten::unsqueeze.default",
        "aten::slice.Tensor",
        "aten::select.int",
        "aten::expand.default",
        "aten::alias.default",
        "aten::detach.default",
    }
)

# Default IR input name -> the ATen argument names it reads, in order of preference.
DEFAULT_SOURCES = {"x": ("self", "input"), "y": ("other",)}
