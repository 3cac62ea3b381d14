"""Fusion passes: batch norm, bias, pad, reductions, activations."""

from __future__ import annotations

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


def test_asymmetric_pad_is_kept():
    conv = nn.Conv2d(3, 4, 3)
    _, after, _ = apply(
        lambda a: conv(nn.functional.pad(a, (1, 2, 1, 1))), (torch.randn(1, 3, 6, 6),), "fold_pad"
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
