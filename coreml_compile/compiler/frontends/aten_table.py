"""Which IR op each ATen overload becomes: one line per overload.

An entry names the IR record and, where the names differ, which ATen argument feeds
each IR input or attribute. Unless an entry says otherwise, IR input ``x`` reads ATen's
``self`` or ``input`` and ``y`` reads ``other``; every other IR name reads the ATen
argument of the same name (a ``(name, index)`` pair reads one element of a list
argument: ``("hx", 0)``). ``fixed`` sets attributes the overload implies, and
``accept`` rejects calls the record does not model (those stay ``aten`` fallback nodes).

In-place overloads (``relu_``) use the entry of their functional twin (``relu``), and
the copying forms of views (``permute_copy``) the entry of the view (``permute``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Mapping:
    op: str
    rename: dict[str, str | tuple[str, int]] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)
    accept: Callable[[dict[str, Any]], bool] | None = None


M = Mapping


def _bools(bound: dict[str, Any], *names: str) -> bool:
    """True if every named argument is a bool tensor (or a Python bool)."""
    for name in names:
        arg = bound.get(name)
        val = getattr(arg, "meta", {}).get("val") if hasattr(arg, "meta") else arg
        if not (isinstance(val, bool) or str(getattr(val, "dtype", "")) == "torch.bool"):
            return False
    return True


def _restrides_in_order(bound: dict[str, Any]) -> bool:
    """Whether as_strided reads its (contiguous) source in order: no offset, and strides
    those of a contiguous ``size`` (a size-1 dim's stride is never used). Then it is a
    reshape; torch's decompositions write one (adaptive_avg_pool3d's memory format)."""
    source = getattr(bound.get("self"), "meta", {}).get("val")
    size, stride = bound.get("size"), bound.get("stride")
    if source is None or not source.is_contiguous() or bound.get("storage_offset") not in (None, 0):
        return False
    if not all(isinstance(d, int) for d in [*size, *stride]) or source.numel() != _numel(size):
        return False
    expected = 1
    for d, s in reversed(list(zip(size, stride, strict=True))):
        if d != 1 and s != expected:
            return False
        expected *= d
    return True


def _numel(size: list[int]) -> int:
    total = 1
    for d in size:
        total *= d
    return total


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
    "aten::cdist.default": M("cdist"),
    "aten::_cdist_forward.default": M("cdist"),
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
    "aten::_pdist_forward.default": M("pdist"),
    "aten::embedding_bag.padding_idx": M("embedding_bag"),
    "aten::_embedding_bag_forward_only.default": M("embedding_bag"),
    "aten::scaled_dot_product_attention.default": M("sdpa"),
    # pooling
    "aten::max_pool2d.default": M("max_pool2d"),
    "aten::avg_pool2d.default": M("avg_pool2d"),
    "aten::max_pool3d_with_indices.default": M("max_pool3d"),
    "aten::max_pool3d.default": M("max_pool3d"),
    "aten::avg_pool3d.default": M("avg_pool3d"),
    "aten::adaptive_avg_pool1d.default": M("adaptive_avg_pool1d"),
    "aten::adaptive_avg_pool2d.default": M("adaptive_avg_pool2d"),
    "aten::adaptive_max_pool2d.default": M("adaptive_max_pool2d"),
    # normalisation
    "aten::batch_norm.default": M("batch_norm", accept=lambda a: not a["training"]),
    "aten::_native_batch_norm_legit_no_training.default": M("batch_norm"),
    "aten::layer_norm.default": M("layer_norm"),
    "aten::group_norm.default": M("group_norm"),
    "aten::instance_norm.default": M("instance_norm", accept=lambda a: a["use_input_stats"]),
    # reductions
    "aten::sum.dim_IntList": M("sum"),
    "aten::sum.default": M("sum"),
    "aten::mean.dim": M("mean"),
    "aten::mean.default": M("mean"),
    "aten::amax.default": M("amax"),
    "aten::amin.default": M("amin"),
    "aten::max.dim": M("max_dim"),
    "aten::min.dim": M("min_dim"),
    "aten::max.default": M("amax"),
    "aten::min.default": M("amin"),
    # data movement
    "aten::reshape.default": M("reshape"),
    "aten::view.default": M("reshape", {"shape": "size"}),
    "aten::_unsafe_view.default": M("reshape", {"shape": "size"}),
    "aten::as_strided.default": M("reshape", {"shape": "size"}, accept=_restrides_in_order),
    "aten::flatten.using_ints": M("flatten"),
    "aten::permute.default": M("permute"),
    "aten::transpose.int": M("transpose"),
    "aten::t.default": M("transpose", fixed={"dim0": 0, "dim1": -1}),
    # Tensor.T: reverses all dims; as a transpose only for the ranks where it is one.
    # x.mT and x.mH (real tensors): the last two dims swapped.
    "aten::mT.default": M("transpose", fixed={"dim0": -2, "dim1": -1}),
    "aten::mH.default": M("transpose", fixed={"dim0": -2, "dim1": -1}),
    "aten::numpy_T.default": M(
        "transpose",
        fixed={"dim0": 0, "dim1": -1},
        accept=lambda a: a["self"].meta["val"].dim() <= 2,
    ),
    "aten::squeeze.default": M("squeeze"),
    "aten::squeeze.dim": M("squeeze"),
    "aten::squeeze.dims": M("squeeze"),
    "aten::unsqueeze.default": M("unsqueeze"),
    "aten::unfold.default": M("unfold"),
    "aten::repeat_interleave.self_int": M("repeat_interleave"),
    "aten::cat.default": M("cat"),
    "aten::concat.default": M("cat"),
    "aten::slice.Tensor": M("slice"),
    "aten::slice_scatter.default": M("slice_scatter"),
    "aten::copy.default": M("copy"),
    "aten::select.int": M("select"),
    "aten::expand.default": M("expand"),
    "aten::pad.default": M("pad"),
    "aten::constant_pad_nd.default": M("pad", fixed={"mode": "constant"}),
    "aten::reflection_pad2d.default": M("pad", {"pad": "padding"}, {"mode": "reflect"}),
    "aten::replication_pad2d.default": M("pad", {"pad": "padding"}, {"mode": "replicate"}),
    # casts and identities
    "aten::to.dtype": M("cast"),
    "aten::to.dtype_layout": M("cast"),
    "aten::type_as.default": M("cast"),  # the dtype comes from the result (other's)
    # A device move is no move in a package (Core ML places the data): only the dtype counts.
    "aten::_to_copy.default": M("cast"),
    "aten::dropout.default": M("dropout"),
    "aten::clone.default": M("identity"),
    "aten::contiguous.default": M("identity"),
    "aten::alias.default": M("identity"),
    "aten::detach.default": M("identity"),
    "aten::lift_fresh_copy.default": M("identity"),
    # -- coverage part B: splitting/joining, indexing, resizing, reductions --------------
    "aten::split.Tensor": M("split"),
    "aten::split.sizes": M("split"),
    "aten::split_with_sizes.default": M("split", {"split_size": "split_sizes"}),
    "aten::chunk.default": M("chunk"),
    "aten::tensor_split.sections": M("tensor_split"),
    "aten::tensor_split.indices": M("tensor_split"),
    "aten::unbind.int": M("unbind"),
    "aten::stack.default": M("stack"),
    "aten::narrow.default": M("narrow"),
    "aten::unflatten.int": M("unflatten"),
    "aten::expand_as.default": M("expand_as"),
    "aten::movedim.int": M("movedim"),
    "aten::movedim.intlist": M("movedim"),
    "aten::repeat.default": M("repeat"),
    "aten::flip.default": M("flip"),
    "aten::diagonal.default": M("diagonal"),
    "aten::linalg_diagonal.default": M("diagonal", {"x": "A"}),
    "aten::triu.default": M("triu"),
    "aten::tril.default": M("tril"),
    "aten::roll.default": M("roll"),
    "aten::index_select.default": M("index_select"),
    "aten::gather.default": M("gather"),
    "aten::scatter.src": M("scatter"),
    "aten::scatter_add.default": M("scatter", fixed={"reduce": "sum"}),
    # scatter_reduce without x's own values (include_self=False) has no MIL mode.
    "aten::scatter_reduce.two": M("scatter", accept=lambda b: b.get("include_self", True)),
    "aten::take_along_dim.default": M("take_along_dim"),
    "aten::index.Tensor": M("index"),
    "aten::index_put.default": M("index_put"),
    "aten::upsample_nearest2d.vec": M("upsample_nearest2d"),
    "aten::upsample_nearest2d.default": M("upsample_nearest2d"),
    "aten::upsample_bilinear2d.vec": M("upsample_bilinear2d"),
    "aten::upsample_bilinear2d.default": M("upsample_bilinear2d"),
    "aten::upsample_bicubic2d.vec": M("upsample_bicubic2d"),
    "aten::upsample_bicubic2d.default": M("upsample_bicubic2d"),
    "aten::pixel_shuffle.default": M("pixel_shuffle"),
    "aten::pixel_unshuffle.default": M("pixel_unshuffle"),
    "aten::grid_sampler.default": M("grid_sample"),
    "aten::grid_sampler_2d.default": M("grid_sample"),
    "aten::im2col.default": M("im2col"),
    "aten::col2im.default": M("col2im"),
    "aten::cumsum.default": M("cumsum"),
    "aten::cumprod.default": M("cumprod"),
    "aten::logcumsumexp.default": M("logcumsumexp"),
    "aten::argmax.default": M("argmax"),
    "aten::argmin.default": M("argmin"),
    "aten::topk.default": M("topk"),
    "aten::bucketize.Tensor": M("bucketize"),
    # searchsorted(sequence, x) is bucketize(x, sequence) for a 1-d sequence (the check)
    # and no sorter.
    "aten::searchsorted.Tensor": M(
        "bucketize",
        {"x": "self", "boundaries": "sorted_sequence"},
        accept=lambda b: b.get("sorter") is None,
    ),
    "aten::kthvalue.default": M("kthvalue"),
    "aten::median.dim": M("kthvalue"),
    "aten::sort.default": M("sort"),
    "aten::sort.stable": M("sort"),
    "aten::linalg_vector_norm.default": M("vector_norm"),
    "aten::prod.dim_int": M("prod"),
    "aten::prod.default": M("prod"),
    "aten::var.correction": M("var"),
    "aten::var_mean.correction": M("var_mean"),
    "aten::_weight_norm.default": M("weight_norm"),
    # -- end of coverage part B ----------------------------------------------------------
    # -- coverage part A: comparisons, logic, math, activations, factories ---------------
    "aten::eq.Tensor": M("eq"),
    "aten::eq.Scalar": M("eq"),
    "aten::ne.Tensor": M("ne"),
    "aten::ne.Scalar": M("ne"),
    "aten::lt.Tensor": M("lt"),
    "aten::lt.Scalar": M("lt"),
    "aten::le.Tensor": M("le"),
    "aten::le.Scalar": M("le"),
    "aten::gt.Tensor": M("gt"),
    "aten::gt.Scalar": M("gt"),
    "aten::ge.Tensor": M("ge"),
    "aten::ge.Scalar": M("ge"),
    "aten::logical_and.default": M("logical_and"),
    "aten::logical_or.default": M("logical_or"),
    "aten::logical_xor.default": M("logical_xor"),
    "aten::logical_not.default": M("logical_not"),
    # &, |, ^, ~ are logical ops on bool tensors only (integer bit operations stay aten).
    "aten::bitwise_and.Tensor": M("logical_and", accept=lambda a: _bools(a, "self", "other")),
    "aten::bitwise_or.Tensor": M("logical_or", accept=lambda a: _bools(a, "self", "other")),
    "aten::bitwise_xor.Tensor": M("logical_xor", accept=lambda a: _bools(a, "self", "other")),
    "aten::__and__.Tensor": M("logical_and", accept=lambda a: _bools(a, "self", "other")),
    "aten::__or__.Tensor": M("logical_or", accept=lambda a: _bools(a, "self", "other")),
    "aten::__xor__.Tensor": M("logical_xor", accept=lambda a: _bools(a, "self", "other")),
    "aten::bitwise_not.default": M("logical_not", accept=lambda a: _bools(a, "self")),
    "aten::where.self": M("where", {"cond": "condition"}),
    "aten::where.ScalarSelf": M("where", {"cond": "condition"}),
    "aten::where.ScalarOther": M("where", {"cond": "condition"}),
    "aten::where.Scalar": M("where", {"cond": "condition"}),
    "aten::masked_fill.Scalar": M("masked_fill"),
    "aten::masked_fill.Tensor": M("masked_fill"),
    "aten::all.default": M("all"),
    "aten::all.dim": M("all"),
    "aten::all.dims": M("all"),
    "aten::any.default": M("any"),
    "aten::any.dim": M("any"),
    "aten::any.dims": M("any"),
    "aten::isnan.default": M("isnan"),
    "aten::isinf.default": M("isinf"),
    "aten::_safe_softmax.default": M("safe_softmax"),
    "aten::sin.default": M("sin"),
    "aten::cos.default": M("cos"),
    "aten::tan.default": M("tan"),
    "aten::asin.default": M("asin"),
    "aten::acos.default": M("acos"),
    "aten::atan.default": M("atan"),
    "aten::sinh.default": M("sinh"),
    "aten::cosh.default": M("cosh"),
    "aten::asinh.default": M("asinh"),
    "aten::acosh.default": M("acosh"),
    "aten::atanh.default": M("atanh"),
    "aten::atan2.default": M("atan2"),
    "aten::arctan2.default": M("atan2"),
    "aten::hypot.default": M("hypot"),
    "aten::log1p.default": M("log1p"),
    "aten::expm1.default": M("expm1"),
    "aten::erfc.default": M("erfc"),
    "aten::log2.default": M("log2"),
    "aten::log10.default": M("log10"),
    "aten::exp2.default": M("exp2"),
    "aten::reciprocal.default": M("reciprocal"),
    "aten::sign.default": M("sign"),
    "aten::square.default": M("square"),
    "aten::floor.default": M("floor"),
    "aten::ceil.default": M("ceil"),
    "aten::round.default": M("round"),
    "aten::round.decimals": M("round"),
    "aten::trunc.default": M("trunc"),
    "aten::fix.default": M("trunc"),
    "aten::remainder.Tensor": M("remainder"),
    "aten::remainder.Scalar": M("remainder"),
    "aten::remainder.Scalar_Tensor": M("remainder"),
    "aten::fmod.Tensor": M("fmod"),
    "aten::fmod.Scalar": M("fmod"),
    "aten::minimum.default": M("minimum"),
    "aten::maximum.default": M("maximum"),
    "aten::min.other": M("minimum"),
    "aten::max.other": M("maximum"),
    "aten::clamp.Tensor": M("clamp_tensor"),
    "aten::clamp_min.Tensor": M("clamp_tensor"),
    "aten::clamp_max.Tensor": M("clamp_tensor"),
    "aten::softplus.default": M("softplus"),
    "aten::mish.default": M("mish"),
    "aten::log_sigmoid.default": M("log_sigmoid"),
    "aten::glu.default": M("glu"),
    "aten::prelu.default": M("prelu"),
    "aten::_prelu_kernel.default": M("prelu"),
    "aten::rms_norm.default": M("rms_norm"),
    "aten::full.default": M("full"),
    "aten::scalar_tensor.default": M("full", {"fill_value": "s"}, {"size": []}),
    "aten::zeros.default": M("full", fixed={"fill_value": 0.0}),
    "aten::ones.default": M("full", fixed={"fill_value": 1.0}),
    "aten::full_like.default": M("full_like"),
    "aten::zeros_like.default": M("full_like", fixed={"fill_value": 0.0}),
    "aten::ones_like.default": M("full_like", fixed={"fill_value": 1.0}),
    "aten::zero.default": M("full_like", fixed={"fill_value": 0.0}),
    # new_* take x's dtype unless told: the translator fills a None dtype from the result.
    "aten::new_zeros.default": M("full", fixed={"fill_value": 0.0}),
    "aten::new_ones.default": M("full", fixed={"fill_value": 1.0}),
    "aten::new_full.default": M("full"),
    "aten::new_empty.default": M("full", fixed={"fill_value": 0.0}),
    "aten::fill.Scalar": M("fill"),
    "aten::fill.Tensor": M("fill"),
    "aten::arange.default": M("arange"),
    "aten::arange.start": M("arange"),
    "aten::arange.start_step": M("arange"),
    # -- end of coverage part A ----------------------------------------------------------
    # -- recurrent layers (compiler/ops/recurrent.py): flat torch weights, hx split -------
    "aten::lstm.input": M("lstm", {"weights": "params", "h0": ("hx", 0), "c0": ("hx", 1)}),
    "aten::gru.input": M("gru", {"weights": "params", "h0": "hx"}),
    "aten::rnn_tanh.input": M("rnn", {"weights": "params", "h0": "hx"}, {"nonlinearity": "tanh"}),
    "aten::rnn_relu.input": M("rnn", {"weights": "params", "h0": "hx"}, {"nonlinearity": "relu"}),
    # -- end of recurrent layers ---------------------------------------------------------
}

# Default IR input name -> the ATen argument names it reads, in order of preference.
DEFAULT_SOURCES = {"x": ("self", "input"), "y": ("other",)}
