"""Patterns of the layers that per-channel constants fold into (fuse_scale, fuse_bias):
a conv, conv_transpose or linear with constant weights, and a batch norm with constant
statistics, each read only by the op being folded."""

from __future__ import annotations

from coreml_compile.passes._engine import Const, Match, Pattern

LAYER_OPS = ("conv", "conv_transpose", "linear")


def layer(ops: tuple[str, ...] = LAYER_OPS) -> Pattern:
    """``y = op(x, w, b?)`` with constant weights; ``y`` has no other reader."""
    return Pattern(ops, "x", Const("w"), Const("b?"), bind="y", single_use=True)


def batch_norm() -> Pattern:
    """``y = batch_norm(x, gamma?, beta?, mean, var)`` with constant statistics."""
    stats = (Const(name) for name in ("gamma?", "beta?", "mean", "var"))
    return Pattern("batch_norm", "x", *stats, bind="y", single_use=True)


def same_type(m: Match) -> bool:
    """A broadcast that grows the output or promotes its dtype cannot move into ``y``."""
    return m.root.output.type == m["y"].type
