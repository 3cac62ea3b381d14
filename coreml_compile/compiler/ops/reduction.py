"""Reductions over several axes, with keepdim."""

from __future__ import annotations

from typing import Any

import torch

from coreml_compile.compiler import dtypes, symbolic
from coreml_compile.compiler.ops import REQUIRED, Op
from coreml_compile.compiler.ops._helpers import normalize_axes


def _reduction(name: str, torch_fn, mil_op: str) -> type[Op]:
    def kernel(x, *, dim, keepdim):
        axes = normalize_axes(dim, x.dim())
        return torch_fn(x, axes, keepdim) if axes else x

    def lower(c, x, *, dim, keepdim):
        axes = normalize_axes(dim, x.rank)
        if not axes:  # a scalar: nothing to reduce
            return c.mb.identity(x=x, name=c.name)
        if mil_op in ("reduce_sum", "reduce_mean"):
            (x,) = c.promote(x)  # a sum of bools counts them, in int64 for torch
        if c.mil_dtype_of(x) == "bool" and mil_op in ("reduce_max", "reduce_min"):
            # MIL reduces no bools: the max (min) of 0/1 is the any (all) of the bools.
            x = c.mb.cast(x=x, dtype="int32", name=c.name + "_int")
            found = getattr(c.mb, mil_op)(x=x, axes=axes, keep_dims=keepdim, name=c.name + "_r")
            return c.mb.cast(x=found, dtype="bool", name=c.name)
        return getattr(c.mb, mil_op)(x=x, axes=axes, keep_dims=keepdim, name=c.name)

    return type(
        name.title(),
        (Op,),
        {
            "__doc__": f"{name} over ``dim`` (all axes when empty), keeping them if ``keepdim``",
            "name": name,
            "inputs": ("x",),
            "attrs": {"dim": None, "keepdim": False},
            "kernel": kernel,
            "lower": lower,
            "dynamic": True,
        },
    )


_reduction("sum", torch.sum, "reduce_sum")
_reduction("mean", torch.mean, "reduce_mean")
_reduction("amax", torch.amax, "reduce_max")
_reduction("amin", torch.amin, "reduce_min")


# -- coverage part B: scans, arg-reductions, sorting, norms, products, variance ----------


class Cumsum(Op):
    """Inclusive running sum along ``dim``."""

    name = "cumsum"
    dynamic = True
    inputs = ("x",)
    attrs = {"dim": 0}

    def kernel(x, *, dim):
        return torch.cumsum(x, dim)

    def lower(c, x, *, dim):
        (x,) = c.promote(x)
        axis = dim % x.rank if x.rank else 0
        if x.rank == 0:
            return c.mb.identity(x=x, name=c.name)
        return c.mb.cumsum(x=x, axis=axis, name=c.name)


def _scan(c, x, axis: int, combine, identity: float) -> Any:
    """An inclusive scan along a static axis in log2(n) steps (Hillis-Steele): step k
    combines each entry with the one 2**k before it, the first 2**k with ``identity``.
    Exact for products with zeros and signs, unlike exp(cumsum(log x))."""
    n = x.shape[axis]
    y, shift, step = x, 1, 0
    while shift < n:
        pad = [0] * (2 * x.rank)
        pad[2 * axis] = shift
        padded = c.mb.pad(
            x=y,
            pad=pad,
            mode="constant",
            constant_val=c.scalar(identity, like=x),
            name=f"{c.name}_pad{step}",
        )
        end = [0] * x.rank
        end[axis] = n
        earlier = c.mb.slice_by_index(
            x=padded,
            begin=[0] * x.rank,
            end=end,
            begin_mask=[True] * x.rank,
            end_mask=[a != axis for a in range(x.rank)],
            name=f"{c.name}_before{step}",
        )
        last = shift * 2 >= n
        y = combine(y, earlier, c.name if last else f"{c.name}_step{step}")
        shift, step = shift * 2, step + 1
    return y if n > 1 else c.mb.identity(x=x, name=c.name)


def _scan_check(name: str):
    def check(node, generation):
        x = node.inputs[0].type
        if x.rank == 0:
            return f"{name} of a scalar"
        axis = node.attrs["dim"] % x.rank
        if not isinstance(x.shape[axis], int):
            return f"{name} along a dynamic dimension (its steps depend on the length)"
        if not dtypes.is_float(x.dtype):
            return f"{name} of a {x.dtype} tensor (Core ML pads floats only)"
        return None

    return check


