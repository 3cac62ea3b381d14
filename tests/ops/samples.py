"""Sample models for every op-table record: the per-op tests are generated from these.

Each sample is a tiny nn.Module whose traced graph contains the op, with inputs that
exercise its attributes (strides, padding, keepdim, broadcasting...). Adding an op to the
table means adding its samples here; tests/ops/test_op_table.py fails until you do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

_g = torch.Generator().manual_seed(0)


def rand(*shape: int, low: float = -1.0, high: float = 1.0) -> torch.Tensor:
    return torch.rand(*shape, generator=_g) * (high - low) + low


class Fn(nn.Module):
    """Wraps a function of the inputs (constants it closes over become lifted constants)."""

    def __init__(self, fn: Callable[..., torch.Tensor]):
        super().__init__()
        self.fn = fn

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.fn(*xs)


@dataclass
class Sample:
    op: str
    id: str
    module: nn.Module
    inputs: tuple
    # Ops whose record is not the only one in the graph can name the others here.
    also: tuple[str, ...] = field(default_factory=tuple)
    # The deployment target to compile for, for ops newer than the default.
    target: str | None = None


def _samples() -> list[Sample]:
    s: list[Sample] = []

    def add(op: str, id: str, module, *inputs, also=(), target=None):
        if not isinstance(module, nn.Module):
            module = Fn(module)
        s.append(Sample(op, id, module.eval(), tuple(inputs), tuple(also), target))

    x4 = rand(2, 3, 8, 8)
    # element-wise arithmetic
    add("add", "tensor", lambda a, b: a + b, rand(2, 3, 4), rand(2, 3, 4))
    add("add", "broadcast", lambda a, b: a + b, rand(2, 3, 4), rand(3, 1))
    add(
        "add", "scalar_alpha", lambda a, b: torch.add(a, b, alpha=0.5) + 2.0, rand(4, 5), rand(4, 5)
    )
    add("sub", "tensor", lambda a, b: a - b, rand(2, 3, 4), rand(4))
    add("minimum", "torch_min_of_two", lambda a, b: torch.min(a, b), rand(2, 3), rand(3))
    add("maximum", "torch_max_of_two", lambda a, b: a.max(b), rand(2, 3), rand(3))
    add("sub", "rsub_scalar", lambda a: 1.0 - a, rand(3, 4))
    add("mul", "broadcast", lambda a, b: a * b, rand(2, 1, 4), rand(3, 1))
    add("mul", "scalar", lambda a: a * 3, rand(3, 4))
    add("div", "tensor", lambda a, b: a / b, rand(3, 4), rand(3, 4, low=0.5, high=2.0))
    add(
        "div",
        "floor",
        lambda a, b: torch.div(a, b, rounding_mode="floor"),
        rand(3, 4) * 10,
        rand(3, 4, low=0.5, high=2),
    )
    add(
        "div",
        "trunc",
        lambda a, b: torch.div(a, b, rounding_mode="trunc"),
        rand(3, 4) * 10,
        rand(3, 4, low=0.5, high=2),
    )
    add("pow", "scalar", lambda a: a**2, rand(3, 4))
    add("pow", "tensor", lambda a, b: torch.pow(a, b), rand(3, 4, low=0.5, high=2), rand(3, 4))
    add("sqrt", "plain", torch.sqrt, rand(3, 4, low=0.1, high=4))
    add("rsqrt", "plain", torch.rsqrt, rand(3, 4, low=0.1, high=4))
    add("exp", "plain", torch.exp, rand(3, 4))
    add("log", "plain", torch.log, rand(3, 4, low=0.1, high=4))
    add("neg", "plain", torch.neg, rand(3, 4))
    add("abs", "plain", torch.abs, rand(3, 4))
    add("erf", "plain", torch.erf, rand(3, 4) * 2)
    add("clamp", "both", lambda a: torch.clamp(a, -0.5, 0.25), rand(3, 4))
    add("clamp", "min", lambda a: torch.clamp(a, min=0.1), rand(3, 4))
    add("clamp", "max", lambda a: torch.clamp(a, max=0.1), rand(3, 4))
    add("cast", "to_half_and_back", lambda a: (a.half() * 2).float(), rand(3, 4), also=("mul",))
    # Before iOS17 narrow integers are int32 holding the narrow type's values (wrapped).
    to_bytes = lambda a: (a * 300).byte().float() + (a * 200).char().float()  # noqa: E731
    add("cast", "byte_and_char", to_bytes, rand(3, 4, low=-1, high=1), also=("mul", "add"))
    add("cast", "short_of_ints", lambda m: m.short().float(), torch.tensor([[70000, -40000, 5]]))
    to_layout = lambda a: a.to(dtype=torch.float16, device="cpu") * 2  # noqa: E731
    add("cast", "dtype_and_device", to_layout, rand(3, 4), also=("mul",))
    add(
        "cast",
        "type_as_float",
        lambda m, a: m.type_as(a) * a,
        rand(3, 4) > 0,
        rand(3, 4),
        also=("mul",),
    )
    # RoBERTa's position ids: type_as is a copy naming a device, which a package ignores.
    type_as = lambda m: torch.cumsum(m, 1).type_as(m) * m  # noqa: E731
    add("cast", "type_as", type_as, (rand(2, 6) > 0).int(), also=("cumsum", "mul"))
    add("identity", "clone", lambda a: a.clone() + 1, rand(3, 4), also=("add",))
    add("dropout", "eval", nn.Dropout(0.3), rand(3, 4))
    # activations
    add("relu", "plain", nn.ReLU(), rand(2, 8))
    add("sigmoid", "plain", nn.Sigmoid(), rand(2, 8))
    add("tanh", "plain", nn.Tanh(), rand(2, 8))
    add("silu", "plain", nn.SiLU(), rand(2, 8) * 4)
    add("gelu", "exact", nn.GELU(), rand(2, 8) * 3)
    add("gelu", "tanh", nn.GELU(approximate="tanh"), rand(2, 8) * 3)
    add("hardswish", "plain", nn.Hardswish(), rand(2, 8) * 5)
    add("hardsigmoid", "plain", nn.Hardsigmoid(), rand(2, 8) * 5)
    add("hardtanh", "plain", nn.Hardtanh(-0.5, 0.5), rand(2, 8))
    add("hardtanh", "relu6", nn.ReLU6(), rand(2, 8) * 8)
    add("leaky_relu", "plain", nn.LeakyReLU(0.2), rand(2, 8))
    add("elu", "plain", nn.ELU(0.7), rand(2, 8) * 3)
    add("softmax", "last", nn.Softmax(-1), rand(2, 3, 8) * 4)
    add("softmax", "dim1", nn.Softmax(1), rand(2, 3, 8) * 4)
    # A dtype argument casts the input first: half attention scores, softmax in float.
    add(
        "softmax",
        "dtype_from_half",
        lambda a: torch.softmax(a.half(), -1, dtype=torch.float32),
        rand(2, 3, 8) * 4,
        also=("cast",),
    )
    add("log_softmax", "last", nn.LogSoftmax(-1), rand(2, 8) * 4)
    # matrix products and convolutions
    add("matmul", "2d", lambda a, b: a @ b, rand(3, 4), rand(4, 5))
    add("matmul", "batched_broadcast", lambda a, b: a @ b, rand(2, 3, 4), rand(4, 5))
    add("matmul", "bmm", torch.bmm, rand(2, 3, 4), rand(2, 4, 5))
    # Rank-1 operands: MIL's matmul refuses a vector y and mis-types a vector x.
    add("matmul", "vector_batched", lambda a, b: a @ b, rand(4), rand(2, 4, 5))
    add("matmul", "batched_vector", lambda a, b: a @ b, rand(2, 2, 3, 4), rand(4))
    add("matmul", "dot", lambda a, b: a @ b, rand(5), rand(5))
    add("linear", "bias", nn.Linear(6, 4), rand(3, 6))
    add("linear", "no_bias_rank4", nn.Linear(6, 4, bias=False), rand(2, 2, 3, 6))
    add("linear", "weight_is_an_input", lambda a, w: F.linear(a, w), rand(3, 6), rand(4, 6))
    # A bias computed at run time (MIL's linear and conv take constant ones only).
    lin_w = rand(4, 6)
    add("linear", "run_time_bias", lambda a, b: F.linear(a, lin_w, b), rand(3, 6), rand(4))
    w = rand(4, 5)
    b = rand(5)
    add("addmm", "plain", lambda a: torch.addmm(b, a, w), rand(3, 4))
    add("addmm", "alpha_beta", lambda a: torch.addmm(b, a, w, beta=0.5, alpha=2.0), rand(3, 4))
    add("addmm", "run_time_bias", lambda a, c: torch.addmm(c, a, w), rand(3, 4), rand(3, 5))
    add("conv", "2d_stride_pad", nn.Conv2d(3, 4, 3, stride=2, padding=1), x4)
    conv_w = rand(4, 3, 3, 3)
    add(
        "conv",
        "2d_run_time_bias",
        lambda a, b: F.conv2d(a, conv_w, b * 2, padding=1),
        x4,
        rand(4),
        also=("mul",),
    )
    add("conv", "2d_same_dilated", nn.Conv2d(3, 4, 3, padding="same", dilation=2), x4)
    add("conv", "2d_groups_nobias", nn.Conv2d(4, 8, 3, groups=2, bias=False), rand(1, 4, 7, 7))
    add("conv", "2d_asym", nn.Conv2d(3, 2, (3, 1), padding=(1, 0)), x4)
    add("conv", "1d", nn.Conv1d(3, 5, 3, padding=2, stride=2), rand(2, 3, 11))
    add("conv_transpose", "2d", nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1), x4)
    add(
        "conv_transpose",
        "2d_output_padding",
        nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1),
        x4,
    )
    add(
        "conv_transpose",
        "2d_groups",
        nn.ConvTranspose2d(4, 4, 2, stride=2, groups=2),
        rand(1, 4, 5, 5),
    )
    emb = nn.Embedding(10, 4)
    add("embedding", "plain", emb, torch.tensor([[1, 2, 9], [0, 0, 3]]))
    for p in (2.0, 1.0, float("inf"), 3.0):
        add("pdist", f"p{p}", lambda a, p=p: F.pdist(a, p), rand(5, 3))
    # Bags from offsets given at run time, one of them empty (torch gives it zeros).
    idx8 = torch.tensor([1, 2, 9, 0, 0, 3, 7, 2])
    bag_offsets = torch.tensor([0, 3, 3, 6])
    mean_bag = nn.EmbeddingBag(10, 4, mode="mean")
    add("embedding_bag", "mean_2d", mean_bag, idx8.view(2, 4), also=("arange", "reshape"))
    add("embedding_bag", "sum_offsets", nn.EmbeddingBag(10, 4, mode="sum"), idx8, bag_offsets)
    max_bag = nn.EmbeddingBag(10, 4, mode="max", padding_idx=0)
    add("embedding_bag", "max_padding", max_bag, idx8, bag_offsets)
    last_offset = nn.EmbeddingBag(10, 4, mode="mean", include_last_offset=True)
    add("embedding_bag", "mean_last_offset", last_offset, idx8, torch.tensor([0, 3, 3, 8]))
    weighted = nn.EmbeddingBag(10, 4, mode="sum")
    add(
        "embedding_bag",
        "per_sample_weights",
        lambda i, o, w: weighted(i, o, per_sample_weights=w),
        idx8,
        bag_offsets,
        rand(8),
    )
    # pooling
    add("max_pool2d", "pad", nn.MaxPool2d(3, 2, 1), x4)
    add("max_pool2d", "ceil", nn.MaxPool2d(3, 2, ceil_mode=True), x4)
    # MIL's max_pool has no dilation and no integers: the maximum of strided slices.
    add("max_pool2d", "dilated_ceil", nn.MaxPool2d(3, 2, 1, dilation=2, ceil_mode=True), x4)
    add("max_pool2d", "dilated_unbatched", nn.MaxPool2d(2, 1, dilation=(1, 2)), rand(3, 6, 7))
    add(
        "max_pool2d",
        "int32",
        lambda a: F.max_pool2d(a, 2, 1, 1),
        torch.randint(-(2**30), 2**30, (1, 2, 5, 6), generator=_g, dtype=torch.int32),
    )
    add("avg_pool2d", "plain", nn.AvgPool2d(2), x4)
    volume = rand(2, 3, 6, 7, 8)
    add("max_pool3d", "plain", nn.MaxPool3d(2), volume)
    # ceil_mode that adds no window (7 and 8 wide): Core ML's 3-d pools take no ceil_mode.
    add("max_pool3d", "pad_stride_ceil", nn.MaxPool3d(3, 2, 1, ceil_mode=True), rand(1, 2, 7, 7, 5))
    add("avg_pool3d", "plain", nn.AvgPool3d(2), volume)
    add("max_pool3d", "unbatched", nn.MaxPool3d((1, 2, 3)), rand(3, 4, 6, 6))
    add("avg_pool3d", "exclude_pad", nn.AvgPool3d(3, 2, 1, count_include_pad=False), volume)
    add("avg_pool2d", "exclude_pad", nn.AvgPool2d(3, 2, 1, count_include_pad=False), x4)
    add("avg_pool2d", "include_pad", nn.AvgPool2d(3, 1, 1, count_include_pad=True), x4)
    add("adaptive_avg_pool2d", "global", nn.AdaptiveAvgPool2d(1), x4)
    add("adaptive_avg_pool2d", "divisible", nn.AdaptiveAvgPool2d((2, 4)), x4)
    # Windows of unequal length that overlap (8 -> 5, 8 -> 7): a matmul per axis.
    add("adaptive_avg_pool2d", "overlapping", nn.AdaptiveAvgPool2d((5, 7)), x4)
    add("adaptive_avg_pool2d", "unbatched_7x7", nn.AdaptiveAvgPool2d(7), rand(3, 10, 9))
    area = lambda a: F.interpolate(a, size=(3, 5), mode="area")  # noqa: E731
    add("adaptive_avg_pool2d", "area_resize", area, x4)
    add("adaptive_max_pool2d", "global", nn.AdaptiveMaxPool2d(1), x4)
    add("adaptive_max_pool2d", "divisible", nn.AdaptiveMaxPool2d(4), x4)
    # normalisation
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.running_mean.copy_(rand(3))
        bn.running_var.copy_(rand(3, low=0.5, high=2))
        bn.weight.copy_(rand(3))
        bn.bias.copy_(rand(3))
    add("batch_norm", "2d", bn, x4)
    bn1 = nn.BatchNorm1d(6)
    with torch.no_grad():
        bn1.running_mean.copy_(rand(6))
        bn1.running_var.copy_(rand(6, low=0.5, high=2))
    add("batch_norm", "1d_rank2", bn1, rand(4, 6))
    add("layer_norm", "last", nn.LayerNorm(8), rand(2, 3, 8) * 3)
    add(
        "layer_norm",
        "last_two_no_affine",
        nn.LayerNorm((3, 8), elementwise_affine=False),
        rand(2, 3, 8),
    )
    gn = nn.GroupNorm(2, 4)
    with torch.no_grad():
        gn.weight.copy_(rand(4))
        gn.bias.copy_(rand(4))
    add("group_norm", "affine", gn, rand(2, 4, 5, 5) * 2)
    add("instance_norm", "affine", nn.InstanceNorm2d(3, affine=True), x4)
    # reductions
    add("sum", "axes_keepdim", lambda a: a.sum((1, 2), keepdim=True), x4)
    add("sum", "all", lambda a: a.sum(), x4)
    add("sum", "count_bools", lambda m: m.sum(-1), x4 > 0)
    add("sum", "count_nonzero", lambda a: torch.count_nonzero(a, 1), x4.relu(), also=("ne",))
    add("mean", "of_a_scalar", lambda a: a.sum(0).mean(), rand(5), also=("sum",))
    add("sum", "dtype", lambda m: m.sum(1, dtype=torch.float32), x4 > 0, also=("cast",))
    add("mean", "axes", lambda a: a.mean((-1, 1)), x4)
    add("amax", "axis", lambda a: a.amax(2), x4)
    add("amin", "axes_keepdim", lambda a: a.amin((0, 3), keepdim=True), x4)
    # MIL reduces no bools (computed in int32)
    add("amax", "bool", lambda m: m.amax(1), x4 > 0.9)
    add("amin", "bool", lambda m: m.amin((0, 2)), x4 > -0.9)
    # data movement
    add("squeeze", "empty_dims", lambda a: torch.squeeze(a, ()) * 2, rand(1, 3, 1), also=("mul",))
    add("reshape", "view", lambda a: a.view(2, -1) * 2, x4, also=("mul",))
    add("reshape", "reshape", lambda a: a.reshape(6, 4, 16), x4)
    add("flatten", "from1", lambda a: a.flatten(1), x4)
    add("permute", "plain", lambda a: a.permute(0, 2, 3, 1), x4)
    # Patches (windows every size) and overlapping frames (a step below the size).
    patches = lambda a: a.unfold(1, 4, 4).unfold(2, 4, 4) * 1  # noqa: E731
    add("unfold", "patches", patches, rand(3, 8, 8), also=("mul",))
    add("unfold", "frames_last", lambda a: a.unfold(-1, 4, 3) * 1, rand(2, 11), also=("mul",))
    add("unfold", "int", lambda m: m.unfold(0, 2, 1) * 1, torch.arange(5), also=("mul",))
    # Grouped-query attention repeats each key/value head for its group of query heads.
    add("repeat_interleave", "kv_heads", lambda a: a.repeat_interleave(3, dim=1), rand(1, 2, 5, 4))
    add("repeat_interleave", "flat", lambda a: torch.repeat_interleave(a, 2), rand(2, 3))
    # The copying forms of views take the view's record.
    add("permute", "permute_copy", lambda a: torch.permute_copy(a, (3, 1, 0, 2)), x4)
    add("reshape", "view_copy", lambda a: torch.view_copy(a, (6, -1)), x4)
    # as_strided that reads a contiguous source in order is a reshape (size-1 dims' strides
    # unused: what adaptive_avg_pool3d's decomposition writes).
    in_order = lambda a: torch.as_strided(a * 2, (1, 6, 1, 4), (24, 4, 99, 1))  # noqa: E731
    add("reshape", "as_strided_in_order", in_order, rand(2, 3, 4), also=("mul",))
    add("transpose", "plain", lambda a: a.transpose(1, -1), x4)
    add("transpose", "dot_T", lambda a, b: a.T + b, rand(3, 5), rand(5, 3), also=("add",))
    add("transpose", "mT", lambda a: a.mT, rand(2, 3, 5))
    add("transpose", "t_of_scalar", lambda a, b: torch.t(a) * b, rand(()), rand(3), also=("mul",))
    add("squeeze", "dim", lambda a: a.squeeze(1), rand(2, 1, 4))
    add("squeeze", "all", lambda a: a.squeeze(), rand(2, 1, 4, 1))
    add("unsqueeze", "plain", lambda a: a.unsqueeze(-1), rand(2, 4))
    add("cat", "dim1", lambda a, b: torch.cat([a, b, a], 1), rand(2, 3), rand(2, 5))
    add("slice", "step", lambda a: a[:, 1:7:2], rand(3, 8))
    add("slice", "negative", lambda a: a[..., -3:], rand(3, 8))
    add(
        "slice_scatter",
        "middle",
        lambda a, b: torch.slice_scatter(a, b, 1, 2, 5),
        rand(3, 8),
        rand(3, 3),
        target="iOS18",
    )
    add(
        "slice_scatter",
        "negative_step",
        lambda a, b: torch.slice_scatter(a, b, -1, -6, None, 2),
        rand(2, 3, 8),
        rand(2, 3, 3),
        target="iOS18",
    )
    # Before iOS18: a scatter at the slice's positions (what in-place box decoding gives).
    add(
        "slice_scatter",
        "ios16",
        lambda a, b: torch.slice_scatter(a, b, 1, 2, 5),
        rand(3, 8),
        rand(3, 3),
    )
    # Video Swin's mask writes x[0:-8] of a length-8 axis: nothing.
    empty_write = lambda a, b: torch.slice_scatter(a, b, 0, 0, -8) * 2  # noqa: E731
    add("slice_scatter", "empty", empty_write, rand(8, 3), rand(0, 3), also=("mul",))
    add(
        "slice_scatter",
        "ios16_step",
        lambda a, b: torch.slice_scatter(a, b, -1, -6, None, 2),
        rand(2, 3, 8),
        rand(2, 3, 3),
    )

    def decode_boxes(p):
        p = p.clone()
        p[..., :2] = p[..., :2].sigmoid() * 2
        p[..., 2:4] = p[..., 2:4].exp()
        return p

    add(
        "slice_scatter",
        "in_place_writes",
        decode_boxes,
        rand(2, 6, 7),
        also=("sigmoid", "mul", "exp", "slice", "copy", "identity"),
    )
    add("copy", "broadcast_cast", lambda a, b: torch.ops.aten.copy(a, b), rand(2, 3), rand(3) > 0)
    add("select", "plain", lambda a: a[:, 2], rand(3, 8, 2))
    add("select", "negative", lambda a: a[-1], rand(3, 8))
    add("expand", "plain", lambda a: a.expand(2, 3, 4), rand(3, 1))
    add("pad", "constant", lambda a: F.pad(a, (1, 2, 0, 1), value=0.5), x4)
    add("pad", "reflect", lambda a: F.pad(a, (2, 1, 1, 2), mode="reflect"), x4)
    add("pad", "replicate", lambda a: F.pad(a, (1, 1, 2, 0), mode="replicate"), x4)
    add("pad", "circular", lambda a: F.pad(a, (1, 2, 3, 0), mode="circular"), x4)
    add("pad", "circular_1d", lambda a: F.pad(a, (0, 2), mode="circular"), rand(2, 3, 5))
    circular_conv = nn.Conv2d(3, 4, 3, padding=1, padding_mode="circular")
    add("pad", "circular_conv", circular_conv, x4, also=("conv",))
    add(
        "pad",
        "circular_3d_int",
        lambda m: F.pad(m, (1, 0, 0, 1, 2, 2), mode="circular"),
        torch.randint(0, 9, (1, 2, 3, 4, 5), generator=_g),
    )
    # -- coverage part B: splitting/joining, indexing, resizing, reductions -------------
    add("pad", "crop", lambda a: F.pad(a, (-1, -2, 0, -3)), x4)
    # MIL's pad takes floats only: integer tensors are padded by gathers and concats.
    big = torch.randint(-(2**30), 2**30, (2, 3, 5, 4), generator=_g, dtype=torch.int32)
    add("pad", "int_constant", lambda a: F.pad(a, (1, 2, 0, 1), value=-7), big)
    add("pad", "int_reflect", lambda a: F.pad(a, (2, 1, 1, 3), mode="reflect"), big)
    add("pad", "int_replicate", lambda a: F.pad(a, (1, 0, 2, 2), mode="replicate"), big)
    add("pad", "crop_and_pad", lambda a: F.pad(a, (2, -1, -2, 1), value=0.5), x4)
    add("pad", "crop_rank3", lambda a: F.pad(a, (0, 0, -1, 0, 1, -1)), rand(3, 4, 5))

    def pad_to(a, b):  # UNet's: pad a to b's size (amounts computed from the sizes)
        dy, dx = b.shape[-2] - a.shape[-2], b.shape[-1] - a.shape[-1]
        return F.pad(a, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2], value=0.5)

    add("pad", "to_size_of", pad_to, rand(2, 3, 5, 4), rand(2, 3, 8, 9))
    add("pad", "crop_to_size_of", pad_to, rand(2, 3, 8, 9), rand(2, 3, 5, 4))
    add("split", "uneven", lambda a: a.split(4, 1), rand(2, 10))
    add("split", "sizes_negdim", lambda a: a.split([2, 3, 5], -1), rand(2, 3, 10))
    add("split", "one_piece", lambda a: a.split(8, 0)[0] * 2, rand(3, 4), also=("mul",))
    add("split", "some_unused", lambda a: a.split(2, 1)[1], rand(2, 6, 3))
    add("chunk", "even", lambda a: a.chunk(3, 1), rand(2, 6, 3))
    add("chunk", "fewer_pieces", lambda a: a.chunk(4, -1), rand(2, 6))  # 3 pieces of 2
    add("tensor_split", "sections", lambda a: torch.tensor_split(a, 3, 1), rand(2, 10))
    add("tensor_split", "indices", lambda a: torch.tensor_split(a, [1, 4], -1), rand(2, 3, 6))
    add("unbind", "dim1", lambda a: a.unbind(1), rand(2, 3, 4))
    add("unbind", "negdim", lambda a: a.unbind(-1), rand(2, 3, 2))
    add("stack", "negdim", lambda a, b: torch.stack([a, b, a], -1), rand(2, 3), rand(2, 3))
    add("stack", "dim0", lambda a, b: torch.stack([a, b]), rand(2, 3), rand(2, 3))
    add("narrow", "plain", lambda a: a.narrow(1, 2, 3), rand(2, 10))
    add("narrow", "negdim_negstart", lambda a: a.narrow(-1, -4, 2), rand(2, 3, 6))
    add(
        "expand_as",
        "plain",
        lambda a, b: a.expand_as(b) + b,
        rand(3, 1),
        rand(2, 3, 4),
        also=("add",),
    )
    add("unflatten", "plain", lambda a: a.unflatten(1, (2, -1)), rand(2, 10, 3))
    add("unflatten", "negdim", lambda a: a.unflatten(-1, (3, 2)), rand(2, 6))
    add("movedim", "int", lambda a: a.movedim(1, -1), rand(2, 3, 4, 5))
    add("movedim", "lists", lambda a: torch.movedim(a, (0, 3), (2, 0)), rand(2, 3, 4, 5))
    add("repeat", "plain", lambda a: a.repeat(2, 1, 3), rand(2, 4, 3))
    add("repeat", "more_dims", lambda a: a.repeat(2, 1, 3), rand(2, 3))
    add("repeat", "tile", lambda a: a.tile((2,)), rand(2, 3))
    add("flip", "negdims", lambda a: a.flip(-1, 1), rand(2, 3, 4))
    add("diagonal", "main", lambda a: torch.diagonal(a) * 1, rand(3, 4), also=("mul",))
    add("cdist", "euclidean_batched", torch.cdist, rand(2, 30, 3), rand(2, 26, 3))
    add("cdist", "manhattan", lambda a, b: torch.cdist(a, b, 1.0), rand(5, 3), rand(4, 3))
    add("cdist", "chebyshev", lambda a, b: torch.cdist(a, b, float("inf")), rand(5, 3), rand(4, 3))
    add("cdist", "p3", lambda a, b: torch.cdist(a, b, 3.0), rand(5, 3), rand(4, 3))
    add("diagonal", "above", lambda a: torch.diagonal(a, 2) * 1, rand(3, 4), also=("mul",))
    linalg_diagonal = lambda a: torch.linalg.diagonal(a, offset=-1) * 1  # noqa: E731
    add("diagonal", "linalg", linalg_diagonal, rand(2, 4, 3), also=("mul",))
    below = lambda a: a.diagonal(-1, 2, 0) * 1  # noqa: E731
    add("diagonal", "below_batched", below, rand(4, 2, 3), also=("mul",))
    add("diagonal", "trace", lambda a: torch.trace(a), rand(5, 5), also=("sum",))
    add("roll", "one_dim", lambda a: a.roll(2, -1), rand(2, 5))
    add("roll", "two_dims_negative", lambda a: a.roll((-1, 7), (0, 2)), rand(3, 2, 5))
    add("roll", "flattened", lambda a: a.roll(4), rand(2, 3))
    add("roll", "full_turn", lambda a: a.roll(5, 1) * 2, rand(2, 5), also=("mul",))
    add(
        "index_select",
        "input_index",
        lambda a, i: a.index_select(1, i),
        x4,
        torch.tensor([2, 1, 0, 2]),
    )
    add(
        "index_select",
        "const_index_negdim",
        lambda a: a.index_select(-1, torch.tensor([7, 0, 6])),
        x4,
        also=("identity",),
    )
    idx = torch.tensor([[0, 2, 1], [1, 1, 0]])
    add("gather", "dim1", lambda a, i: a.gather(1, i), rand(2, 3), idx)
    add(
        "gather",
        "smaller_index_negdim",
        lambda a, i: a.gather(-1, i),
        rand(3, 4, 5),
        torch.tensor([[[4, 1], [0, 2]]]),
    )
    rows = torch.tensor([[0, 3, 1], [4, 2, 0]])  # distinct per row: a write is exact
    add("scatter", "src_larger", lambda a, i, s: a.scatter(1, i, s), rand(2, 5), rows, rand(2, 4))
    repeats = torch.tensor([[0, 2, 2, 1], [1, 1, 0, 2], [2, 0, 1, 1], [0, 0, 2, 2], [1, 2, 0, 0]])
    add(
        "scatter",
        "add_repeats",
        lambda a, i, s: a.scatter_add(0, i, s),
        rand(3, 4),
        repeats,
        rand(5, 4),
    )
    add(
        "scatter",
        "amax_repeats",
        lambda a, i, s: a.scatter_reduce(0, i, s, "amax"),
        rand(3, 4),
        repeats,
        rand(5, 4),
    )
    add(
        "scatter",
        "prod_in_place",
        lambda a, i, s: (a * 1).scatter_reduce_(0, i, s, "prod"),
        rand(3, 4),
        repeats,
        rand(5, 4),
        also=("mul",),
    )
    add("take_along_dim", "dim", lambda a, i: torch.take_along_dim(a, i, 1), rand(2, 3), idx)
    add(
        "take_along_dim",
        "broadcast",
        lambda a, i: torch.take_along_dim(a, i, -1),
        rand(2, 3, 4),
        torch.tensor([[[3, 0]]]),
    )
    add(
        "take_along_dim",
        "flat",
        lambda a, i: torch.take_along_dim(a, i),
        rand(2, 3),
        torch.tensor([5, 0, 2]),
    )
    add("index", "one_dim", lambda a, i: a[:, i], rand(2, 5, 3), torch.tensor([[4, 0], [-1, 2]]))
    add("index", "first_dim", lambda a, i: a[i], rand(5, 3), torch.tensor([3, 3, 0]))
    # MIL gathers no bools: masks are gathered as int32.
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    ar = torch.arange(4)
    add(
        "index",
        "bool_table",
        lambda a: a.masked_fill(~causal[ar[:, None], ar], 0.0),
        rand(4, 4),
        also=("masked_fill", "logical_not", "unsqueeze"),
    )
    add("gather", "bool", lambda m, i: m.gather(1, i), rand(2, 3) > 0, idx)
    select_rows = lambda m: m.index_select(0, torch.tensor([2, 0]))  # noqa: E731
    add("index_select", "bool", select_rows, rand(3, 4) > 0, also=("identity",))
    add(
        "index",
        "two_broadcast",
        lambda a, i, j: a[i, :, j],
        rand(3, 4, 5),
        torch.tensor([[0], [2]]),
        torch.tensor([1, 4, -1]),
    )
    add(
        "index",
        "adjacent_inner",
        lambda a, i, j: a[:, i, j],
        rand(2, 3, 4, 5),
        torch.tensor([0, 2]),
        torch.tensor([3, 1]),
    )
    # Constant indices, some negative, into x whose sizes may be dynamic.
    rows, cols = torch.tensor([0, -1]), torch.tensor([[1], [-2]])
    add("index", "const_negative_two", lambda a: a[rows, :, cols], rand(3, 4, 5))
    rel = torch.randint(0, 7, (4, 4), generator=_g)
    table = rand(7, 2)
    add(
        "index",
        "const_relative_positions",
        lambda a: a + table[rel].permute(2, 0, 1),
        rand(2, 4, 4),
        also=("add", "permute"),
    )
    add(
        "index_put",
        "rows",
        lambda a, i, v: torch.ops.aten.index_put(a, [i], v),
        rand(5, 3),
        torch.tensor([0, 3]),
        rand(2, 3),
    )
    add(
        "index_put",
        "accumulate_dup",
        lambda a, i, v: torch.ops.aten.index_put(a, [i], v, True),
        rand(5, 3),
        torch.tensor([1, 1, -1]),
        rand(3, 3),
    )
    add(
        "index_put",
        "inner_broadcast_value",
        lambda a, i, v: torch.ops.aten.index_put(a, [None, i], v),
        rand(2, 5, 3),
        torch.tensor([4, 0]),
        rand(3),
    )
    add(
        "index_put",
        "two_separate",
        lambda a, i, j, v: torch.ops.aten.index_put(a, [i, None, j], v),
        rand(3, 2, 4),
        torch.tensor([0, 2]),
        torch.tensor([3, 1]),
        rand(2, 2),
    )

    def masked_fill_(a, m):
        a = a.clone()
        a[m] = 0.25
        return a

    def masked_add_(a, m):
        return torch.ops.aten.index_put(a, [m], torch.tensor(2.0), True)

    add("index_put", "bool_mask", masked_fill_, rand(3, 4), rand(3, 4) > 0, also=("identity",))
    add(
        "index_put",
        "bool_mask_leading_add",
        masked_add_,
        rand(3, 4, 2),
        rand(3, 4) > 0,
        also=("identity",),
    )
    x5 = rand(1, 2, 5, 6)
    up = F.interpolate
    add("upsample_nearest2d", "scale2", lambda a: up(a, scale_factor=2), x5)
    add("upsample_nearest2d", "scale_h3_w1", lambda a: up(a, scale_factor=(3, 1)), x5)
    add("upsample_nearest2d", "size_up_and_stride", lambda a: up(a, size=(10, 3)), x5)
    add("upsample_nearest2d", "size_uneven", lambda a: up(a, size=(7, 4)), x5)
    add("upsample_nearest2d", "scale_1_5", lambda a: up(a, scale_factor=1.5), x5)
    add(
        "upsample_nearest2d",
        "default_overload_scales",
        lambda a: torch.ops.aten.upsample_nearest2d.default(a, [8, 12], 1.7, 2.0),
        x5,
    )
    # Sizes computed from the input's (a whole multiple of it, or another input's for a
    # single pixel, as DeepLab's image pooling): with dynamic shapes they stay symbolic.
    add(
        "upsample_nearest2d",
        "size_multiple",
        lambda a: up(a, size=(3 * a.shape[-2], 2 * a.shape[-1])),
        x5,
    )
    add(
        "upsample_nearest2d",
        "one_pixel_to_size",
        lambda a, b: up(a, size=b.shape[-2:]),
        rand(1, 2, 1, 1),
        x5,
    )
    add("upsample_bilinear2d", "scale2", lambda a: up(a, scale_factor=2, mode="bilinear"), x5)
    add(
        "upsample_bilinear2d",
        "size_multiple",
        lambda a: up(a, size=(2 * a.shape[-2], 3 * a.shape[-1]), mode="bilinear"),
        x5,
    )
    add(
        "upsample_bilinear2d",
        "one_pixel_to_size",
        lambda a, b: up(a, size=b.shape[-2:], mode="bilinear"),
        rand(1, 2, 1, 1),
        x5,
    )
    add(
        "upsample_bilinear2d",
        "size_multiple_align_corners",
        lambda a: up(a, size=(4 * a.shape[-2], a.shape[-1]), mode="bilinear", align_corners=True),
        x5,
    )
    add(
        "upsample_bilinear2d",
        "size_align_corners",
        lambda a: up(a, size=(7, 9), mode="bilinear", align_corners=True),
        x5,
    )
    add(
        "upsample_bilinear2d",
        "scale_align_corners",
        lambda a: up(a, scale_factor=2, mode="bilinear", align_corners=True),
        x5,
    )
    add("upsample_bilinear2d", "size_down", lambda a: up(a, size=(3, 4), mode="bilinear"), x5)
    add(
        "upsample_bilinear2d",
        "scale_1_5_grid_differs",
        lambda a: up(a, scale_factor=1.5, mode="bilinear"),
        x5,
    )
    add(
        "upsample_bilinear2d",
        "default_overload",
        lambda a: torch.ops.aten.upsample_bilinear2d.default(a, [9, 6], False, 1.7, None),
        x5,
    )
    add("upsample_bicubic2d", "scale2", lambda a: up(a, scale_factor=2, mode="bicubic"), x5)
    add(
        "upsample_bicubic2d",
        "size_align_corners",
        lambda a: up(a, size=(4, 11), mode="bicubic", align_corners=True),
        x5,
    )
    add("pixel_shuffle", "r2", nn.PixelShuffle(2), rand(2, 8, 3, 4))
    add("pixel_unshuffle", "r2", nn.PixelUnshuffle(2), rand(2, 3, 4, 6))
    perm = (torch.randperm(60, generator=_g).float() - 30) / 8  # distinct, exact in fp16
    add("cumsum", "negdim", lambda a: a.cumsum(-1), rand(2, 3, 5))
    add("cumsum", "dim0", lambda a: torch.cumsum(a, 0), rand(4, 3))
    # 7 entries: three steps, the last one partial; a zero and signs stay exact.
    signs = torch.tensor(
        [[2.0, -1.5, 0.0, 3.0, -0.5, 1.25, 2.0], [0.5, 4.0, -2.0, 0.25, 1.0, -1.0, 3.0]]
    )
    add("cumprod", "zeros_and_signs", lambda a: a.cumprod(1), signs)
    add("cumprod", "dim0", lambda a: torch.cumprod(a, 0), rand(5, 3, low=0.5, high=1.5))
    add("cumprod", "length1", lambda a: a.cumprod(1) * 2, rand(3, 1), also=("mul",))
    add("logcumsumexp", "last", lambda a: a.logcumsumexp(-1), rand(2, 3, 9) * 20)
    add("logcumsumexp", "dim0", lambda a: torch.logcumsumexp(a, 0), rand(4, 3) * 3)
    add("cumsum", "int", lambda a: a.cumsum(1), torch.randint(-5, 5, (2, 6), generator=_g))
    add("cumsum", "dtype", lambda m: torch.cumsum(m, 1, dtype=torch.int64), x4 > 0, also=("cast",))
    add("cumsum", "dtype_float", lambda a: a.cumsum(0, dtype=torch.float32), perm, also=("cast",))
    add("argmax", "dim_keepdim", lambda a: a.argmax(1, keepdim=True), perm.reshape(3, 4, 5))
    add("argmax", "none", lambda a: a.argmax(), perm.reshape(3, 4, 5))
    add("argmax", "none_keepdim", lambda a: a.argmax(keepdim=True), perm.reshape(3, 4, 5))
    add("argmin", "negdim", lambda a: a.argmin(-1), perm.reshape(3, 4, 5))
    add("topk", "largest", lambda a: a.topk(3, -1), perm.reshape(3, 4, 5))
    add("topk", "smallest_dim1", lambda a: a.topk(2, 1, largest=False), perm.reshape(3, 4, 5))
    add("kthvalue", "second_dim1", lambda a: a.kthvalue(2, 1), perm.reshape(3, 4, 5))
    add("max_dim", "values_and_indices", lambda a: a.max(1), perm.reshape(3, 4, 5))
    add("max_dim", "keepdim", lambda a: a.max(-1, keepdim=True).values * 2, x4, also=("mul",))
    add("min_dim", "values_and_indices", lambda a: torch.min(a, 0), perm.reshape(3, 4, 5))
    add("amax", "torch_max_of_all", lambda a: a.max(), x4)
    add("amin", "torch_min_of_all", lambda a: torch.min(a), x4)
    edges = torch.tensor([-1.0, -0.25, 0.0, 0.5, 2.0])
    # x holds the edges themselves too: left and right differ exactly there.
    on_edges = torch.cat([rand(3, 5).flatten(), edges]).reshape(4, 5)
    add("bucketize", "left", lambda a: torch.bucketize(a, edges), on_edges)
    add(
        "bucketize",
        "right_int32",
        lambda a: torch.bucketize(a, edges, right=True, out_int32=True),
        on_edges,
    )
    add("bucketize", "searchsorted", lambda a: torch.searchsorted(edges, a, side="right"), on_edges)
    # An even count: torch's median is the lower middle entry.
    add("kthvalue", "median_keepdim", lambda a: a.median(1, True), perm.reshape(3, 4, 5))
    add("kthvalue", "median_odd_last", lambda a: a.median(-1), perm.reshape(3, 4, 5))
    add("sort", "ascending", lambda a: a.sort(-1), perm.reshape(3, 4, 5))
    add("sort", "descending_dim0", lambda a: a.sort(0, descending=True), perm.reshape(3, 4, 5))
    add("sort", "argsort", lambda a: a.argsort(1), perm.reshape(3, 4, 5))
    add("sort", "stable", lambda a: torch.sort(a, dim=1, stable=True)[0], perm.reshape(3, 4, 5))
    add(
        "vector_norm",
        "l2_normalize",
        lambda a: F.normalize(a, dim=-1),
        rand(2, 5),
        also=("clamp", "expand_as", "div"),
    )
    add("vector_norm", "l1_keepdim", lambda a: a.norm(p=1, dim=(0, 2), keepdim=True), rand(2, 3, 4))
    add("vector_norm", "all", lambda a: torch.linalg.vector_norm(a), rand(2, 3, 4))
    add(
        "vector_norm", "inf", lambda a: torch.linalg.vector_norm(a, float("inf"), -1), rand(2, 3, 4)
    )
    add("vector_norm", "p3", lambda a: torch.linalg.vector_norm(a, 3, 1), rand(2, 3, 4))
    add("prod", "dim", lambda a: a.prod(-1), rand(2, 3, 4, low=0.5, high=1.5))
    add("prod", "keepdim", lambda a: a.prod(1, keepdim=True), rand(2, 3, 4, low=0.5, high=1.5))
    add("prod", "all", lambda a: a.prod(), rand(2, 3, low=0.5, high=1.5))
    add("var", "unbiased", lambda a: a.var(-1), rand(2, 3, 5))
    add(
        "var",
        "dims_keepdim_biased",
        lambda a: a.var((0, 2), keepdim=True, correction=0),
        rand(2, 3, 5),
    )
    add("var", "all", lambda a: a.var(), rand(2, 3, 5))
    add("var", "std", lambda a: a.std(1), rand(2, 3, 5), also=("sqrt",))
    add("var_mean", "dim", lambda a: torch.var_mean(a, 1), rand(2, 3, 5))
    # wav2vec2's positional convolution: weight norm over all but dim 2, v computed here.
    g2 = rand(1, 1, 5)
    add(
        "weight_norm",
        "dim2",
        lambda v: torch._weight_norm(v * 2, g2, 2),
        rand(4, 3, 5),
        also=("mul",),
    )
    whole_norm = lambda v: torch._weight_norm(v, torch.tensor(2.0), -1)  # noqa: E731
    add("weight_norm", "whole", whole_norm, rand(4, 3), also=("identity",))
    add("var_mean", "all_keepdim", lambda a: torch.var_mean(a, keepdim=True), rand(2, 3, 5))
    std_mean = lambda a: torch.std_mean(a, (0, 2), correction=0)  # noqa: E731
    add("var_mean", "std_mean", std_mean, rand(2, 3, 5), also=("sqrt",))

    # -- end of coverage part B
    # -- coverage part A: comparisons, logic, math, activations, factories --------------
    def grid(*shape: int, lo: int = -8, hi: int = 8) -> torch.Tensor:
        """Quarters in [lo/4, hi/4): exact in fp16, so comparisons and ties are the same."""
        return torch.randint(lo, hi, shape, generator=_g) / 4

    def odd16(*shape: int) -> torch.Tensor:
        """Odd multiples of 1/16 (exact in fp16): never a multiple of 0.75, 1.25 or 1.5."""
        return (torch.randint(-48, 48, shape, generator=_g) * 2 + 1) / 16

    def divisors(*shape: int) -> torch.Tensor:
        return torch.tensor([0.75, -1.25, 1.5])[torch.randint(0, 3, shape, generator=_g)]

    def ints(*shape: int, lo: int = -6, hi: int = 6) -> torch.Tensor:
        return torch.randint(lo, hi, shape, generator=_g)

    def off_grid(*shape: int) -> torch.Tensor:
        """k/4 + 1/8: exact in fp16, never halfway between integers."""
        return torch.randint(-40, 40, shape, generator=_g) / 4 + 0.125

    g3, g31 = grid(2, 3, 4), grid(3, 1)
    add("eq", "broadcast", lambda a, b: a == b, g3, g31)
    add("eq", "scalar", lambda a: a == 0.5, g3)
    add("eq", "int_scalar", lambda a: a == 2, ints(3, 4))
    add("eq", "bools", lambda a, b: (a > 0) == (b > 0), g3, g31, also=("gt",))
    add("ne", "tensor", lambda a, b: a != b, g3, grid(2, 3, 4))
    add("ne", "int_vs_float_scalar", lambda a: a != 1.5, ints(3, 4))
    add("lt", "scalar", lambda a: a < 0.25, g3)
    add("lt", "int_tensors", lambda a, b: a < b, ints(3, 4), ints(4))
    add("le", "broadcast", lambda a, b: a <= b, g3, g31)
    add("gt", "int_scalar_on_float", lambda a: a > 1, g3)
    add("gt", "float_scalar_on_int", lambda a: a > 1.5, ints(3, 4))
    add("ge", "tensor", lambda a, b: a >= b, g3, grid(4))
    add("logical_and", "bitwise_bools", lambda a, b: (a > 0) & (b > 0), g3, g31, also=("gt",))
    add("logical_and", "floats", torch.logical_and, g3, g31)
    add("logical_or", "bitwise_bools", lambda a, b: (a > 0) | (b < 0), g3, g31, also=("gt", "lt"))
    add("logical_or", "logical", lambda a, b: torch.logical_or(a > 0, b), g3, g31 > 0, also=("gt",))
    add("logical_xor", "bitwise_bools", lambda a, b: (a > 0) ^ (b > 0), g3, g31, also=("gt",))
    add("logical_xor", "ints", torch.logical_xor, ints(3, 4, lo=-1, hi=2), ints(4, lo=0, hi=2))
    add("logical_not", "bitwise_bool_input", lambda m: ~m, g3 > 0)
    add("logical_not", "float", torch.logical_not, g3)
    add("where", "tensors", lambda a, b: torch.where(a > 0, a, b), g3, g31, also=("gt",))
    add("where", "scalar_other", lambda a: torch.where(a > 0, a, 0.5), g3, also=("gt",))
    add("where", "scalar_self", lambda a: torch.where(a > 0, -2.0, a), g3, also=("gt",))
    add("where", "scalars", lambda a: torch.where(a > 0, 1.0, -1.0), g3, also=("gt",))
    add("where", "bool_input_int", lambda m, a: torch.where(m, a, 7), g3 > 0, ints(4))
    # A condition larger than both operands (MIL's select types by the operands alone).
    # (the sum over every axis reads the type MIL gives the result)
    add(
        "where",
        "wide_condition",
        lambda m, a, b: torch.where(m, a, b).sum((0, 1, 2)),
        g3 > 0,
        rand(1),
        rand(1),
        also=("sum",),
    )
    add("where", "wide_condition_bool", lambda m, a: torch.where(m, a, ~a), g3 > 0, rand(4) > 0,
        also=("logical_not",))  # fmt: skip
    add(
        "masked_fill",
        "scalar",
        lambda a, b: a.masked_fill(b > 0, -2.5),
        rand(2, 3, 4),
        g31,
        also=("gt",),
    )
    add("masked_fill", "bool_input", lambda a, m: a.masked_fill(m, 3.0), rand(2, 3, 4), g31 > 0)
    add(
        "masked_fill",
        "tensor_value",
        lambda a: a.masked_fill(a > 0.5, torch.tensor(2.0)),
        rand(3, 4),
        also=("gt", "identity"),
    )
    add("any", "dim", lambda a: (a > 1).any(-1), g3, also=("gt",))
    add("any", "dims_keepdim", lambda a: (a > 1).any((0, 2), keepdim=True), g3, also=("gt",))
    add("any", "all_floats", lambda a: a.any(), g3)
    add("all", "dim_keepdim", lambda a: (a < 1).all(1, keepdim=True), g3, also=("lt",))
    add("all", "no_dim", lambda a: (a > -5).all(), g3, also=("gt",))
    add("all", "ints_negdim", lambda a: a.all(-2), ints(3, 4, lo=0, hi=3))
    specials = torch.tensor([[0.5, float("nan"), float("inf")], [-float("inf"), -2.0, 0.0]])
    add("isnan", "specials", lambda a: torch.isnan(a), specials)
    add("isnan", "int", lambda a: torch.isnan(a), ints(3, 4))
    add("isinf", "specials", lambda a: torch.isinf(a), specials)
    add("mul", "bools", lambda a, b: (a > 0) * (b > 0), g3, g31, also=("gt",))
    add("add", "bools", lambda a, b: (a > 0) + (b > 0), g3, g31, also=("gt",))
    add("clamp", "ints", lambda a: torch.clamp(a, -2, 3), ints(3, 4))
    masked = rand(2, 3, 5) * 4
    masked[0, 1, :] = float("-inf")
    masked[1, 2, :2] = float("-inf")
    masked[1, :, 4] = float("-inf")
    add("safe_softmax", "last", lambda a: torch.ops.aten._safe_softmax(a, -1), masked)
    add("safe_softmax", "dim1", lambda a: torch.ops.aten._safe_softmax(a, 1), masked)
    add("sin", "plain", torch.sin, rand(3, 4) * 3)
    add("sin", "int", torch.sin, ints(3, 4))
    add("cos", "plain", torch.cos, rand(3, 4) * 3)
    add("tan", "plain", torch.tan, rand(3, 4, low=-1.2, high=1.2))
    add("asin", "plain", torch.asin, rand(3, 4, low=-0.9, high=0.9))
    add("acos", "plain", torch.acos, rand(3, 4, low=-0.9, high=0.9))
    add("atan", "plain", torch.atan, rand(3, 4) * 5)
    add("sinh", "plain", torch.sinh, rand(3, 4) * 3)
    add("cosh", "plain", torch.cosh, rand(3, 4) * 3)
    add("asinh", "plain", torch.asinh, rand(3, 4) * 5)
    add("acosh", "plain", torch.acosh, rand(3, 4, low=1.05, high=5))
    add("atanh", "plain", torch.atanh, rand(3, 4, low=-0.9, high=0.9))
    add("exp2", "plain", torch.exp2, rand(3, 4) * 3)
    far = rand(3, 4, low=0.1, high=1) * torch.tensor([1.0, -1.0]).repeat(6).reshape(3, 4)
    add("atan2", "broadcast", torch.atan2, far, rand(4, low=-1, high=1))
    axes_y = torch.tensor([0.0, 0.0, 0.0, 1.0, -1.0, 0.5, -0.5])
    axes_x = torch.tensor([0.0, -1.0, 1.0, 0.0, 0.0, -0.5, -0.5])
    add("atan2", "axes_and_origin", torch.atan2, axes_y, axes_x)
    add("log1p", "plain", torch.log1p, rand(3, 4, low=-0.5, high=3))
    add("expm1", "plain", torch.expm1, rand(3, 4) * 2)
    add("log2", "plain", torch.log2, rand(3, 4, low=0.1, high=8))
    add("log10", "plain", torch.log10, rand(3, 4, low=0.1, high=8))
    add("reciprocal", "plain", torch.reciprocal, far * 2)
    add("sign", "float", torch.sign, g3)
    add("sign", "int", torch.sign, ints(3, 4))
    add("square", "float", torch.square, rand(3, 4) * 3)
    add("square", "int", torch.square, ints(3, 4))
    add("floor", "plain", torch.floor, off_grid(3, 4))
    add("floor", "int", torch.floor, ints(3, 4))
    add("ceil", "plain", torch.ceil, off_grid(3, 4))
    add("round", "plain", torch.round, off_grid(3, 4))
    add("trunc", "plain", torch.trunc, off_grid(3, 4))
    add("remainder", "tensors", lambda a, b: a % b, odd16(3, 4), divisors(3, 4))
    add("remainder", "scalar", lambda a: a % 0.75, odd16(3, 4))
    add("remainder", "scalar_tensor", lambda b: torch.remainder(2.0, b), divisors(3, 4))
    add(
        "remainder",
        "ints",
        lambda a, b: a % b,
        ints(3, 4, lo=-9, hi=9),
        torch.tensor([3, -2, 4, 5]),
    )
    add("fmod", "tensors", torch.fmod, odd16(3, 4), divisors(3, 4))
    add("fmod", "scalar", lambda a: torch.fmod(a, -1.25), odd16(3, 4))
    add("fmod", "ints", torch.fmod, ints(3, 4, lo=-9, hi=9), torch.tensor([3, -2, 4, 5]))
    add("minimum", "broadcast", torch.minimum, rand(2, 3, 4), rand(3, 1))
    add("maximum", "broadcast", torch.maximum, rand(2, 3, 4), rand(4))
    add("maximum", "ints", torch.maximum, ints(3, 4), ints(3, 4))
    add(
        "clamp_tensor",
        "both",
        lambda a, lo: torch.clamp(a, lo, lo + 0.5),
        rand(2, 3, 4),
        rand(3, 1),
        also=("add",),
    )
    add("clamp_tensor", "min", lambda a, lo: torch.clamp(a, min=lo), rand(2, 3, 4), rand(4))
    add("clamp_tensor", "max", lambda a, hi: torch.clamp(a, max=hi), rand(2, 3, 4), rand(3, 4))
    add("softplus", "plain", nn.Softplus(), rand(2, 8) * 6)
    add("softplus", "beta_threshold", nn.Softplus(beta=2.0, threshold=5.0), rand(2, 8) * 6)
    add("mish", "plain", nn.Mish(), rand(2, 8) * 4)
    add("log_sigmoid", "plain", nn.LogSigmoid(), rand(2, 8) * 6)
    add("glu", "last", nn.GLU(), rand(2, 3, 8) * 3)
    add("glu", "dim1", nn.GLU(1), rand(2, 4, 3) * 3)
    prelu_c = nn.PReLU(3)
    prelu_r2 = nn.PReLU(5)
    with torch.no_grad():
        prelu_c.weight.copy_(rand(3))
        prelu_r2.weight.copy_(rand(5))
    add("prelu", "channels", prelu_c, rand(2, 3, 4, 4))
    add("prelu", "one_weight", nn.PReLU(), rand(2, 3, 4, 4))
    add("prelu", "rank2", prelu_r2, rand(4, 5))
    add("prelu", "weight_input", F.prelu, rand(2, 3, 4), rand(3))
    # celu decomposes to where/expm1; aten.elu with input_scale is what others export.
    add("elu", "input_scale", lambda a: torch.ops.aten.elu(a, 0.5, 1.0, 2.0), rand(2, 8) * 3)
    add("elu", "selu", nn.SELU(), rand(2, 8) * 3)
    rms = nn.RMSNorm(8)
    with torch.no_grad():
        rms.weight.copy_(rand(8))
    add("rms_norm", "weight_eps_none", rms, rand(2, 3, 8) * 3)
    add(
        "rms_norm",
        "last_two_no_weight",
        nn.RMSNorm([3, 8], eps=1e-5, elementwise_affine=False),
        rand(2, 3, 8),
    )
    add("full", "full", lambda a: a + torch.full((3, 4), 2.5), rand(3, 4), also=("add",))
    add(
        "full",
        "scalar_tensor",
        lambda a: torch.where(a > 0, a, torch.scalar_tensor(-1.0)),
        rand(3, 4),
        also=("gt", "where"),
    )
    add("full", "zeros_large_fill", lambda a: torch.zeros(64, 80) + a, rand(80), also=("add",))
    add(
        "full",
        "ones_int",
        lambda a: a + torch.ones(4, dtype=torch.int64),
        ints(3, 4),
        also=("add",),
    )
    add("full_like", "full_like", lambda a: a * torch.full_like(a, -2.0), rand(3, 4), also=("mul",))
    add("full_like", "zeros_like_large_fill", torch.zeros_like, rand(64, 80))
    add("full_like", "ones_like_int", lambda a: torch.ones_like(a, dtype=torch.int32), rand(3, 4))

    def zero_middle(a):
        # Swin V2 zeroes the key part of its qkv bias in place.
        b = a * 2
        b[1:3].zero_()
        return b

    add(
        "full_like",
        "zero_in_place",
        zero_middle,
        rand(4, 3),
        also=("mul", "slice", "slice_scatter", "copy", "identity"),
    )
    # new_* take x's dtype (int64 here) unless told otherwise.
    new_zeros = lambda m: m + m.new_zeros((2, 5))  # noqa: E731
    add("full", "new_zeros_int", new_zeros, torch.arange(5), also=("add",))
    new_full = lambda a: a * a.new_full((3, 4), 0.5, dtype=torch.float16).float()  # noqa: E731
    add("full", "new_full_half", new_full, rand(3, 4), also=("mul", "cast"))
    add("fill", "scalar", lambda a: torch.fill(a, 2.5) + a, rand(3, 4), also=("add",))
    add(
        "fill",
        "tensor_value",
        lambda a, v: torch.fill(a, v[0]) * a,
        rand(3, 4),
        rand(2),
        also=("select", "mul"),
    )

    def shifted_window_mask(a):
        # Swin's attention mask: regions numbered by in-place writes into a zeros tensor.
        mask = a.new_zeros((8, 8))
        count = 0
        for h in (slice(0, 4), slice(4, 6), slice(6, None)):
            for w in (slice(0, 4), slice(4, None)):
                mask[h, w] = count
                count += 1
        return a + mask

    add(
        "fill",
        "in_place_regions",
        shifted_window_mask,
        rand(8, 8),
        also=("full", "slice", "slice_scatter", "add", "copy", "identity"),
    )
    add("arange", "end", lambda a: a + torch.arange(4), rand(3, 4), also=("add",))
    add("arange", "start_step", lambda a: a * torch.arange(1, 9, 2), ints(2, 4), also=("mul",))
    add("arange", "float_step", lambda a: a + torch.arange(0, 1, 0.25), rand(3, 4), also=("add",))

    # -- end of coverage part A ---------------------------------------------------------
    # -- recurrent layers (compiler/ops/recurrent.py) ------------------------------------
    class Recurrent(nn.Module):
        """An nn.LSTM/GRU/RNN returning its outputs flat: output, h_n (, c_n)."""

        def __init__(self, layer: nn.Module):
            super().__init__()
            self.layer = layer

        def forward(self, x, *state):
            hx = None if not state else state[0] if len(state) == 1 else tuple(state)
            out, h = self.layer(x, hx)
            return (out, *h) if isinstance(h, tuple) else (out, h)

    def rnn(op, id, layer, *inputs, also=()):
        add(op, id, Recurrent(layer), *inputs, also=also)

    rnn("lstm", "one_layer", nn.LSTM(4, 6), rand(5, 2, 4), also=("full",))
    rnn(
        "lstm",
        "two_layers_bidirectional_batch_first_h0_c0",
        nn.LSTM(4, 6, num_layers=2, bidirectional=True, batch_first=True),
        rand(2, 5, 4),
        rand(4, 2, 6),
        rand(4, 2, 6),
    )
    rnn(
        "lstm",
        "no_bias_h0_c0",
        nn.LSTM(3, 5, bias=False),
        rand(4, 1, 3),
        rand(1, 1, 5),
        rand(1, 1, 5),
    )
    # A projection has no Core ML form: runs on torch (the record's check says why).
    rnn("lstm", "proj_size_on_torch", nn.LSTM(4, 6, proj_size=3), rand(5, 2, 4), also=("full",))
    # The default target (iOS16) lowers a GRU step by step; iOS18's gru op is tested in
    # tests/ops/test_recurrent.py.
    rnn("gru", "one_layer", nn.GRU(4, 6), rand(5, 2, 4), also=("full",))
    rnn(
        "gru",
        "two_layers_bidirectional_batch_first_h0",
        nn.GRU(4, 6, num_layers=2, bidirectional=True, batch_first=True),
        rand(2, 5, 4),
        rand(4, 2, 6),
    )
    rnn("gru", "no_bias", nn.GRU(4, 6, bias=False), rand(5, 2, 4), rand(1, 2, 6))
    rnn("rnn", "tanh", nn.RNN(4, 6), rand(5, 2, 4), also=("full",))
    rnn(
        "rnn",
        "relu_two_layers_bidirectional_no_bias_h0",
        nn.RNN(4, 6, num_layers=2, nonlinearity="relu", bidirectional=True, bias=False),
        rand(5, 2, 4),
        rand(4, 2, 6),
    )
    rnn(
        "rnn",
        "relu_batch_first",
        nn.RNN(4, 6, nonlinearity="relu", batch_first=True),
        rand(2, 5, 4),
        also=("full",),
    )
    # -- end of recurrent layers ---------------------------------------------------------
    # attention
    q, k, v = rand(2, 4, 6, 8), rand(2, 4, 5, 8), rand(2, 4, 5, 8)
    sdpa = F.scaled_dot_product_attention
    add("sdpa", "plain", lambda a, b, c: sdpa(a, b, c), q, k, v)
    add("sdpa", "float_mask", lambda a, b, c, m: sdpa(a, b, c, attn_mask=m), q, k, v, rand(6, 5))
    keep = torch.rand(2, 1, 6, 5, generator=_g) > 0.3
    keep[..., 0] = True  # no row fully masked (torch gives NaN there)
    add("sdpa", "bool_mask", lambda a, b, c: sdpa(a, b, c, attn_mask=keep), q, k, v)
    add(
        "sdpa",
        "causal",
        lambda a, b, c: sdpa(a, b, c, is_causal=True),
        q,
        rand(2, 4, 6, 8),
        rand(2, 4, 6, 8),
    )
    add("sdpa", "scale", lambda a, b, c: sdpa(a, b, c, scale=0.3), q, k, v)
    add(
        "sdpa",
        "gqa",
        lambda a, b, c: sdpa(a, b, c, enable_gqa=True),
        q,
        rand(2, 2, 5, 8),
        rand(2, 2, 5, 8),
    )
    # -- issue 11: hypot, erfc, round(decimals=), grid_sample, im2col/col2im ----------
    add("hypot", "broadcast", torch.hypot, rand(2, 3, 4), rand(3, 1))
    # Beyond 256 a square overflows fp16; zeros and equal magnitudes take the ratio-1 path.
    big = torch.tensor([[0.0, 300.0, -1000.0, 3.0], [0.0, -5.0, 40000.0, 7.0]])
    add("hypot", "zeros_and_large", torch.hypot, big, torch.tensor([0.0, 400.0, 1000.0, -7.0]))
    add("erfc", "plain", torch.erfc, rand(3, 4) * 3)
    add("erfc", "int", torch.erfc, torch.randint(-3, 4, (3, 4), generator=_g))

    def sixty_fourths(*shape: int) -> torch.Tensor:
        """k/64 in [-4, 4): exact in fp16, and times 100 exact in fp32, so the ties
        (0.125 -> 12.5) are ties for torch and for the package alike."""
        return torch.randint(-256, 256, shape, generator=_g) / 64

    ties = torch.tensor([0.125, 0.375, -0.125, -0.375, 0.625, 2.5])
    add("round", "decimals_2", lambda a: torch.round(a, decimals=2), sixty_fourths(3, 8))
    add("round", "decimals_2_ties", lambda a: torch.round(a, decimals=2), ties)
    # Multiples of 2.5: a tenth of them is a quarter, so half of them are ties.
    halves = torch.randint(-40, 40, (3, 8), generator=_g) * 2.5
    add("round", "decimals_minus_1", lambda a: torch.round(a, decimals=-1), halves)
    # 10**5 is beyond fp16: the fp16 program scales in fp32, as torch does.
    add("round", "decimals_5", lambda a: torch.round(a, decimals=5), sixty_fourths(3, 8))

    def grid_sample(mode: str, padding: str, align: bool):
        return lambda a, g: F.grid_sample(
            a, g, mode=mode, padding_mode=padding, align_corners=align
        )

    def pixel_grid(n: int, ho: int, wo: int, h: int, w: int, align: bool) -> torch.Tensor:
        """Positions within 0.3 of a pixel centre, some outside the image: nearest
        sampling picks the same pixel from an fp16 grid."""

        def axis(size: int) -> torch.Tensor:
            p = torch.randint(-3, size + 3, (n, ho, wo), generator=_g).float()
            p = p + rand(n, ho, wo, low=-0.3, high=0.3)
            return 2 * p / (size - 1) - 1 if align else (2 * p + 1) / size - 1

        return torch.stack([axis(w), axis(h)], dim=-1)

    img = rand(2, 3, 6, 7)
    for padding in ("zeros", "border", "reflection"):
        for align in (False, True):
            # Well outside [-1, 1], so reflection folds more than once.
            g = rand(2, 4, 5, 2, low=-2.5, high=2.5)
            tag = f"{padding}_align" if align else padding
            add("grid_sample", f"bilinear_{tag}", grid_sample("bilinear", padding, align), img, g)
            g = pixel_grid(2, 4, 5, 6, 7, align)
            add("grid_sample", f"nearest_{tag}", grid_sample("nearest", padding, align), img, g)
    add(
        "grid_sample",
        "bilinear_ios15",
        grid_sample("bilinear", "zeros", False),
        img,
        rand(2, 4, 5, 2, low=-1.2, high=1.2),
        target="iOS15",
    )

    add("im2col", "plain", lambda a: F.unfold(a, 3), rand(2, 3, 6, 7))
    add(
        "im2col",
        "stride_padding_dilation",
        lambda a: F.unfold(a, (2, 3), dilation=(2, 1), padding=(1, 2), stride=(2, 3)),
        rand(2, 3, 8, 9),
    )
    add("im2col", "patches", lambda a: F.unfold(a, 4, stride=4), rand(1, 3, 8, 12))
    add("im2col", "unbatched", lambda a: F.unfold(a, 2, padding=1), rand(3, 5, 4))
    add("col2im", "plain", lambda a: F.fold(a, (6, 7), 3), rand(2, 27, 20))
    # Down, 4 windows of 3 rows (dilated) at stride 2 cover padded rows 0-8 of 0-9: the
    # last row gets no window, the case conv_transpose needs an output shape for.
    add(
        "col2im",
        "stride_padding_dilation",
        lambda a: F.fold(a, (8, 9), (2, 3), dilation=(2, 1), padding=(1, 2), stride=(2, 3)),
        rand(2, 18, 16),
    )
    add("adaptive_avg_pool1d", "global", lambda a: F.adaptive_avg_pool1d(a, 1), rand(2, 4, 7))
    add("adaptive_avg_pool1d", "window", lambda a: F.adaptive_avg_pool1d(a, 3), rand(2, 4, 12))
    add("adaptive_avg_pool1d", "unbatched", lambda a: F.adaptive_avg_pool1d(a, 2), rand(4, 6))
    add("adaptive_avg_pool1d", "overlapping", lambda a: F.adaptive_avg_pool1d(a, 5), rand(2, 4, 8))
    # Padding per side (fold_pad writes it from an asymmetric pad; ONNX's SAME_UPPER).
    side_w = rand(4, 3, 3, 3)
    add(
        "conv",
        "padding_per_side",
        lambda a: F.conv2d(F.pad(a, (0, 1, 2, 1)), side_w, stride=2),
        rand(1, 3, 7, 8),
        also=("pad",),
    )
    # triangles: band_part where the kept side reaches the diagonal, else a select
    for k in (-2, -1, 0, 1, 3):
        add("triu", f"diagonal_{k}", lambda a, k=k: torch.triu(a, k), rand(2, 5, 6))
        add("tril", f"diagonal_{k}", lambda a, k=k: torch.tril(a, k), rand(2, 6, 5))
    # A causal mask: triu of -inf (subtracting a band would make nan).
    add(
        "triu",
        "causal_mask",
        lambda a: a + torch.triu(torch.full((5, 5), float("-inf")), 1).clamp(min=-1e4),
        rand(2, 5, 5),
        also=("add", "clamp", "full"),
    )
    add("triu", "bool", lambda a: torch.triu(a > 0, 1), rand(4, 4), also=("gt",))
    add("tril", "bool", lambda a: torch.tril(a > 0), rand(3, 4, 4), also=("gt",))
    add("tril", "ints", lambda a: torch.tril(a, -1), ints(5, 3))
    add("col2im", "leftover_rows", lambda a: F.fold(a, (8, 8), 3, stride=2), rand(1, 18, 9))
    add("col2im", "unbatched", lambda a: F.fold(a, (5, 4), 2, padding=1), rand(12, 30))
    add(
        "col2im",
        "unfold_fold",
        lambda a: F.fold(F.unfold(a, 3, padding=1) * 0.5, (6, 6), 3, padding=1),
        rand(2, 2, 6, 6),
        also=("im2col", "mul"),
    )
    return s


SAMPLES = _samples()
