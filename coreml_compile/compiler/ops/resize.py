"""Spatial resizing: nearest, bilinear and bicubic upsampling; pixel (un)shuffle.

torch's resizes are separable: along each spatial axis, every output row is a fixed
combination of input rows. The lowerings read that combination off torch itself (the
record's kernel run on one-hot inputs, one axis at a time), so they follow torch's
coordinate rules (sizes vs scale factors, align_corners, clamping) exactly, and pick the
Core ML op that computes the same thing:

- nearest: an integer upsample is ``upsample_nearest_neighbor``, an integer downsample a
  strided slice, anything else a ``gather`` of the rows torch picks;
- bilinear: ``resize_bilinear`` when its sampling grid is torch's, else two ``matmul``s
  with the interpolation matrices (scale factors whose grid differs from the sizes');
- bicubic: Core ML has no cubic resize, so always the two ``matmul``s.

With dynamic spatial sizes there are no rows to read off: nearest and bilinear resizes by
whole-number factors (the same for every size, ``8*s0`` from ``s0``) are Core ML's
``upsample_*`` ops, whose grids are torch's for such factors, and a single row or column
resized to any size is a ``tile`` of it; other resizes of dynamic sizes are refused.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from coreml_compile.compiler import symbolic
from coreml_compile.compiler.ops import REQUIRED, Op

_SIZE_ATTRS = {"output_size": None, "scale_factors": None, "scales_h": None, "scales_w": None}


def _run(overload, x, output_size, scale_factors, scales_h, scales_w, *extra):
    """Call the .vec overload, or the default one when it carries per-axis scales."""
    if scales_h is None and scales_w is None:
        size = None if output_size is None else list(output_size)
        factors = None if scale_factors is None else list(scale_factors)
        return overload.vec(x, size, *extra, factors)
    return overload.default(x, list(output_size), *extra, scales_h, scales_w)


def _axis_attrs(attrs, axis):
    """The node's attributes restricted to one spatial axis (the other one kept at 1)."""
    a = dict(attrs)
    if a["output_size"] is not None:
        a["output_size"] = [s if i == axis else 1 for i, s in enumerate(a["output_size"])]
    if a["scale_factors"] is not None:
        a["scale_factors"] = [f if i == axis else 1.0 for i, f in enumerate(a["scale_factors"])]
    if axis == 0:
        a["scales_w"] = None
    else:
        a["scales_h"] = None
    if a["output_size"] is not None and a["scales_h"] is None and a["scales_w"] is None:
        a["scale_factors"] = None
    return a


def _axis_matrix(record, attrs, n, axis):
    """M (out, n) with out_rows = M @ in_rows along spatial ``axis`` (0: height, 1: width)."""
    eye = torch.eye(n, dtype=torch.float64)
    shape = (n, 1, n, 1) if axis == 0 else (n, 1, 1, n)
    out = record.kernel(eye.reshape(shape), **_axis_attrs(attrs, axis))
    return out.reshape(n, -1).T.contiguous().numpy()


def _separable(c, x, mh, mw):
    """x resized by interpolation matrices: mh @ x along H, then along W (identities skipped)."""
    y = x
    h, w = x.shape[-2], x.shape[-1]
    last_h = mw.shape == (w, w) and np.array_equal(mw, np.eye(w))
    if not (mh.shape == (h, h) and np.array_equal(mh, np.eye(h))):
        name = c.name if last_h else c.name + "_h"
        y = c.mb.matmul(x=c.const_like(mh, x), y=y, name=name)
    if not last_h:
        y = c.mb.matmul(x=y, y=c.const_like(mw.T, x), name=c.name)
    if y is x:
        return c.mb.identity(x=x, name=c.name)
    return y


def _mil_bilinear_matrix(n_in, n_out, mode):
    """The interpolation matrix of MIL's resize_bilinear sampling modes (its spec's grid)."""
    i = np.arange(n_out, dtype=np.float64)
    if mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        if n_out == 1:
            grid = np.array([0.0 if mode == "STRICT_ALIGN_CORNERS" else (n_in - 1) / 2])
        else:
            grid = i * (n_in - 1) / (n_out - 1)
    elif mode == "UNALIGN_CORNERS":
        spacing = n_in / n_out
        grid = i * spacing + 0.5 * spacing - 0.5
    elif mode == "OFFSET_CORNERS":
        delta = max(1, n_in - 1) / n_out
        grid = 0.5 * delta + i * delta
    else:  # DEFAULT
        grid = i * (n_in - n_in / n_out) / (n_out - 1) if n_out > 1 else np.zeros(1)
    grid = np.clip(grid, 0, n_in - 1)
    lo = np.floor(grid).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = grid - lo
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), lo), 1 - frac)
    np.add.at(m, (np.arange(n_out), hi), frac)
    return m