class Cumprod(Op):
    """Inclusive running product along ``dim``."""

    name = "cumprod"
    dynamic = True
    inputs = ("x",)
    attrs = {"dim": 0}

    def kernel(x, *, dim):
        return torch.cumprod(x, dim)

    def lower(c, x, *, dim):
        def times(a, b, name):
            return c.mb.mul(x=a, y=b, name=name)

        return _scan(c, x, dim % x.rank, times, 1.0)

    check = _scan_check("cumprod")


class Logcumsumexp(Op):
    """log(cumsum(exp(x))) along ``dim``, as a scan of log-add-exp: each step adds the
    smaller term's exp(-|a - b|) to 1 under the log, so nothing overflows."""

    name = "logcumsumexp"
    dynamic = True
    inputs = ("x",)
    attrs = {"dim": 0}

    def kernel(x, *, dim):
        return torch.logcumsumexp(x, dim)

    def lower(c, x, *, dim):
        def log_add_exp(a, b, name):
            larger = c.mb.maximum(x=a, y=b, name=name + "_max")
            gap = c.mb.abs(x=c.mb.sub(x=a, y=b, name=name + "_diff"), name=name + "_gap")
            smaller = c.mb.exp(x=c.mb.mul(x=gap, y=c.scalar(-1.0, like=a)), name=name + "_exp")
            grown = c.mb.log(x=c.mb.add(x=smaller, y=c.scalar(1.0, like=a)), name=name + "_log")
            return c.mb.add(x=larger, y=grown, name=name)

        return _scan(c, x, dim % x.rank, log_add_exp, c.lowest(like=x))

    check = _scan_check("logcumsumexp")


def _arg_reduction(name: str, torch_fn, mil_op: str) -> type[Op]:
    def kernel(x, *, dim, keepdim):
        return torch_fn(x, dim, keepdim)

    def lower(c, x, *, dim, keepdim):
        if dim is None:
            flat = c.mb.reshape(x=x, shape=[-1], name=c.name + "_flat")
            if not keepdim:
                return getattr(c.mb, mil_op)(x=flat, axis=0, keep_dims=False, name=c.name)
            found = getattr(c.mb, mil_op)(x=flat, axis=0, keep_dims=True, name=c.name + "_arg")
            return c.mb.reshape(x=found, shape=[1] * x.rank, name=c.name)
        return getattr(c.mb, mil_op)(x=x, axis=dim % x.rank, keep_dims=keepdim, name=c.name)

    def check(node, generation):
        if node.inputs[0].type.rank == 0:
            return f"{name} of a scalar"
        if node.inputs[0].type.dtype == "bool":
            return f"{name} of a bool tensor"
        return None

    return type(
        name.title(),
        (Op,),
        {
            "__doc__": f"{name} along ``dim`` (of the flattened x when None), as int64",
            "name": name,
            "inputs": ("x",),
            "attrs": {"dim": None, "keepdim": False},
            "dynamic": True,
            "kernel": kernel,
            "lower": lower,
            "check": check,
        },
    )


_arg_reduction("argmax", torch.argmax, "reduce_argmax")
_arg_reduction("argmin", torch.argmin, "reduce_argmin")


def _reduction_with_indices(name: str, torch_fn, mil_op: str) -> type[Op]:
    """torch.max(x, dim) and torch.min(x, dim): the values and where they are. An
    unread index output costs nothing: Core ML drops the dead argmax."""

    def kernel(x, *, dim, keepdim):
        return tuple(torch_fn(x, dim, keepdim))

    def lower(c, x, *, dim, keepdim):
        axis = dim % x.rank
        values = getattr(c.mb, f"reduce_{mil_op}")(x=x, axes=[axis], keep_dims=keepdim, name=c.name)
        indices = getattr(c.mb, f"reduce_arg{mil_op}")(
            x=x, axis=axis, keep_dims=keepdim, name=c.name + "_index"
        )
        return values, indices

    def check(node, generation):
        x = node.inputs[0].type
        if x.rank == 0 or x.dtype == "bool":
            return f"{name} of a scalar or a bool tensor"
        return None

    return type(
        name.title().replace("_", ""),
        (Op,),
        {
            "__doc__": f"{mil_op} along ``dim`` and its index (torch.{mil_op} with a dim)",
            "name": name,
            "inputs": ("x",),
            "attrs": {"dim": REQUIRED, "keepdim": False},
            "num_outputs": 2,
            "dynamic": True,
            "kernel": kernel,
            "lower": lower,
            "check": check,
        },
    )


