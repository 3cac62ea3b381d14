"""Torch kernels for MIL ops, keyed by MIL op type, called with the op's named inputs.

Tensor inputs arrive as torch tensors (fp32 for any float dtype, int64 for integers);
constant parameters (axes, strides, pad_type) as Python values or tensors. Semantics
follow the MIL op specifications in coremltools (``mil/ops/defs``), including their
defaults, since a loaded program may omit optional inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from coreml_compile.errors import CoreMLCompileError


class UnknownMILOp(CoreMLCompileError):
    """The program uses a MIL op the reference executor has no kernel for."""


KERNELS: dict[str, Callable[..., Any]] = {}


def kernel(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        for name in names:
            KERNELS[name] = fn
        return fn

    return register


def _list(v: Any) -> list:
    if v is None:
        return []
    if isinstance(v, torch.Tensor):
        return v.reshape(-1).tolist()
    if isinstance(v, list | tuple):
        return list(v)
    return [v]


def _t(v: Any) -> torch.Tensor:
    return v if isinstance(v, torch.Tensor) else torch.tensor(v)


def _axes(axes: Any, rank: int) -> list[int]:
    return [a % rank for a in _list(axes)] if axes is not None else list(range(rank))


def _float(v: Any) -> float:
    return float(v.item()) if isinstance(v, torch.Tensor) else float(v)


# -- element-wise ---------------------------------------------------------------------

_UNARY = {
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "silu": F.silu,
    "exp": torch.exp,
    "exp2": torch.exp2,
    "sqrt": torch.sqrt,
    "abs": torch.abs,
    "sign": torch.sign,
    "floor": torch.floor,
    "ceil": torch.ceil,
    "round": torch.round,
    "sin": torch.sin,
    "cos": torch.cos,
    "tan": torch.tan,
    "asin": torch.asin,
    "acos": torch.acos,
    "atan": torch.atan,
    "sinh": torch.sinh,
    "cosh": torch.cosh,
    "atanh": torch.atanh,
    "erf": torch.erf,
    "square": torch.square,
    "logical_not": torch.logical_not,
    "softsign": F.softsign,
    "relu6": F.relu6,
    "identity": lambda x: x,
}
for _name, _fn in _UNARY.items():
    KERNELS[_name] = lambda x, _fn=_fn, **_: _fn(_t(x))

_BINARY = {
    "add": torch.add,
    "sub": torch.sub,
    "mul": torch.mul,
    "real_div": lambda x, y: (
        torch.div(x.to(torch.float32), y.to(torch.float32))
        if not (x.is_floating_point() or y.is_floating_point())
        else torch.div(x, y)
    ),
    "floor_div": lambda x, y: torch.div(x, y, rounding_mode="floor"),
    "pow": torch.pow,
    "maximum": torch.maximum,
    "minimum": torch.minimum,
    "mod": torch.remainder,
    "equal": torch.eq,
    "not_equal": torch.ne,
    "less": torch.lt,
    "less_equal": torch.le,
    "greater": torch.gt,
    "greater_equal": torch.ge,
    "logical_and": torch.logical_and,
    "logical_or": torch.logical_or,
    "logical_xor": torch.logical_xor,
}
for _name, _fn in _BINARY.items():
    KERNELS[_name] = lambda x, y, _fn=_fn, **_: _fn(_t(x), _t(y))


@kernel("rsqrt")
def _rsqrt(x, epsilon=1e-12, **_):
    return torch.rsqrt(x + _float(epsilon))


@kernel("log")
def _log(x, epsilon=1e-45, **_):
    return torch.log(x + _float(epsilon))


@kernel("inverse")
def _inverse(x, epsilon=1e-4, **_):
    return 1.0 / (x + _float(epsilon))


@kernel("clip")
def _clip(x, alpha, beta, **_):
    return torch.clamp(x, _float(alpha), _float(beta))


@kernel("leaky_relu")
def _leaky_relu(x, alpha=0.01, **_):
    return F.leaky_relu(x, _float(alpha))


@kernel("elu")
def _elu(x, alpha=1.0, **_):
    return F.elu(x, _float(alpha))


@kernel("sigmoid_hard")
def _sigmoid_hard(x, alpha=0.2, beta=0.5, **_):
    return torch.clamp(_float(alpha) * x + _float(beta), 0.0, 1.0)


@kernel("clamped_relu")
def _clamped_relu(x, alpha=0.0, beta=6.0, **_):
    return torch.clamp(torch.where(x >= 0, x, _float(alpha) * x), max=_float(beta))


@kernel("prelu")
def _prelu(x, alpha, **_):
    shape = [1, -1] + [1] * (x.dim() - 2)
    return torch.where(x >= 0, x, alpha.reshape(shape) * x)


@kernel("softplus")
def _softplus(x, **_):
    return F.softplus(x)


@kernel("thresholded_relu")
def _thresholded_relu(x, alpha=1.0, **_):
    return torch.where(x > _float(alpha), x, torch.zeros_like(x))


@kernel("linear_activation")
def _linear_activation(x, alpha, beta=0.0, **_):
    return _float(alpha) * x + _float(beta)


@kernel("scaled_tanh")
def _scaled_tanh(x, alpha=1.0, beta=1.0, **_):
    return _float(alpha) * torch.tanh(_float(beta) * x)


@kernel("gelu")
def _gelu(x, mode="EXACT", **_):
    if mode == "TANH_APPROXIMATION":
        return F.gelu(x, approximate="tanh")
    if mode == "SIGMOID_APPROXIMATION":
        return x * torch.sigmoid(1.702 * x)
    return F.gelu(x)


@kernel("softmax")
def _softmax(x, axis=-1, **_):
    return torch.softmax(x, int(axis))


@kernel("cast")
def _cast(x, dtype, **_):
    if dtype.startswith("fp"):
        return x.to(torch.float32)
    if dtype == "bool":
        return x.to(torch.bool)
    # Core ML casts float to int by truncation toward zero, as torch does.
    return x.to(torch.int64)


@kernel("select")
def _select(cond, a, b, **_):
    return torch.where(_t(cond).to(torch.bool), _t(a), _t(b))


@kernel("band_part")
def _band_part(x, lower=-1, upper=-1, **_):
    # Keeps x[..., i, j] with i - j <= lower and j - i <= upper (negative: no bound).
    x = _t(x)
    rows, cols = x.shape[-2], x.shape[-1]
    i = torch.arange(rows).unsqueeze(1)
    j = torch.arange(cols).unsqueeze(0)
    keep = torch.ones(rows, cols, dtype=torch.bool)
    if int(lower) >= 0:
        keep &= i - j <= int(lower)
    if int(upper) >= 0:
        keep &= j - i <= int(upper)
    return torch.where(keep, x, torch.zeros((), dtype=x.dtype))


# -- reductions -----------------------------------------------------------------------


def _reduce(fn: Callable[..., Any]) -> Callable[..., Any]:
    def run(x, axes=None, keep_dims=False, **_):
        axes = _axes(axes, x.dim())
        if not axes:
            return x
        return fn(x, axes, bool(keep_dims))

    return run


KERNELS["reduce_sum"] = _reduce(lambda x, a, k: torch.sum(x, a, k))
KERNELS["reduce_mean"] = _reduce(lambda x, a, k: torch.mean(x.to(torch.float32), a, k))
KERNELS["reduce_max"] = _reduce(lambda x, a, k: torch.amax(x, a, k))
KERNELS["reduce_min"] = _reduce(lambda x, a, k: torch.amin(x, a, k))
KERNELS["reduce_log_sum_exp"] = _reduce(lambda x, a, k: torch.logsumexp(x, a, k))
KERNELS["reduce_log_sum"] = _reduce(lambda x, a, k: torch.log(torch.sum(x, a, k)))
KERNELS["reduce_sum_square"] = _reduce(lambda x, a, k: torch.sum(x * x, a, k))
KERNELS["reduce_l1_norm"] = _reduce(lambda x, a, k: torch.sum(x.abs(), a, k))
KERNELS["reduce_l2_norm"] = _reduce(lambda x, a, k: torch.sqrt(torch.sum(x * x, a, k)))


def _prod(x, axes, keep):
    for a in sorted(axes, reverse=True):
        x = torch.prod(x, a, keepdim=keep)
    return x


KERNELS["reduce_prod"] = _reduce(_prod)


@kernel("reduce_argmax")
def _argmax(x, axis=-1, keep_dims=False, **_):
    return torch.argmax(x, int(axis), bool(keep_dims))


@kernel("reduce_argmin")
def _argmin(x, axis=-1, keep_dims=False, **_):
    return torch.argmin(x, int(axis), bool(keep_dims))


# -- linear algebra and convolution ---------------------------------------------------


@kernel("matmul")
def _matmul(x, y, transpose_x=False, transpose_y=False, **_):
    x, y = _t(x), _t(y)
    if transpose_x:
        x = x.transpose(-1, -2)
    if transpose_y:
        y = y.transpose(-1, -2)
    return torch.matmul(x, y)


@kernel("linear")
def _linear(x, weight, bias=None, **_):
    return F.linear(x, weight, bias)


@kernel("einsum")
def _einsum(values, equation, **_):
    return torch.einsum(equation, *values)


def _explicit_pads(pad_type, pad, in_sizes, kernel, strides, dilations):
    """(before, after) per spatial dim, for MIL's pad_type / pad semantics."""
    n = len(in_sizes)
    if pad_type == "custom":
        pad = _list(pad) or [0] * (2 * n)
        return [(int(pad[2 * i]), int(pad[2 * i + 1])) for i in range(n)]
    if pad_type == "valid":
        return [(0, 0)] * n
    pads = []
    for size, k, s, d in zip(in_sizes, kernel, strides, dilations, strict=True):
        out = math.ceil(size / s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        small = total // 2
        pads.append((small, total - small) if pad_type == "same" else (total - small, small))
    return pads


def _pad_spatial(x, pads, value=0.0):
    flat = []
    for before, after in reversed(pads):
        flat += [before, after]
    if not any(flat):
        return x
    return F.pad(x, flat, value=value)


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@kernel("conv")
def _conv(
    x, weight, bias=None, strides=None, pad_type="valid", pad=None, dilations=None, groups=1, **_
):
    n = weight.dim() - 2
    strides = _list(strides) or [1] * n
    dilations = _list(dilations) or [1] * n
    pads = _explicit_pads(pad_type, pad, x.shape[2:], weight.shape[2:], strides, dilations)
    if all(before == after for before, after in pads):
        # Symmetric padding inside the convolution: no padded copy of the activations.
        return _CONV[n](x, weight, bias, strides, [b for b, _ in pads], dilations, int(groups))
    return _CONV[n](_pad_spatial(x, pads), weight, bias, strides, 0, dilations, int(groups))


@kernel("conv_transpose")
def _conv_transpose(
    x,
    weight,
    bias=None,
    pad=None,
    output_shape=None,
    pad_type="valid",
    strides=None,
    dilations=None,
    groups=1,
    **_,
):
    n = weight.dim() - 2
    strides = _list(strides) or [1] * n
    dilations = _list(dilations) or [1] * n
    y = _CONV_T[n](x, weight, bias, strides, 0, 0, int(groups), dilations)
    full = y.shape[2:]
    if pad_type == "custom":
        p = _list(pad) or [0] * (2 * n)
        pads = [(int(p[2 * i]), int(p[2 * i + 1])) for i in range(n)]
    elif pad_type == "same":
        # "same": output is input * stride; crop the excess evenly, extra at the end.
        pads = []
        for i in range(n):
            excess = full[i] - x.shape[2 + i] * strides[i]
            pads.append((excess // 2, excess - excess // 2))
    else:
        pads = [(0, 0)] * n
    out_sizes = [full[i] - pads[i][0] - pads[i][1] for i in range(n)]
    if output_shape is not None:
        # An explicit output shape keeps rows past the symmetric crop (output_padding).
        out_sizes = [int(s) for s in _list(output_shape)[-n:]]
    index = [slice(None), slice(None)]
    for i in range(n):
        start = pads[i][0]
        stop = start + out_sizes[i]
        if stop > full[i]:
            y = F.pad(y, [0, 0] * (n - 1 - i) + [0, stop - full[i]])
        index.append(slice(start, stop))
    return y[tuple(index)]


# -- pooling --------------------------------------------------------------------------


def _pool_window(x, kernel_sizes, strides, pad_type, pad):
    """(kernel, strides, explicit pads) of a pooling op."""
    k = [int(v) for v in _list(kernel_sizes)]
    s = [int(v) for v in _list(strides)] or [1] * len(k)
    return k, s, _explicit_pads(pad_type, pad, x.shape[-len(k) :], k, s, [1] * len(k))


@kernel("max_pool")
def _max_pool(x, kernel_sizes, strides=None, pad_type="valid", pad=None, ceil_mode=False, **_):
    k, s, pads = _pool_window(x, kernel_sizes, strides, pad_type, pad)
    fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[len(k)]
    if all(b == a and 2 * b <= kk for (b, a), kk in zip(pads, k, strict=True)):
        return fn(x, k, s, [b for b, _a in pads], ceil_mode=bool(ceil_mode))
    return fn(_pad_spatial(x, pads, float("-inf")), k, s, 0, ceil_mode=bool(ceil_mode))


@kernel("avg_pool")
def _avg_pool(
    x,
    kernel_sizes,
    strides=None,
    pad_type="valid",
    pad=None,
    exclude_padding_from_average=False,
    ceil_mode=False,
    **_,
):
    k, s, pads = _pool_window(x, kernel_sizes, strides, pad_type, pad)
    fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[len(k)]
    include = not bool(exclude_padding_from_average)
    if all(b == a and 2 * b <= kk for (b, a), kk in zip(pads, k, strict=True)):
        return fn(x, k, s, [b for b, _a in pads], bool(ceil_mode), include)
    summed = fn(_pad_spatial(x, pads), k, s, 0, bool(ceil_mode), True)
    if include:
        return summed
    ones = torch.ones((1, 1, *x.shape[-len(k) :]), dtype=x.dtype)
    count = fn(_pad_spatial(ones, pads), k, s, 0, bool(ceil_mode), True)
    return summed / count


@kernel("l2_pool")
def _l2_pool(x, kernel_sizes, strides=None, pad_type="valid", pad=None, **_):
    k, s, pads = _pool_window(x, kernel_sizes, strides, pad_type, pad)
    fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[len(k)]
    area = math.prod(k)
    return torch.sqrt(fn(_pad_spatial(x * x, pads), k, s, 0) * area)


# -- normalisation --------------------------------------------------------------------


def _channel(v: torch.Tensor | None, rank: int) -> torch.Tensor | None:
    return None if v is None else v.reshape([1, -1] + [1] * (rank - 2))


@kernel("batch_norm")
def _batch_norm(x, mean, variance, gamma=None, beta=None, epsilon=1e-5, **_):
    return F.batch_norm(x, mean, variance, gamma, beta, False, 0.0, _float(epsilon))


@kernel("instance_norm")
def _instance_norm(x, gamma=None, beta=None, epsilon=1e-5, **_):
    r = x.dim()
    axes = list(range(2, r))
    mean = x.mean(axes, keepdim=True)
    var = x.var(axes, unbiased=False, keepdim=True)
    y = (x - mean) / torch.sqrt(var + _float(epsilon))
    if gamma is not None:
        y = y * _channel(gamma, r)
    if beta is not None:
        y = y + _channel(beta, r)
    return y


@kernel("layer_norm")
def _layer_norm(x, axes=None, gamma=None, beta=None, epsilon=1e-5, **_):
    axes = _axes(axes, x.dim())
    mean = x.mean(axes, keepdim=True)
    var = ((x - mean) ** 2).mean(axes, keepdim=True)
    y = (x - mean) / torch.sqrt(var + _float(epsilon))
    # gamma/beta have the shape of the normalised axes; line them up with x.
    shape = [x.shape[i] if i in axes else 1 for i in range(x.dim())]
    if gamma is not None:
        y = y * gamma.reshape(shape)
    if beta is not None:
        y = y + beta.reshape(shape)
    return y


@kernel("l2_norm")
def _l2_norm(x, axes=None, epsilon=1e-6, **_):
    axes = _axes(axes, x.dim())
    norm = torch.sqrt(torch.clamp(torch.sum(x * x, axes, keepdim=True), min=_float(epsilon)))
    return x / norm


@kernel("local_response_norm")
def _lrn(x, size, alpha=1e-4, beta=0.75, k=1.0, **_):
    return F.local_response_norm(x, int(size), _float(alpha), _float(beta), _float(k))


# -- data movement --------------------------------------------------------------------


@kernel("reshape")
def _reshape(x, shape, **_):
    shape = [int(v) for v in _list(shape)]
    shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return torch.reshape(x, shape)


@kernel("transpose")
def _transpose(x, perm, **_):
    return x.permute([int(p) for p in _list(perm)])


@kernel("squeeze")
def _squeeze(x, axes=None, **_):
    if axes is None:
        return torch.squeeze(x)
    return torch.squeeze(x, tuple(a % x.dim() for a in _list(axes)))


@kernel("expand_dims")
def _expand_dims(x, axes, **_):
    rank = x.dim() + len(_list(axes))
    for a in sorted(a % rank for a in _list(axes)):
        x = x.unsqueeze(a)
    return x


@kernel("concat")
def _concat(values, axis, interleave=False, **_):
    values = [_t(v) for v in values]
    if interleave:
        stacked = torch.stack(values, int(axis) + 1 if int(axis) >= 0 else int(axis))
        return stacked.flatten(int(axis), int(axis) + 1 if int(axis) >= 0 else None)
    return torch.cat(values, int(axis))


@kernel("stack")
def _stack(values, axis=0, **_):
    return torch.stack([_t(v) for v in values], int(axis))


@kernel("split")
def _split(x, num_splits=None, split_sizes=None, axis=0, **_):
    axis = int(axis)
    if split_sizes is not None:
        return tuple(torch.split(x, [int(v) for v in _list(split_sizes)], axis))
    return tuple(torch.chunk(x, int(num_splits), axis))


def _slice_items(
    shape: torch.Size, begin, end, stride, begin_mask, end_mask, squeeze_mask
) -> tuple[list[Any], list[int]]:
    """slice_by_index's selection as a torch index (ints and forward slices) plus the
    dimensions of the result to reverse.

    torch has no negative steps: a negative-stride slice picks the same positions as a
    forward slice from its last pick to its first, read backwards.
    """
    rank = len(shape)
    begin, end = _list(begin), _list(end)
    stride = _list(stride) or [1] * rank
    begin_mask = _list(begin_mask) or [False] * rank
    end_mask = _list(end_mask) or [False] * rank
    squeeze_mask = _list(squeeze_mask) or [False] * rank
    index: list[Any] = []
    reverse: list[int] = []
    for i in range(rank):
        if squeeze_mask[i]:
            index.append(int(begin[i]))
            continue
        step = int(stride[i])
        start = None if begin_mask[i] else int(begin[i])
        stop = None if end_mask[i] else int(end[i])
        if step > 0:
            index.append(slice(start, stop, step))
            continue
        first, last, step = slice(start, stop, step).indices(shape[i])
        picks = range(first, last, step)
        if picks:
            index.append(slice(picks[-1], picks[0] + 1, -step))
            reverse.append(sum(1 for item in index if isinstance(item, slice)) - 1)
        else:
            index.append(slice(0, 0))
    return index, reverse


@kernel("slice_by_index")
def _slice_by_index(
    x, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None, **_
):
    index, reverse = _slice_items(x.shape, begin, end, stride, begin_mask, end_mask, squeeze_mask)
    out = x[tuple(index)]
    return torch.flip(out, reverse) if reverse else out


@kernel("slice_update")
def _slice_update(
    x, update, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None, **_
):
    """x with the slice slice_by_index would select replaced by ``update``."""
    index, reverse = _slice_items(x.shape, begin, end, stride, begin_mask, end_mask, squeeze_mask)
    out = x.clone()
    target = out[tuple(index)]
    update = _t(update).to(out.dtype)
    if update.numel() != target.numel():
        raise ValueError(
            f"slice_update: the slice has shape {list(target.shape)}, the update "
            f"{list(update.shape)}"
        )
    # The same values in the slice's shape (squeezed dimensions are size 1 or absent).
    update = update.reshape(target.shape)
    target.copy_(torch.flip(update, reverse) if reverse else update)
    return out


@kernel("slice_by_size")
def _slice_by_size(x, begin, size, **_):
    index = []
    for b, s in zip(_list(begin), _list(size), strict=True):
        b, s = int(b), int(s)
        index.append(slice(b, None if s == -1 else b + s))
    return x[tuple(index)]


@kernel("tile")
def _tile(x, reps, **_):
    return x.repeat([int(r) for r in _list(reps)])


@kernel("pad")
def _pad(x, pad, mode="constant", constant_val=0.0, **_):
    pad = [int(p) for p in _list(pad)]
    pairs = [(pad[i], pad[i + 1]) for i in range(0, len(pad), 2)]
    flat = []
    for before, after in reversed(pairs):
        flat += [before, after]
    if mode == "constant":
        return F.pad(x, flat, "constant", _float(constant_val))
    # torch's reflect/replicate want a batch dim in front of the padded dims.
    n = sum(1 for p in pairs if any(p))
    flat = flat[: 2 * n] if n else flat[:2]
    lead = x.dim() - max(n, 1)
    shaped = x.reshape(1, -1, *x.shape[lead:]) if lead >= 1 else x.reshape(1, 1, *x.shape)
    y = F.pad(shaped, flat, {"reflect": "reflect", "replicate": "replicate"}[mode])
    return y.reshape(*x.shape[:lead], *y.shape[-max(n, 1) :])


@kernel("gather")
def _gather(x, indices, axis=0, batch_dims=0, **_):
    x, idx = _t(x), _t(indices).to(torch.int64)
    axis = int(axis) % x.dim()
    if int(batch_dims) != 0:
        raise UnknownMILOp(
            "gather with batch_dims != 0 is not implemented in the reference executor"
        )
    idx = torch.where(idx < 0, idx + x.shape[axis], idx)
    out = x.index_select(axis, idx.reshape(-1))
    # A list, not unpacked sizes: a scalar index of a vector (a shape's one dimension)
    # gives a rank-0 result, and reshape() needs an argument for that.
    return out.reshape([*x.shape[:axis], *idx.shape, *x.shape[axis + 1 :]])


@kernel("gather_along_axis")
def _gather_along_axis(x, indices, axis=0, **_):
    idx = _t(indices).to(torch.int64)
    axis = int(axis) % x.dim()
    idx = torch.where(idx < 0, idx + x.shape[axis], idx)
    return torch.gather(x, axis, idx)


@kernel("shape")
def _shape(x, **_):
    return torch.tensor(list(x.shape), dtype=torch.int64)


@kernel("fill")
def _fill(shape, value=0.0, **_):
    return torch.full([int(s) for s in _list(shape)], _float(value))


@kernel("range_1d")
def _range_1d(end, start, step, **_):
    bounds = [_t(v) for v in (start, end, step)]
    if any(b.is_floating_point() for b in bounds):
        return torch.arange(*(_float(b) for b in bounds))
    # Integer ranges (positions from a run-time length) stay exact whatever their size.
    return torch.arange(*(int(b.item()) for b in bounds))


@kernel("flatten2d")
def _flatten2d(x, axis=1, **_):
    axis = int(axis) % x.dim()
    return x.reshape(math.prod(x.shape[:axis]), -1)


@kernel("upsample_nearest_neighbor")
def _upsample_nearest(x, scale_factor_height=1, scale_factor_width=1, **_):
    return F.interpolate(
        x, scale_factor=(_float(scale_factor_height), _float(scale_factor_width)), mode="nearest"
    )


@kernel("upsample_bilinear")
def _upsample_bilinear(x, scale_factor_height=1, scale_factor_width=1, align_corners=False, **_):
    return F.interpolate(
        x,
        scale_factor=(_float(scale_factor_height), _float(scale_factor_width)),
        mode="bilinear",
        align_corners=bool(align_corners),
    )


# -- coverage part B: splitting, indexing, resizing, sorting, scans -------------------


@kernel("reverse")
def _reverse(x, axes=None, **_):
    axes = _axes(axes, x.dim())
    return torch.flip(x, axes) if axes else x


@kernel("gather_nd")
def _gather_nd(x, indices, batch_dims=0, **_):
    if int(batch_dims) != 0:
        raise UnknownMILOp(
            "gather_nd with batch_dims != 0 is not implemented in the reference executor"
        )
    x, idx = _t(x), _t(indices).to(torch.int64)
    k = idx.shape[-1]
    idx = torch.where(idx < 0, idx + torch.tensor(x.shape[:k]), idx)
    return x[tuple(idx[..., i] for i in range(k))]


@kernel("scatter_nd")
def _scatter_nd(data, indices, updates, mode="add", **_):
    data, idx = _t(data), _t(indices).to(torch.int64)
    k = idx.shape[-1]
    idx = torch.where(idx < 0, idx + torch.tensor(data.shape[:k]), idx)
    # Linear positions in data viewed as [prod(D[:k]), *D[k:]]; updates flattened to match.
    strides = torch.tensor([math.prod(data.shape[i + 1 : k]) for i in range(k)])
    flat = (idx * strides).sum(-1).reshape(-1)
    out = data.reshape(-1, *data.shape[k:]).clone()
    upd = _t(updates).to(out.dtype).reshape(-1, *data.shape[k:])
    if mode == "update":
        out[flat] = upd
    else:
        reduce = {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}.get(mode)
        if reduce is None:
            if mode == "sub":
                out.index_add_(0, flat, -upd)
            elif mode == "div":
                out.index_reduce_(0, flat, 1.0 / upd, "prod")
            else:
                raise UnknownMILOp(f"scatter_nd mode {mode!r} is unknown")
        elif reduce == "sum":
            out.index_add_(0, flat, upd)
        else:
            out.index_reduce_(0, flat, upd, reduce)
    return out.reshape(data.shape)


def _scatter_updates(out: torch.Tensor, axis: int, idx: torch.Tensor, upd, mode: str, op: str):
    """out (a copy of data) with ``upd`` combined in at ``idx`` along ``axis`` by ``mode``;
    ``idx`` has the shape of ``upd``, as torch's scatter wants. Where ``idx`` repeats a
    position, "update" keeps one of the updates (Core ML does not say which)."""
    upd = _t(upd).to(out.dtype)
    idx = torch.where(idx < 0, idx + out.shape[axis], idx)
    if mode == "update":
        return out.scatter_(axis, idx, upd)
    if mode == "add":
        return out.scatter_add_(axis, idx, upd)
    if mode == "sub":
        return out.scatter_add_(axis, idx, -upd)
    reduce = {"mul": "prod", "div": "prod", "max": "amax", "min": "amin"}.get(mode)
    if reduce is None:
        raise UnknownMILOp(f"{op} mode {mode!r} is unknown")
    return out.scatter_reduce_(axis, idx, 1.0 / upd if mode == "div" else upd, reduce)


@kernel("scatter")
def _scatter(data, indices, updates, axis=0, mode="add", **_):
    """Whole slices of ``updates`` (one per index) into ``data`` at ``indices`` on ``axis``."""
    data = _t(data)
    axis = int(axis) % data.dim()
    idx = _t(indices).to(torch.int64).reshape(-1)
    upd = _t(updates)
    # Every element of update slice i goes to position indices[i] on the axis.
    shape = [1] * data.dim()
    shape[axis] = idx.numel()
    idx = idx.reshape(shape).expand(upd.shape)
    return _scatter_updates(data.clone(), axis, idx, upd, str(mode), "scatter")


@kernel("scatter_along_axis")
def _scatter_along_axis(data, indices, updates, axis=0, mode="add", **_):
    data = _t(data)
    axis = int(axis) % data.dim()
    idx = _t(indices).to(torch.int64)
    return _scatter_updates(data.clone(), axis, idx, updates, str(mode), "scatter_along_axis")


# -- states (iOS18): the executor binds each state input to a runtime.state.StateSlot --


@kernel("read_state")
def _read_state(input, **_):
    return input.read()


@kernel("coreml_update_state")
def _coreml_update_state(state, value, **_):
    state.write(value)
    return value


def _resize_grid(n_in: int, n_out: int, mode: str) -> torch.Tensor:
    """Source coordinates of resize_bilinear's sampling modes (the MIL spec's formulas)."""
    i = torch.arange(n_out, dtype=torch.float64)
    if mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        if n_out == 1:
            grid = torch.tensor([0.0 if mode == "STRICT_ALIGN_CORNERS" else (n_in - 1) / 2])
        else:
            grid = i * ((n_in - 1) / (n_out - 1))
    elif mode == "UNALIGN_CORNERS":
        spacing = n_in / n_out
        grid = i * spacing + 0.5 * spacing - 0.5
    elif mode == "OFFSET_CORNERS":
        delta = max(1, n_in - 1) / n_out
        grid = 0.5 * delta + i * delta
    elif mode == "DEFAULT":
        grid = i * ((n_in - n_in / n_out) / (n_out - 1)) if n_out > 1 else torch.zeros(1)
    else:
        raise UnknownMILOp(f"resize_bilinear sampling mode {mode!r} is unknown")
    return grid.clamp(0, n_in - 1)


def _lerp_axis(x: torch.Tensor, grid: torch.Tensor, axis: int) -> torch.Tensor:
    lo = grid.floor().to(torch.int64)
    hi = torch.clamp(lo + 1, max=x.shape[axis] - 1)
    frac = (grid - lo).to(x.dtype)
    shape = [1] * x.dim()
    shape[axis] = -1
    frac = frac.reshape(shape)
    return x.index_select(axis, lo) * (1 - frac) + x.index_select(axis, hi) * frac


@kernel("resize_bilinear")
def _resize_bilinear(x, target_size_height=1, target_size_width=1, sampling_mode="DEFAULT", **_):
    h, w = x.shape[-2], x.shape[-1]
    y = _lerp_axis(x, _resize_grid(h, int(target_size_height), sampling_mode), x.dim() - 2)
    return _lerp_axis(y, _resize_grid(w, int(target_size_width), sampling_mode), x.dim() - 1)


# resample's padding modes as torch's grid_sample pads: the padding mode, and which grid
# convention (align_corners) reflects where the MIL mode does. Constant and border pad by
# pixel bounds in either convention (None: keep the op's own).
_RESAMPLE_PADDING = {
    "constant": ("zeros", None),
    "border": ("border", None),
    "reflection": ("reflection", True),  # about the corner pixels' centres: edge not repeated
    "symmetric": ("reflection", False),  # about the image's edges: edge repeated
}


@kernel("resample")
def _resample(
    x,
    coordinates,
    sampling_mode="bilinear",
    padding_mode="constant",
    padding_value=0.0,
    coordinates_mode="normalized_minus_one_to_one",
    align_corners=False,
    **_,
):
    """Sample ``x`` (B, C, H, W) at ``coordinates`` (B, Ho, Wo, 2), (x, y) order.

    The coordinates become pixel positions by the op's ``coordinates_mode`` and
    ``align_corners``, then torch's grid (in [-1, 1]) in the convention whose padding is
    the op's; a grid already in that convention is used as it is, so nothing is rounded.
    """
    if sampling_mode not in ("bilinear", "nearest"):
        raise UnknownMILOp(f"resample sampling mode {sampling_mode!r} is unknown")
    if padding_mode not in _RESAMPLE_PADDING:
        raise UnknownMILOp(f"resample padding mode {padding_mode!r} is unknown")
    torch_padding, convention = _RESAMPLE_PADDING[padding_mode]
    align_corners = bool(align_corners)
    coords = _t(coordinates).to(torch.float32)
    if coordinates_mode == "normalized_minus_one_to_one" and convention in (None, align_corners):
        grid, convention = coords, align_corners
    else:
        h, w = x.shape[-2], x.shape[-1]
        sizes = torch.tensor([w, h], dtype=torch.float32)
        if coordinates_mode == "unnormalized":
            pixels = coords
        elif coordinates_mode == "normalized_minus_one_to_one":
            pixels = (
                (coords + 1) / 2 * (sizes - 1) if align_corners else ((coords + 1) * sizes - 1) / 2
            )
        elif coordinates_mode == "normalized_zero_to_one":
            pixels = coords * (sizes - 1) if align_corners else coords * sizes - 0.5
        else:
            raise UnknownMILOp(f"resample coordinates mode {coordinates_mode!r} is unknown")
        convention = bool(convention)
        if convention:
            # A one-pixel axis maps every position to its pixel: grid 0.
            grid = torch.where(sizes > 1, 2 * pixels / (sizes - 1).clamp(min=1) - 1, 0.0)
        else:
            grid = (2 * pixels + 1) / sizes - 1
    value = _float(padding_value) if padding_mode == "constant" else 0.0
    # Zeros padding around x - value is padding with value around x.
    out = F.grid_sample(
        x.to(torch.float32) - value,
        grid,
        mode=sampling_mode,
        padding_mode=torch_padding,
        align_corners=convention,
    )
    return out + value


@kernel("pixel_shuffle")
def _pixel_shuffle(x, upscale_factor, **_):
    return F.pixel_shuffle(x, int(upscale_factor))


@kernel("pixel_unshuffle")
def _pixel_unshuffle(x, downscale_factor, **_):
    return F.pixel_unshuffle(x, int(downscale_factor))


@kernel("cumsum")
def _cumsum(x, axis=0, exclusive=False, reverse=False, **_):
    axis = int(axis)
    if bool(reverse):
        x = torch.flip(x, [axis])
    y = torch.cumsum(x, axis)
    if bool(exclusive):
        y = y - x
    if bool(reverse):
        y = torch.flip(y, [axis])
    return y.to(x.dtype)


@kernel("topk")
def _topk(x, k=1, axis=-1, ascending=False, sort=True, return_indices=True, **_):
    values, indices = torch.topk(x, int(k), int(axis), largest=not bool(ascending), sorted=True)
    return (values, indices) if bool(return_indices) else values


@kernel("argsort")
def _argsort(x, axis=-1, ascending=False, **_):
    return torch.argsort(x, dim=int(axis), descending=not bool(ascending), stable=True)


# -- end of coverage part B -----------------------------------------------------------


# -- recurrent layers: lstm, gru, rnn ---------------------------------------------------
# As the MIL spec defines them (mil/ops/defs/iOS15/recurrent.py, iOS18's gru), with the
# details its device-run numpy references pin down: a "reverse" run emits its steps in
# the order it processes them (last time step first), a "bidirectional" lstm aligns the
# backward half with the input's time steps; lstm's clip bounds the cell state; gru
# before iOS18 resets before the hidden product, W_ho (r * h).


def _hard_sigmoid(v: torch.Tensor) -> torch.Tensor:
    return torch.clamp(0.2 * v + 0.5, 0.0, 1.0)


# Each with its default parameters: scaled_tanh is tanh, linear the identity.
_RECURRENT_ACTIVATIONS = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "scaled_tanh": torch.tanh,
    "relu": torch.relu,
    "linear": lambda v: v,
    "hard_sigmoid": _hard_sigmoid,
    "sigmoid_hard": _hard_sigmoid,
}


def _activation(name: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    fn = _RECURRENT_ACTIVATIONS.get(str(name).lower())
    if fn is None:
        raise ValueError(f"unknown recurrent activation {name!r}")
    return fn


def _scan(x: torch.Tensor, state: tuple, step: Callable, reverse: bool) -> tuple:
    """Run ``step`` over the time steps of x (seq, batch, in); outputs in processing order."""
    order = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
    outputs = []
    for t in order:
        state = step(x[t], state)
        outputs.append(state[0])
    return torch.stack(outputs), state


def _sequence(outputs: torch.Tensor, output_sequence: Any) -> torch.Tensor:
    return outputs if bool(output_sequence) else outputs[-1:]


def _zeros_or(v: Any, n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros(n, dtype=like.dtype) if v is None else _t(v).to(like.dtype)


@kernel("rnn")
def _rnn(
    x,
    initial_h,
    weight_ih,
    weight_hh,
    bias=None,
    direction="forward",
    output_sequence=False,
    activation="tanh",
    **_,
):
    act = _activation(activation)
    b = _zeros_or(bias, weight_ih.shape[0], x)

    def step(xt, state):
        (h,) = state
        return (act(xt @ weight_ih.T + h @ weight_hh.T + b),)

    if direction not in ("forward", "reverse"):
        raise ValueError(f"rnn direction {direction!r}")
    outputs, (h,) = _scan(x, (initial_h,), step, direction == "reverse")
    return _sequence(outputs, output_sequence), h


@kernel("gru")
def _gru(
    x,
    initial_h,
    weight_ih,
    weight_hh,
    bias=None,
    direction="forward",
    output_sequence=False,
    recurrent_activation="sigmoid",
    activation="tanh",
    reset_after=False,
    input_bias=None,
    **_,
):
    gate, act = _activation(recurrent_activation), _activation(activation)
    hidden = weight_hh.shape[1]
    # Gate blocks: r (reset), o (output, torch's n), z (update).
    w_ir, w_io, w_iz = weight_ih.split(hidden)
    w_hr, w_ho, w_hz = weight_hh.split(hidden)
    b_ir, b_io, b_iz = _zeros_or(input_bias, 3 * hidden, x).split(hidden)
    b_hr, b_ho, b_hz = _zeros_or(bias, 3 * hidden, x).split(hidden)
    after = bool(reset_after)

    def step(xt, state):
        (h,) = state
        r = gate(xt @ w_ir.T + b_ir + h @ w_hr.T + b_hr)
        z = gate(xt @ w_iz.T + b_iz + h @ w_hz.T + b_hz)
        if after:
            o = act(xt @ w_io.T + b_io + r * (h @ w_ho.T + b_ho))
        else:
            o = act(xt @ w_io.T + b_io + (r * h) @ w_ho.T + b_ho)
        return ((1 - z) * o + z * h,)

    if direction not in ("forward", "reverse"):
        raise ValueError(f"gru direction {direction!r}")
    outputs, (h,) = _scan(x, (initial_h,), step, direction == "reverse")
    return _sequence(outputs, output_sequence), h


def _lstm_step(weight_ih, weight_hh, bias, peephole, gate, cell_act, act, clip) -> Callable:
    hidden = weight_hh.shape[1]
    p_i, p_f, p_o = peephole.split(hidden) if peephole is not None else (None, None, None)

    def step(xt, state):
        h, c = state
        pre = xt @ weight_ih.T + h @ weight_hh.T
        if bias is not None:
            pre = pre + bias
        # Gate blocks: input, forget, output, cell.
        a_i, a_f, a_o, a_z = pre.split(hidden, dim=-1)
        if p_i is not None:
            a_i, a_f = a_i + c * p_i, a_f + c * p_f
        c = gate(a_f) * c + gate(a_i) * cell_act(a_z)
        if clip is not None:
            c = torch.clamp(c, -clip, clip)
        if p_o is not None:
            a_o = a_o + c * p_o
        return gate(a_o) * act(c), c

    return step


@kernel("lstm")
def _lstm(
    x,
    initial_h,
    initial_c,
    weight_ih,
    weight_hh,
    bias=None,
    peephole=None,
    weight_ih_back=None,
    weight_hh_back=None,
    bias_back=None,
    peephole_back=None,
    direction="forward",
    output_sequence=False,
    recurrent_activation="sigmoid",
    cell_activation="tanh",
    activation="tanh",
    clip=None,
    **_,
):
    fns = [_activation(a) for a in (recurrent_activation, cell_activation, activation)]
    bound = None if clip is None else _float(clip)
    forward = _lstm_step(weight_ih, weight_hh, bias, peephole, *fns, bound)
    if direction in ("forward", "reverse"):
        outputs, (h, c) = _scan(x, (initial_h, initial_c), forward, direction == "reverse")
        return _sequence(outputs, output_sequence), h, c
    if direction != "bidirectional":
        raise ValueError(f"lstm direction {direction!r}")
    if weight_ih_back is None or weight_hh_back is None:
        raise ValueError("a bidirectional lstm needs weight_ih_back and weight_hh_back")
    backward = _lstm_step(weight_ih_back, weight_hh_back, bias_back, peephole_back, *fns, bound)
    hidden = weight_hh.shape[1]
    h_f, h_b = initial_h.split(hidden, dim=-1)
    c_f, c_b = initial_c.split(hidden, dim=-1)
    out_f, (h_f, c_f) = _scan(x, (h_f, c_f), forward, False)
    out_b, (h_b, c_b) = _scan(x, (h_b, c_b), backward, True)
    if bool(output_sequence):
        # The backward half back in time order: step t holds what it saw from t on.
        outputs = torch.cat([out_f, torch.flip(out_b, [0])], dim=-1)
    else:
        outputs = torch.cat([out_f[-1:], out_b[-1:]], dim=-1)
    return outputs, torch.cat([h_f, h_b], dim=-1), torch.cat([c_f, c_b], dim=-1)


# -- end of recurrent layers ------------------------------------------------------------


# -- attention (iOS18) ------------------------------------------------------------------


@kernel("scaled_dot_product_attention")
def _scaled_dot_product_attention(query, key, value, attn_mask=None, **_):
    # MIL's op: softmax(Q K^T / sqrt(E) + mask) V, a bool mask marking what takes part.
    return F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask)