def _size_check(node):
    x = node.inputs[0].type
    if x.rank != 4:
        return "resizing needs a rank-4 input"
    if 0 in node.output.type.shape:
        return "resize to an empty output"
    return None


def _spatial_dynamic(node) -> bool:
    """True if a spatial size of the input or the output is symbolic."""
    dims = [*node.inputs[0].type.shape[-2:], *node.output.type.shape[-2:]]
    return not all(isinstance(d, int) for d in dims)


def _dynamic_plan(node) -> list[tuple[str, symbolic.Dim]] | str:
    """How to resize each spatial axis whose sizes may be symbolic, or why it cannot be.

    Per axis: ``("scale", k)`` for a whole-number factor k (Core ML's upsample ops sample
    torch's grid for those), or ``("tile", n)``: a single row resized to n rows is n copies
    of it in every mode.
    """
    attrs = node.attrs
    x, out = node.inputs[0].type.shape[-2:], node.output.type.shape[-2:]
    factors = attrs["scale_factors"]
    # The scale torch computes source positions with, when one is given: with
    # align_corners it uses the sizes alone.
    given = [
        None if attrs.get("align_corners") else f
        for f in (factors if factors is not None else [attrs["scales_h"], attrs["scales_w"]])
    ]
    plan: list[tuple[str, symbolic.Dim]] = []
    for a in (0, 1):
        if x[a] == 1:
            plan.append(("tile", out[a]))
            continue
        k = symbolic.ratio(out[a], x[a])
        if k is None or k.denominator != 1 or k < 1:
            return (
                f"resizing dynamic size {x[a]} to {out[a]}: Core ML resizes sizes unknown "
                "before the run by whole-number factors only"
            )
        if given[a] is not None and float(given[a]) != k:
            return f"scale factor {given[a]} samples another grid than the sizes' ({k})"
        plan.append(("scale", int(k)))
    return plan


def _dynamic_check(node):
    if not _spatial_dynamic(node):
        return None
    plan = _dynamic_plan(node)
    return plan if isinstance(plan, str) else None


def _lower_dynamic(c, x, upsample):
    """The resize as ``_dynamic_plan`` says: one ``upsample`` op (``upsample(x, kh, kw,
    name)``) for the whole-number factors, then a tile for single rows; no static sizes."""
    plan = _dynamic_plan(c.node)
    kh, kw = (arg if kind == "scale" else 1 for kind, arg in plan)
    copies = [arg if kind == "tile" else 1 for kind, arg in plan]
    tiled = any(n != 1 for n in copies)
    y = x
    if (kh, kw) != (1, 1):
        y = upsample(y, kh, kw, c.name + "_up" if tiled else c.name)
    if tiled:
        reps = c.sizes([1] * (x.rank - 2) + copies)
        y = c.mb.tile(x=y, reps=reps, name=c.name)
    if y is x:
        return c.mb.identity(x=x, name=c.name)
    return y


class UpsampleNearest2d(Op):
    """Nearest-neighbour resize of the last two dims (sizes or scale factors, as torch)."""

    name = "upsample_nearest2d"
    inputs = ("x",)
    attrs = dict(_SIZE_ATTRS)
    # Static spatial sizes read torch's rows; dynamic ones take _lower_dynamic's way.
    dynamic = True

    def kernel(x, *, output_size, scale_factors, scales_h, scales_w):
        return _run(
            torch.ops.aten.upsample_nearest2d, x, output_size, scale_factors, scales_h, scales_w
        )

    def lower(c, x, **attrs):
        if _spatial_dynamic(c.node):
            return _lower_dynamic(
                c,
                x,
                lambda y, kh, kw, name: c.mb.upsample_nearest_neighbor(
                    x=y, scale_factor_height=kh, scale_factor_width=kw, name=name
                ),
            )
        rows = [
            _axis_matrix(UpsampleNearest2d, attrs, x.shape[-2 + a], a).argmax(1) for a in (0, 1)
        ]
        plans = [_nearest_plan(r, x.shape[-2 + a]) for a, r in enumerate(rows)]
        if all(kind in ("same", "up") for kind, _ in plans):
            sh, sw = (arg if kind == "up" else 1 for kind, arg in plans)
            return c.mb.upsample_nearest_neighbor(
                x=x, scale_factor_height=sh, scale_factor_width=sw, name=c.name
            )
        todo = [(a, kind, arg) for a, (kind, arg) in enumerate(plans) if kind != "same"]
        y = x
        for n, (a, kind, arg) in enumerate(todo):
            axis = x.rank - 2 + a
            name = c.name if n == len(todo) - 1 else f"{c.name}_ax{a}"
            if kind == "up":
                scales = {
                    "scale_factor_height": arg if a == 0 else 1,
                    "scale_factor_width": arg if a == 1 else 1,
                }
                y = c.mb.upsample_nearest_neighbor(x=y, **scales, name=name)
            elif kind == "stride":
                stride = [1] * y.rank
                stride[axis] = arg
                # end_mask: to the end of every axis, whatever the (maybe dynamic) batch.
                y = c.mb.slice_by_index(
                    x=y,
                    begin=[0] * y.rank,
                    end=[0] * y.rank,
                    end_mask=[True] * y.rank,
                    stride=stride,
                    name=name,
                )
            else:
                idx = c.mb.const(val=arg.astype(np.int32), name=f"{c.name}_rows{a}")
                y = c.mb.gather(x=y, indices=idx, axis=axis, name=name)
        return y

    def check(node, generation):
        return _size_check(node) or _dynamic_check(node)


