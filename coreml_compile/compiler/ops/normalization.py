"""Normalisations: batch (inference), layer, group, instance, RMS and weight norm."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from coreml_compile.compiler.ops import Op


class BatchNorm(Op):
    """Inference batch norm over dim 1 with running statistics."""

    name = "batch_norm"
    dynamic = True
    inputs = ("x", "weight?", "bias?", "running_mean", "running_var")
    attrs = {"eps": 1e-5}

    def kernel(x, weight, bias, running_mean, running_var, *, eps):
        return F.batch_norm(x, running_mean, running_var, weight, bias, False, 0.0, eps)

    def lower(c, x, weight, bias, running_mean, running_var, *, eps):
        # MIL's batch_norm takes ranks 3 to 5; (N, C) input is lifted to (N, C, 1).
        rank = x.rank
        if rank == 2:
            x = c.mb.expand_dims(x=x, axes=[-1], name=c.name + "_lift")
        y = c.mb.batch_norm(
            x=x,
            mean=running_mean,
            variance=running_var,
            gamma=weight,
            beta=bias,
            epsilon=c.scalar(eps),
            name=c.name if rank != 2 else c.name + "_bn",
        )
        if rank == 2:
            y = c.mb.squeeze(x=y, axes=[-1], name=c.name)
        return y

    def check(node, generation):
        if not 2 <= node.inputs[0].type.rank <= 5:
            return "batch_norm needs an input of rank 2 to 5"
        return None


class LayerNorm(Op):
    name = "layer_norm"
    dynamic = True
    inputs = ("x", "weight?", "bias?")
    attrs = {"normalized_shape": [], "eps": 1e-5}

    def kernel(x, weight, bias, *, normalized_shape, eps):
        return F.layer_norm(x, list(normalized_shape), weight, bias, eps)

    def lower(c, x, weight, bias, *, normalized_shape, eps):
        axes = list(range(x.rank - len(normalized_shape), x.rank))
        return c.mb.layer_norm(
            x=x, axes=axes, gamma=weight, beta=bias, epsilon=c.scalar(eps), name=c.name
        )


class GroupNorm(Op):
    """Normalise each of ``num_groups`` channel groups, then scale and shift per channel.

    Core ML has no group norm: it is lowered as reshape to (N, G, -1), layer_norm over the
    last axis, reshape back, and a per-channel affine.
    """

    name = "group_norm"
    dynamic = True
    inputs = ("x", "weight?", "bias?")
    attrs = {"num_groups": 1, "eps": 1e-5}

    def kernel(x, weight, bias, *, num_groups, eps):
        return F.group_norm(x, num_groups, weight, bias, eps)

    def lower(c, x, weight, bias, *, num_groups, eps):
        shape = list(c.node.inputs[0].type.shape)
        grouped = c.mb.reshape(
            x=x, shape=c.sizes([shape[0], num_groups, -1]), name=c.name + "_grouped"
        )
        normed = c.mb.layer_norm(
            x=grouped, axes=[-1], epsilon=c.scalar(eps), name=c.name + "_normed"
        )
        has_affine = weight is not None or bias is not None
        back = c.name if not has_affine else c.name + "_back"
        y = c.mb.reshape(x=normed, shape=c.sizes(shape), name=back)
        channel_shape = [shape[1]] + [1] * (len(shape) - 2)
        if weight is not None:
            w = c.const_like(weight.val.reshape(channel_shape), weight)
            y = c.mb.mul(x=y, y=w, name=c.name if bias is None else c.name + "_scale")
        if bias is not None:
            b = c.const_like(bias.val.reshape(channel_shape), bias)
            y = c.mb.add(x=y, y=b, name=c.name)
        return y

    def check(node, generation):
        for v in node.inputs[1:]:
            if v is not None and not v.is_constant:
                return "group_norm needs constant weight and bias"
        if not isinstance(node.inputs[0].type.shape[1], int):
            return "group_norm over a dynamic channel dimension"
        return None


class InstanceNorm(Op):
    """Per-sample, per-channel normalisation with input statistics."""

    name = "instance_norm"
    dynamic = True
    inputs = ("x", "weight?", "bias?")
    attrs = {"eps": 1e-5}

    def kernel(x, weight, bias, *, eps):
        return F.instance_norm(x, None, None, weight, bias, True, 0.0, eps)

    def lower(c, x, weight, bias, *, eps):
        return c.mb.instance_norm(x=x, gamma=weight, beta=bias, epsilon=c.scalar(eps), name=c.name)

    def check(node, generation):
        if node.inputs[0].type.rank not in (3, 4):
            return "instance_norm needs an input of rank 3 or 4"
        return None


class RmsNorm(Op):
    """x / sqrt(mean(x^2 over the last len(normalized_shape) dims) + eps), times weight.

    ``eps`` None is the machine epsilon of x's dtype, as in torch.
    """

    name = "rms_norm"
    dynamic = True
    inputs = ("x", "weight?")
    attrs = {"normalized_shape": [], "eps": None}

    def kernel(x, weight, *, normalized_shape, eps):
        return F.rms_norm(x, list(normalized_shape), weight, eps)

    def lower(c, x, weight, *, normalized_shape, eps):
        import torch

        from coreml_compile.compiler import dtypes

        if eps is None:
            eps = torch.finfo(dtypes.to_torch(c.node.inputs[0].type.dtype)).eps
        n = c.name
        axes = list(range(x.rank - len(normalized_shape), x.rank))
        square = c.mb.mul(x=x, y=x, name=n + "_sq")
        mean = c.mb.reduce_mean(x=square, axes=axes, keep_dims=True, name=n + "_ms")
        inv = c.mb.rsqrt(x=mean, epsilon=c.scalar(eps, like=x), name=n + "_inv")
        y = c.mb.mul(x=x, y=inv, name=n if weight is None else n + "_normed")
        if weight is not None:
            (weight,) = c.promote(weight)
            y = c.mb.mul(x=y, y=weight, name=n)
        return y


class WeightNorm(Op):
    """torch's weight norm (nn.utils.weight_norm): v scaled to the norm ``g`` over every
    axis but ``dim`` (over all of them for dim -1). Both are weights, so it folds to a
    constant; the lowering is for a v or g computed at run time."""

    name = "weight_norm"
    inputs = ("v", "g")
    attrs = {"dim": 0}
    dynamic = True

    def kernel(v, g, *, dim):
        return torch._weight_norm(v, g, dim)

    def lower(c, v, g, *, dim):
        v, g = c.promote(v, g)
        axes = list(range(v.rank)) if dim == -1 else [a for a in range(v.rank) if a != dim % v.rank]
        norm = c.mb.reduce_l2_norm(x=v, axes=axes, keep_dims=True, name=c.name + "_norm")
        scale = c.mb.real_div(x=g, y=norm, name=c.name + "_scale")
        return c.mb.mul(x=v, y=scale, name=c.name)
