"""Fusion passes: batch norm, bias, pad, reductions, activations."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tests.passes.helpers import apply


def _bn(c: int, kind=nn.BatchNorm2d) -> nn.Module:
    bn = kind(c)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    return bn


def test_fold_batch_norm_into_conv_and_linear():
    conv = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), _bn(4), nn.ReLU())
    before, after, _ = apply(conv, (torch.randn(2, 3, 8, 8),), "fold_batch_norm")
    assert before == {"conv": 1, "batch_norm": 1, "relu": 1} and after == {"conv": 1, "relu": 1}
    lin = nn.Sequential(nn.Linear(5, 6), _bn(6, nn.BatchNorm1d))
    _, after, _ = apply(lin, (torch.randn(3, 5),), "fold_batch_norm")
    assert after == {"linear": 1}


def test_batch_norm_after_a_shared_conv_is_not_folded():
    conv = nn.Conv2d(3, 4, 3)
    bn = _bn(4).eval()

    def f(a):
        y = conv(a)  # read by the batch norm and by the add
        return bn(y) + y

    _, after, _ = apply(f, (torch.randn(1, 3, 6, 6),), "fold_batch_norm")
    assert after == {"conv": 1, "batch_norm": 1, "add": 1}


def test_fuse_bias():
    w, b = torch.randn(5, 6), torch.randn(6)
    _, after, _ = apply(lambda a: a @ w + b, (torch.randn(2, 3, 5),), "fuse_bias")
    assert after == {"linear": 1}
    conv = nn.Conv2d(3, 4, 3, bias=False)
    c = torch.randn(4, 1, 1)
    _, after, _ = apply(lambda a: conv(a) + c, (torch.randn(1, 3, 6, 6),), "fuse_bias")
    assert after == {"conv": 1}


def test_bias_that_is_not_per_channel_is_kept():
    conv = nn.Conv2d(3, 4, 3)
    c = torch.randn(1, 4, 4)  # varies along H and W
    _, after, _ = apply(lambda a: conv(a) + c, (torch.randn(1, 3, 6, 6),), "fuse_bias")
    assert after == {"conv": 1, "add": 1}


def test_fold_pad_into_conv():
    conv = nn.Conv2d(3, 4, 3, padding=1)
    _, after, graph = apply(
        lambda a: conv(nn.functional.pad(a, (2, 2, 1, 1))), (torch.randn(1, 3, 6, 6),), "fold_pad"
    )
    assert after == {"conv": 1}
    assert graph.nodes[0].attrs["padding"] == [2, 3]


def test_asymmetric_pad_folds_into_the_conv_per_side():
    # Stride-2 "same" padding as TensorFlow and ONNX's SAME_UPPER write it: one more after.
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
    _, after, graph = apply(
        lambda a: conv(nn.functional.pad(a, (0, 1, 2, 0))), (torch.randn(1, 3, 6, 7),), "fold_pad"
    )
    assert after == {"conv": 1}
    # [before, after] per spatial dim: H 1+2 / 1+0, W 1+0 / 1+1
    assert graph.nodes[0].attrs["padding"] == [3, 1, 1, 2]


def test_padding_a_conv_cannot_take_is_kept():
    conv = nn.Conv2d(3, 4, 3)
    pad = (1, 1, 1, 1, 1, 0)  # the channel axis too
    _, after, _ = apply(
        lambda a: conv(nn.functional.pad(a, pad)), (torch.randn(1, 2, 6, 6),), "fold_pad"
    )
    assert after == {"pad": 1, "conv": 1}


def test_cropping_pad_is_kept():
    # A negative pad crops; folding it into the convolution's padding would be wrong.
    conv = nn.Conv2d(3, 4, 3)
    _, after, _ = apply(
        lambda a: conv(nn.functional.pad(a, (-1, -1, -1, -1))),
        (torch.randn(1, 3, 8, 8),),
        "fold_pad",
    )
    assert after == {"pad": 1, "conv": 1}


def test_fold_reshape_into_reduction():
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    _, after, _ = apply(head, (torch.randn(2, 8, 5, 5),), "fold_reshape_into_reduction")
    assert after == {"mean": 1}
    _, after, _ = apply(
        lambda a: a.amax((1,), keepdim=True).squeeze(1), (torch.randn(2, 3, 4),),
        "fold_reshape_into_reduction",
    )  # fmt: skip
    assert after == {"amax": 1}


def test_recompose_activations():
    _, after, _ = apply(
        lambda a: a * torch.sigmoid(a), (torch.randn(4, 5),), "recompose_activations"
    )
    assert after == {"silu": 1}
    _, after, _ = apply(
        lambda a: nn.functional.hardsigmoid(a) * a,
        (torch.randn(4, 5) * 4,),
        "recompose_activations",
    )
    assert after == {"hardswish": 1}

    def softmax_by_hand(a):
        e = torch.exp(a)
        return e / e.sum(-1, keepdim=True)

    _, after, _ = apply(softmax_by_hand, (torch.randn(4, 5),), "recompose_activations")
    assert after == {"softmax": 1}


GELU_FORMS = {
    "erf_left": lambda a: 0.5 * a * (1.0 + torch.erf(a / math.sqrt(2.0))),
    "erf_grouped": lambda a: a * (1.0 + torch.erf(a * (1 / math.sqrt(2.0)))) / 2,
    "tanh_pow": lambda a: (
        0.5 * a * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (a + 0.044715 * torch.pow(a, 3.0))))
    ),
    "tanh_cubed": lambda a: (
        a * 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (a + 0.044715 * (a * a * a))))
    ),
}


@pytest.mark.parametrize("form", list(GELU_FORMS))
def test_recompose_gelu(form):
    _, after, graph = apply(GELU_FORMS[form], (torch.randn(4, 8) * 3,), "recompose_activations")
    assert after == {"gelu": 1}
    expected = "none" if form.startswith("erf") else "tanh"
    assert graph.nodes[0].attrs["approximate"] == expected


def test_almost_gelu_is_left_alone():
    _, after, _ = apply(
        lambda a: 0.6 * a * (1.0 + torch.erf(a / math.sqrt(2.0))),
        (torch.randn(4, 8),),
        "recompose_activations",
    )
    assert "gelu" not in after


def test_recompose_layer_norm():
    gamma, beta = torch.randn(8), torch.randn(8)

    def by_hand(a):
        u = a.mean(-1, keepdim=True)
        d = a - u
        v = (d * d).mean(-1, keepdim=True)
        return d / torch.sqrt(v + 1e-5) * gamma + beta

    _, after, graph = apply(by_hand, (torch.randn(2, 3, 8),), "recompose_layer_norm")
    assert after == {"layer_norm": 1}
    attrs = graph.nodes[0].attrs
    assert attrs["normalized_shape"] == [8] and attrs["eps"] == pytest.approx(1e-5, rel=1e-6)

    def rsqrt_no_affine(a):
        d = a - a.mean((-2, -1), keepdim=True)
        return d * torch.rsqrt(d.pow(2).mean((-2, -1), keepdim=True) + 1e-6)

    _, after, _ = apply(rsqrt_no_affine, (torch.randn(2, 3, 8),), "recompose_layer_norm")
    assert after == {"layer_norm": 1}


def test_normalising_over_a_leading_dim_is_not_a_layer_norm():
    def over_dim1(a):
        d = a - a.mean(1, keepdim=True)
        return d / torch.sqrt(d.pow(2).mean(1, keepdim=True) + 1e-5)

    _, after, _ = apply(over_dim1, (torch.randn(2, 3, 8),), "recompose_layer_norm")
    assert "layer_norm" not in after


def test_fold_pad_into_pools():
    x = torch.randn(1, 3, 8, 8)
    avg = nn.AvgPool2d(3, 1, 0, count_include_pad=True)
    _, after, graph = apply(lambda a: avg(nn.functional.pad(a, (1, 1, 1, 1))), (x,), "fold_pad")
    assert after == {"avg_pool2d": 1} and graph.nodes[0].attrs["padding"] == [1, 1]
    mx = nn.MaxPool2d(3, 2)
    padded = lambda a: mx(nn.functional.pad(a, (1, 1, 1, 1), value=float("-inf")))  # noqa: E731
    _, after, _ = apply(padded, (x,), "fold_pad")
    assert after == {"max_pool2d": 1}
    # Zero padding before a max pool changes the result where all inputs are negative.
    _, after, _ = apply(lambda a: mx(nn.functional.pad(a, (1, 1, 1, 1))), (x,), "fold_pad")
    assert after == {"pad": 1, "max_pool2d": 1}


def test_rank2_batch_norm_becomes_scale_and_shift():
    bn = _bn(6, nn.BatchNorm1d).eval()
    _, after, _ = apply(bn, (torch.randn(4, 6),), "batch_norm_to_scale")
    assert after == {"mul": 1, "add": 1}
    bn2 = _bn(3).eval()  # rank 4: Core ML's batch_norm is one op, kept
    _, after, _ = apply(bn2, (torch.randn(1, 3, 4, 4),), "batch_norm_to_scale")
    assert after == {"batch_norm": 1}


def test_fuse_bias_after_conv_transpose_and_batch_norm():
    up = nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2, bias=False)
    c = torch.linspace(-1, 1, 6).reshape(6, 1, 1)
    _, after, _ = apply(lambda a: up(a) + c, (torch.randn(1, 4, 5, 5),), "fuse_bias")
    assert after == {"conv_transpose": 1}
    bn = _bn(6).eval()
    _, after, _ = apply(lambda a: bn(a.relu()) + c, (torch.randn(1, 6, 4, 4),), "fuse_bias")
    assert after == {"relu": 1, "batch_norm": 1}
    wide = torch.randn(6, 4, 1)  # varies along H: stays an add
    _, after, _ = apply(lambda a: bn(a.relu()) + wide, (torch.randn(1, 6, 4, 4),), "fuse_bias")
    assert after == {"relu": 1, "batch_norm": 1, "add": 1}


def _max_pool_after_pad(pads, kernel, stride, size):
    pool = nn.MaxPool2d(kernel, stride)

    def f(a):
        return pool(nn.functional.pad(a, pads, value=float("-inf")))

    return apply(f, (torch.randn(1, 3, size, size),), "fold_pad")


def test_end_only_pad_before_max_pool_becomes_ceil_mode():
    # Caffe's rounding up, as ONNX zoo graphs write it: pads=[0,0,1,1].
    _, after, graph = _max_pool_after_pad((0, 1, 0, 1), 3, 2, 112)
    assert after == {"max_pool2d": 1}
    attrs = graph.nodes[0].attrs
    assert attrs["ceil_mode"] is True and attrs["padding"] == [0, 0]
    # More after than before: the common part becomes padding, the rest ceil mode.
    _, after, graph = _max_pool_after_pad((1, 2, 1, 2), 3, 2, 8)
    assert after == {"max_pool2d": 1} and graph.nodes[0].attrs["padding"] == [1, 1]


def test_pads_that_ceil_mode_cannot_express_are_kept():
    # More before than after.
    _, after, _ = _max_pool_after_pad((1, 0, 1, 0), 3, 2, 8)
    assert after == {"pad": 1, "max_pool2d": 1}
    # Two extra rows give another window; ceil mode reads at most stride - 1 past the end.
    _, after, _ = _max_pool_after_pad((0, 2, 0, 2), 2, 2, 8)
    assert after == {"pad": 1, "max_pool2d": 1}
    # A last window that lies wholly in the padding (-inf): ceil mode drops it.
    _, after, _ = _max_pool_after_pad((0, 1, 0, 1), 1, 3, 3)
    assert after == {"pad": 1, "max_pool2d": 1}
    # Same output in torch's ceil mode (which drops the second window), not in Core ML's
    # (which drops it only when there is padding): kept.
    _, after, _ = _max_pool_after_pad((0, 1, 0, 1), 2, 3, 3)
    assert after == {"pad": 1, "max_pool2d": 1}
    # Zero padding after the end is not what ceil mode ignores.
    pool = nn.MaxPool2d(3, 2)
    _, after, _ = apply(
        lambda a: pool(nn.functional.pad(a, (0, 1, 0, 1))), (torch.randn(1, 3, 8, 8),), "fold_pad"
    )
    assert after == {"pad": 1, "max_pool2d": 1}