def _nearest_plan(rows, n):
    """How to pick ``rows`` (source row per output row) from ``n``: same, up, stride, gather."""
    out = len(rows)
    if out == n and np.array_equal(rows, np.arange(n)):
        return "same", None
    if out % n == 0 and np.array_equal(rows, np.arange(out) // (out // n)):
        return "up", out // n
    if out > 1:
        step = int(rows[1] - rows[0])
        if step > 1 and np.array_equal(rows, np.arange(out) * step):
            return "stride", step
    return "gather", rows


class UpsampleBilinear2d(Op):
    """Bilinear resize of the last two dims (sizes or scale factors, ``align_corners``)."""

    name = "upsample_bilinear2d"
    inputs = ("x",)
    attrs = {**_SIZE_ATTRS, "align_corners": REQUIRED}
    # Static spatial sizes read torch's matrices; dynamic ones take _lower_dynamic's way.
    dynamic = True

    def kernel(x, *, output_size, scale_factors, scales_h, scales_w, align_corners):
        return _run(
            torch.ops.aten.upsample_bilinear2d,
            x,
            output_size,
            scale_factors,
            scales_h,
            scales_w,
            align_corners,
        )

    def lower(c, x, **attrs):
        if _spatial_dynamic(c.node):
            return _lower_dynamic(
                c,
                x,
                lambda y, kh, kw, name: c.mb.upsample_bilinear(
                    x=y,
                    scale_factor_height=kh,
                    scale_factor_width=kw,
                    align_corners=bool(attrs["align_corners"]),
                    name=name,
                ),
            )
        mh, mw = (_axis_matrix(UpsampleBilinear2d, attrs, x.shape[-2 + a], a) for a in (0, 1))
        mode = "STRICT_ALIGN_CORNERS" if attrs["align_corners"] else "UNALIGN_CORNERS"
        (oh, h), (ow, w) = mh.shape, mw.shape
        if np.allclose(mh, _mil_bilinear_matrix(h, oh, mode), atol=1e-6) and np.allclose(
            mw, _mil_bilinear_matrix(w, ow, mode), atol=1e-6
        ):
            return c.mb.resize_bilinear(
                x=x, target_size_height=oh, target_size_width=ow, sampling_mode=mode, name=c.name
            )
        return _separable(c, x, mh.astype(np.float32), mw.astype(np.float32))

    def check(node, generation):
        return _size_check(node) or _dynamic_check(node)


class UpsampleBicubic2d(Op):
    """Bicubic resize of the last two dims; lowered as two matrix products."""

    name = "upsample_bicubic2d"
    inputs = ("x",)
    attrs = {**_SIZE_ATTRS, "align_corners": REQUIRED}

    def kernel(x, *, output_size, scale_factors, scales_h, scales_w, align_corners):
        return _run(
            torch.ops.aten.upsample_bicubic2d,
            x,
            output_size,
            scale_factors,
            scales_h,
            scales_w,
            align_corners,
        )

    def lower(c, x, **attrs):
        mh, mw = (_axis_matrix(UpsampleBicubic2d, attrs, x.shape[-2 + a], a) for a in (0, 1))
        return _separable(c, x, mh.astype(np.float32), mw.astype(np.float32))

    def check(node, generation):
        return _size_check(node)


class PixelShuffle(Op):
    """(N, C*r*r, H, W) -> (N, C, H*r, W*r)."""

    name = "pixel_shuffle"
    dynamic = True
    inputs = ("x",)
    attrs = {"upscale_factor": REQUIRED}

    def kernel(x, *, upscale_factor):
        return F.pixel_shuffle(x, upscale_factor)

    def lower(c, x, *, upscale_factor):
        return c.mb.pixel_shuffle(x=x, upscale_factor=np.int32(upscale_factor), name=c.name)

    def check(node, generation):
        if node.inputs[0].type.rank != 4:
            return "pixel_shuffle of a tensor that is not rank 4"
        if not node.inputs[0].type.dtype.startswith("float"):
            return "pixel_shuffle of a non-float tensor"
        return None


class PixelUnshuffle(Op):
    """(N, C, H*r, W*r) -> (N, C*r*r, H, W)."""

    name = "pixel_unshuffle"
    dynamic = True
    inputs = ("x",)
    attrs = {"downscale_factor": REQUIRED}
    min_target = 16

    def kernel(x, *, downscale_factor):
        return F.pixel_unshuffle(x, downscale_factor)

    def lower(c, x, *, downscale_factor):
        return c.mb.pixel_unshuffle(x=x, downscale_factor=np.uint32(downscale_factor), name=c.name)

    def check(node, generation):
        if node.inputs[0].type.rank != 4:
            return "pixel_unshuffle of a tensor that is not rank 4"
        if not node.inputs[0].type.dtype.startswith("float"):
            return "pixel_unshuffle of a non-float tensor"
        return None


# torch's grid_sampler enums (aten/src/ATen/native/GridSampler.h), and their Core ML names.
_GRID_MODES = {0: "bilinear", 1: "nearest"}
_GRID_PADDING = {0: "zeros", 1: "border", 2: "reflection"}


class GridSample(Op):
    """F.grid_sample on 4-D inputs: ``x`` (N, C, H, W) read at ``grid`` (N, Ho, Wo, 2),
    the (x, y) positions in [-1, 1]; bilinear or nearest; zeros, border or reflection
    padding; ``align_corners`` as torch.

    Core ML's ``resample`` takes torch's grid as it is (``normalized_minus_one_to_one``
    with the same ``align_corners``). Its padding pads the image, not the coordinates, but
    for piecewise-linear sampling the two agree: zeros is ``constant`` 0 and border is
    ``border``; torch reflects about the corner pixels' centres with ``align_corners``
    (Core ML's ``reflection``, the edge not repeated) and about the image's edges without
    (``symmetric``, the edge repeated). Nearest sampling rounds half to even in torch;
    a coordinate exactly halfway between two pixels may round the other way on a device.
    """

    name = "grid_sample"
    inputs = ("x", "grid")
    attrs = {"interpolation_mode": 0, "padding_mode": 0, "align_corners": False}
    # resample takes its output size from the grid at run time: no sizes are read here.
    dynamic = True

    def kernel(x, grid, *, interpolation_mode, padding_mode, align_corners):
        return torch.grid_sampler(x, grid, interpolation_mode, padding_mode, align_corners)

    def lower(c, x, grid, *, interpolation_mode, padding_mode, align_corners):
        padding = _GRID_PADDING[padding_mode]
        if padding == "zeros":
            padding = "constant"
        elif padding == "reflection" and not align_corners:
            padding = "symmetric"
        if c.generation < 16 and c.mil_dtype_of(grid) == "fp16":
            # iOS15's resample takes fp32 (or int32) coordinates only.
            grid = c.mb.cast(x=grid, dtype="fp32", name=c.name + "_grid_fp32")
        return c.mb.resample(
            x=x,
            coordinates=grid,
            sampling_mode=_GRID_MODES[interpolation_mode],
            padding_mode=padding,
            padding_value=c.scalar(0, like=x),
            coordinates_mode="normalized_minus_one_to_one",
            align_corners=bool(align_corners),
            name=c.name,
        )

    def check(node, generation):
        x, grid = node.inputs[0].type, node.inputs[1].type
        if x.rank != 4 or grid.rank != 4:
            return "grid_sample of a volume (5-D): Core ML's resample samples images only"
        mode = node.attrs["interpolation_mode"]
        if mode not in _GRID_MODES:
            return "bicubic grid_sample: Core ML's resample is bilinear or nearest"
        if node.attrs["padding_mode"] not in _GRID_PADDING:
            return f"grid_sample padding mode {node.attrs['padding_mode']} is unknown"
        if not (x.dtype.startswith("float") and grid.dtype.startswith("float")):
            return "grid_sample of a non-float tensor"
        return None
