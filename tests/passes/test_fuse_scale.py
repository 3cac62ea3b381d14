"""fuse_scale: a per-channel (or scalar) constant multiplication folded into the layer before."""

from __future__ import annotations

import math

import torch
from torch import nn

from tests.passes.helpers import apply

X = torch.randn(1, 3, 6, 6)


def _scale(*shape: int) -> torch.Tensor:
    # Signs and sizes both vary, so a scale applied to the wrong channel shows.
    return torch.linspace(-2.0, 3.0, math.prod(shape)).reshape(shape)


def test_per_channel_scale_folds_into_conv_weight_and_bias():
    conv, s = nn.Conv2d(3, 4, 3), _scale(4, 1, 1)
    before, after, graph = apply(lambda a: conv(a) * s, (X,), "fuse_scale")
    assert before == {"conv": 1, "mul": 1} and after == {"conv": 1}
    (node,) = graph.nodes
    weight, bias = node.inputs[1].data, node.inputs[2].data
    expected = conv.weight.detach().numpy() * s.numpy().reshape(4, 1, 1, 1)
    assert torch.allclose(torch.from_numpy(weight), torch.from_numpy(expected))
    assert torch.allclose(torch.from_numpy(bias), conv.bias.detach() * s.reshape(4))
    # The model's own weight is not written into.
    assert not torch.allclose(conv.weight.detach(), torch.from_numpy(weight))


def test_scalar_and_bias_free_conv():
    conv = nn.Conv2d(3, 4, 3, bias=False)
    _, after, graph = apply(lambda a: 2.5 * conv(a), (X,), "fuse_scale")
    assert after == {"conv": 1} and graph.nodes[0].inputs[2] is None


def test_linear_scales_its_last_dim():
    lin, s = nn.Linear(5, 6), _scale(6)
    _, after, _ = apply(lambda a: lin(a) * s, (torch.randn(2, 3, 5),), "fuse_scale")
    assert after == {"linear": 1}


def test_grouped_conv_transpose():
    # weight (in=4, out/groups=3, k, k) with 2 groups: 6 output channels.
    up, s = nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2), _scale(6, 1, 1)
    _, after, _ = apply(lambda a: up(a) * s, (torch.randn(1, 4, 5, 5),), "fuse_scale")
    assert after == {"conv_transpose": 1}


def test_batch_norm_not_after_a_layer_takes_scale_and_shift():
    # densenet's pre-activation: batch_norm -> mul -> add -> relu, on a concatenation.
    bn = nn.BatchNorm2d(6).eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    s, t = _scale(6, 1, 1), torch.linspace(-1, 1, 6).reshape(6, 1, 1)

    def f(a):
        return torch.relu(bn(torch.cat([a, a * a], 1)) * s + t)

    before, after, _ = apply(f, (X,), "fuse_scale", "fuse_bias")
    assert before["batch_norm"] == 1 and before["mul"] == 2 and before["add"] == 1
    assert after == {"cat": 1, "mul": 1, "batch_norm": 1, "relu": 1}


def test_caffe2_batch_norm_becomes_one_conv():
    # Conv -> BatchNormalization -> Mul -> Add, as the ONNX zoo's inception_v2 stores it.
    conv, bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4).eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    s, t = _scale(4, 1, 1), torch.randn(4, 1, 1)
    _, after, _ = apply(
        lambda a: torch.relu(bn(conv(a)) * s + t),
        (X,),
        "fold_batch_norm",
        "fuse_scale",
        "fuse_bias",
    )
    assert after == {"conv": 1, "relu": 1}


def test_conv_read_twice_is_kept():
    conv, s = nn.Conv2d(3, 4, 3), _scale(4, 1, 1)

    def f(a):
        y = conv(a)  # read by the mul and by the add
        return y * s + y

    _, after, _ = apply(f, (X,), "fuse_scale")
    assert after == {"conv": 1, "mul": 1, "add": 1}


def test_scale_that_is_not_per_channel_is_kept():
    conv = nn.Conv2d(3, 4, 3)
    for s in (_scale(1, 4, 4), _scale(4, 4, 1)):  # varies along H and W, or along H only
        _, after, _ = apply(lambda a, s=s: conv(a) * s, (X,), "fuse_scale")
        assert after == {"conv": 1, "mul": 1}


def test_scale_along_another_axis_is_kept():
    # Four values, as many as the channels, but broadcast along H (conv) or along the
    # sequence (linear): not a per-channel scale.
    conv, s = nn.Conv2d(3, 4, 3, padding=1), _scale(4, 1)
    _, after, _ = apply(lambda a: conv(a) * s, (torch.randn(1, 3, 4, 4),), "fuse_scale")
    assert after == {"conv": 1, "mul": 1}
    lin, s6 = nn.Linear(5, 6), _scale(6, 1)
    _, after, _ = apply(lambda a: lin(a) * s6, (torch.randn(2, 6, 5),), "fuse_scale")
    assert after == {"linear": 1, "mul": 1}


def test_scale_that_is_not_a_constant_is_kept():
    conv = nn.Conv2d(3, 4, 3)
    _, after, _ = apply(
        lambda a, g: conv(a) * g, (X, torch.randn(1, 4, 1, 1)), "fuse_scale"
    )  # fmt: skip
    assert after == {"conv": 1, "mul": 1}


def test_scale_that_grows_the_output_or_is_not_finite_is_kept():
    conv, s = nn.Conv2d(3, 4, 3), _scale(2, 4, 1, 1)
    # A batch of two scales makes a batch of two outputs: the conv alone cannot.
    _, after, _ = apply(lambda a: conv(a) * s, (X,), "fuse_scale")
    assert after == {"conv": 1, "mul": 1}
    # Folding inf into the weights would make 0 * inf = NaN where a weight is 0.
    conv0 = nn.Conv2d(3, 4, 3)
    with torch.no_grad():
        conv0.weight[1, 0] = 0.0
    inf = torch.tensor([1.0, float("inf"), 1.0, 1.0]).reshape(4, 1, 1)
    _, after, _ = apply(lambda a: conv0(a) * inf, (X,), "fuse_scale")
    assert after == {"conv": 1, "mul": 1}
