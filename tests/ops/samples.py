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


def _samples() -> list[Sample]:
    s: list[Sample] = []

    def add(op: str, id: str, module, *inputs, also=()):
        if not isinstance(module, nn.Module):
            module = Fn(module)
        s.append(Sample(op, id, module.eval(), tuple(inputs), tuple(also)))

    x4 = rand(2, 3, 8, 8)
    # element-wise arithmetic
    add("add", "tensor", lambda a, b: a + b, rand(2, 3, 4), rand(2, 3, 4))
    add("add", "broadcast", lambda a, b: a + b, rand(2, 3, 4), rand(3, 1))
    add(
        "add", "scalar_alpha", lambda a, b: torch.add(a, b, alpha=0.5) + 2.0, rand(4, 5), rand(4, 5)
    )
    add("sub", "tensor", lambda a, b: a - b, rand(2, 3, 4), rand(4))
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
    add("log_softmax", "last", nn.LogSoftmax(-1), rand(2, 8) * 4)
    # matrix products and convolutions
    add("matmul", "2d", lambda a, b: a @ b, rand(3, 4), rand(4, 5))
    add("matmul", "batched_broadcast", lambda a, b: a @ b, rand(2, 3, 4), rand(4, 5))
    add("matmul", "bmm", torch.bmm, rand(2, 3, 4), rand(2, 4, 5))
    add("linear", "bias", nn.Linear(6, 4), rand(3, 6))
    add("linear", "no_bias_rank4", nn.Linear(6, 4, bias=False), rand(2, 2, 3, 6))
    add("linear", "weight_is_an_input", lambda a, w: F.linear(a, w), rand(3, 6), rand(4, 6))
    w = rand(4, 5)
    b = rand(5)
    add("addmm", "plain", lambda a: torch.addmm(b, a, w), rand(3, 4))
    add("addmm", "alpha_beta", lambda a: torch.addmm(b, a, w, beta=0.5, alpha=2.0), rand(3, 4))
    add("conv", "2d_stride_pad", nn.Conv2d(3, 4, 3, stride=2, padding=1), x4)
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
    # pooling
    add("max_pool2d", "pad", nn.MaxPool2d(3, 2, 1), x4)
    add("max_pool2d", "ceil", nn.MaxPool2d(3, 2, ceil_mode=True), x4)
    add("avg_pool2d", "plain", nn.AvgPool2d(2), x4)
    add("avg_pool2d", "exclude_pad", nn.AvgPool2d(3, 2, 1, count_include_pad=False), x4)
    add("avg_pool2d", "include_pad", nn.AvgPool2d(3, 1, 1, count_include_pad=True), x4)
    add("adaptive_avg_pool2d", "global", nn.AdaptiveAvgPool2d(1), x4)
    add("adaptive_avg_pool2d", "divisible", nn.AdaptiveAvgPool2d((2, 4)), x4)
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
    add("mean", "axes", lambda a: a.mean((-1, 1)), x4)
    add("amax", "axis", lambda a: a.amax(2), x4)
    add("amin", "axes_keepdim", lambda a: a.amin((0, 3), keepdim=True), x4)
    # data movement
    add("reshape", "view", lambda a: a.view(2, -1) * 2, x4, also=("mul",))
    add("reshape", "reshape", lambda a: a.reshape(6, 4, 16), x4)
    add("flatten", "from1", lambda a: a.flatten(1), x4)
    add("permute", "plain", lambda a: a.permute(0, 2, 3, 1), x4)
    add("transpose", "plain", lambda a: a.transpose(1, -1), x4)
    add("transpose", "dot_T", lambda a, b: a.T + b, rand(3, 5), rand(5, 3), also=("add",))
    add("squeeze", "dim", lambda a: a.squeeze(1), rand(2, 1, 4))
    add("squeeze", "all", lambda a: a.squeeze(), rand(2, 1, 4, 1))
    add("unsqueeze", "plain", lambda a: a.unsqueeze(-1), rand(2, 4))
    add("cat", "dim1", lambda a, b: torch.cat([a, b, a], 1), rand(2, 3), rand(2, 5))
    add("slice", "step", lambda a: a[:, 1:7:2], rand(3, 8))
    add("slice", "negative", lambda a: a[..., -3:], rand(3, 8))
    add("select", "plain", lambda a: a[:, 2], rand(3, 8, 2))
    add("select", "negative", lambda a: a[-1], rand(3, 8))
    add("expand", "plain", lambda a: a.expand(2, 3, 4), rand(3, 1))
    add("pad", "constant", lambda a: F.pad(a, (1, 2, 0, 1), value=0.5), x4)
    add("pad", "reflect", lambda a: F.pad(a, (2, 1, 1, 2), mode="reflect"), x4)
    add("pad", "replicate", lambda a: F.pad(a, (1, 1, 2, 0), mode="replicate"), x4)
    return s


SAMPLES = _samples()