_reduction_with_indices("max_dim", torch.max, "max")
_reduction_with_indices("min_dim", torch.min, "min")


class Topk(Op):
    """The ``k`` largest (or smallest) entries along ``dim`` and their indices."""

    name = "topk"
    dynamic = True
    inputs = ("x",)
    attrs = {"k": REQUIRED, "dim": -1, "largest": True, "sorted": True}
    num_outputs = 2

    def kernel(x, *, k, dim, largest, sorted):
        return torch.topk(x, k, dim, largest, sorted)

    def lower(c, x, *, k, dim, largest, sorted):
        # Unsorted results may come in any order; Core ML's sorted order is one of them.
        values, indices = c.mb.topk(x=x, k=k, axis=dim % x.rank, ascending=not largest, name=c.name)
        return values, indices

    def check(node, generation):
        if node.inputs[0].type.rank == 0:
            return "topk of a scalar"
        if node.inputs[0].type.dtype == "bool":
            return "topk of a bool tensor"
        return None


class Kthvalue(Op):
    """The ``k``-th smallest entry along ``dim`` and its index; ``k`` None is torch's
    median (the lower of the two middle entries). The smallest k by Core ML's topk,
    then the last of them."""

    name = "kthvalue"
    inputs = ("x",)
    attrs = {"k": None, "dim": -1, "keepdim": False}
    num_outputs = 2

    def kernel(x, *, k, dim, keepdim):
        if k is None:
            return torch.median(x, dim, keepdim)
        return torch.kthvalue(x, k, dim, keepdim)

    def lower(c, x, *, k, dim, keepdim):
        axis = dim % x.rank
        if k is None:
            k = (x.shape[axis] - 1) // 2 + 1
        values, indices = c.mb.topk(x=x, k=k, axis=axis, ascending=True, name=c.name + "_smallest")
        begin = [0] * x.rank
        begin[axis] = k - 1
        whole = [a != axis for a in range(x.rank)]
        picked = []
        for tag, v in (("", values), ("_index", indices)):
            picked.append(
                c.mb.slice_by_index(
                    x=v,
                    begin=begin,
                    end=[0] * x.rank,
                    begin_mask=whole,
                    end_mask=[True] * x.rank,
                    squeeze_mask=[a == axis and not keepdim for a in range(x.rank)],
                    name=c.name + tag,
                )
            )
        return tuple(picked)

    def check(node, generation):
        x = node.inputs[0].type
        if x.rank == 0 or x.dtype == "bool":
            return "kthvalue or median of a scalar or a bool tensor"
        return None


class Sort(Op):
    """Values sorted along ``dim`` and the indices that sort them."""

    name = "sort"
    dynamic = True
    inputs = ("x",)
    attrs = {"dim": -1, "descending": False, "stable": None}
    num_outputs = 2

    def kernel(x, *, dim, descending, stable):
        return torch.sort(x, dim=dim, descending=descending, stable=bool(stable))

    def lower(c, x, *, dim, descending, stable):
        axis = dim % x.rank
        order = c.mb.argsort(x=x, axis=axis, ascending=not descending, name=c.name + "_order")
        values = c.mb.gather_along_axis(x=x, indices=order, axis=axis, name=c.name)
        return values, order

    def check(node, generation):
        if node.inputs[0].type.rank == 0:
            return "sort of a scalar"
        if node.inputs[0].type.dtype == "bool":
            return "sort of a bool tensor"
        return None


class VectorNorm(Op):
    """torch.linalg.vector_norm: (sum |x|^ord)^(1/ord) over ``dim`` (all when None)."""

    name = "vector_norm"
    dynamic = True
    inputs = ("x",)
    attrs = {"ord": 2, "dim": None, "keepdim": False}

    def kernel(x, *, ord, dim, keepdim):
        return torch.linalg.vector_norm(x, ord, dim, keepdim)

    def lower(c, x, *, ord, dim, keepdim):
        axes = normalize_axes(dim, x.rank)
        kw = {"axes": axes, "keep_dims": keepdim}
        if ord == 2:
            return c.mb.reduce_l2_norm(x=x, name=c.name, **kw)
        if ord == 1:
            return c.mb.reduce_l1_norm(x=x, name=c.name, **kw)
        size = c.mb.abs(x=x, name=c.name + "_abs")
        if ord == float("inf"):
            return c.mb.reduce_max(x=size, name=c.name, **kw)
        if ord == float("-inf"):
            return c.mb.reduce_min(x=size, name=c.name, **kw)
        powered = c.mb.pow(x=size, y=c.scalar(ord, like=x), name=c.name + "_pow")
        total = c.mb.reduce_sum(x=powered, name=c.name + "_sum", **kw)
        return c.mb.pow(x=total, y=c.scalar(1.0 / ord, like=x), name=c.name)

    def check(node, generation):
        if not node.inputs[0].type.dtype.startswith("float"):
            return "vector_norm of a non-float tensor"
        if node.attrs["ord"] == 0 or node.attrs["ord"] < 0 and node.attrs["ord"] != float("-inf"):
            return f"vector_norm of order {node.attrs['ord']}"
        return None


class Prod(Op):
    """Product over one ``dim`` (all entries when None)."""

    name = "prod"
    dynamic = True
    inputs = ("x",)
    attrs = {"dim": None, "keepdim": False}

    def kernel(x, *, dim, keepdim):
        return torch.prod(x) if dim is None else torch.prod(x, dim, keepdim)

    def lower(c, x, *, dim, keepdim):
        (x,) = c.promote(x)
        if x.rank == 0:
            return c.mb.identity(x=x, name=c.name)
        axes = normalize_axes(dim, x.rank)
        return c.mb.reduce_prod(x=x, axes=axes, keep_dims=keepdim, name=c.name)


def _count(x, axes) -> int | None:
    """How many entries a reduction over ``axes`` of type ``x`` sees; None if dynamic."""
    n = 1
    for a in axes:
        if not isinstance(x.shape[a], int):
            return None
        n *= x.shape[a]
    return n


class Var(Op):
    """Variance over ``dim`` (all when None), divided by N - ``correction``."""

    name = "var"
    dynamic = True
    inputs = ("x",)
    attrs = {"dim": None, "correction": None, "keepdim": False}

    def kernel(x, *, dim, correction, keepdim):
        return torch.var(x, dim, correction=correction, keepdim=keepdim)

    def lower(c, x, *, dim, correction, keepdim):
        axes = normalize_axes(dim, x.rank)
        corr = 1 if correction is None else correction
        mean = c.mb.reduce_mean(x=x, axes=axes, keep_dims=True, name=c.name + "_mean")
        diff = c.mb.sub(x=x, y=mean, name=c.name + "_diff")
        square = c.mb.mul(x=diff, y=diff, name=c.name + "_sq")
        if corr == 0:
            return c.mb.reduce_mean(x=square, axes=axes, keep_dims=keepdim, name=c.name)
        total = c.mb.reduce_sum(x=square, axes=axes, keep_dims=keepdim, name=c.name + "_sum")
        shape = c.node.inputs[0].type.shape
        n = _count(c.node.inputs[0].type, axes)
        if n is None:  # over a dynamic dimension: N - correction computed at run time
            count = symbolic.Expr("*".join(f"({shape[a]})" for a in axes) + f" - {int(corr)}")
            divisor = c.mb.cast(x=c.size(count), dtype=c.mil_dtype_of(x), name=c.name + "_n")
            return c.mb.real_div(x=total, y=divisor, name=c.name)
        return c.mb.mul(x=total, y=c.scalar(1.0 / (n - corr), like=x), name=c.name)

    def check(node, generation):
        x = node.inputs[0].type
        if not x.dtype.startswith("float"):
            return "var of a non-float tensor"
        corr = 1 if node.attrs["correction"] is None else node.attrs["correction"]
        n = _count(x, normalize_axes(node.attrs["dim"], x.rank))
        if n is None and corr != int(corr):
            return "var with a fractional correction over a dynamic dimension"
        if n is None:
            return None  # where N <= correction at run time, torch's var is not finite either
        if n - corr <= 0:
            return f"var of {n} entries with correction {corr} (no degrees of freedom)"
        return None


class VarMean(Var):
    """torch.var_mean (and so std_mean): the variance and the mean it was taken about."""

    name = "var_mean"
    num_outputs = 2

    def kernel(x, *, dim, correction, keepdim):
        return torch.var_mean(x, dim, correction=correction, keepdim=keepdim)

    def lower(c, x, *, dim, correction, keepdim):
        var = Var.lower(c, x, dim=dim, correction=correction, keepdim=keepdim)
        axes = normalize_axes(dim, x.rank)
        mean = c.mb.reduce_mean(x=x, axes=axes, keep_dims=keepdim, name=c.name + "_average")
        return var, mean
