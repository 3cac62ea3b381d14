"""Fold constant padding into the convolution or pooling that reads it.

    %p = pad(%x) pad=[1,1,2,2] mode=constant value=0
    %y = conv(%p, %w) padding=[0,0]        ⇒   %y = conv(%x, %w) padding=[2,1]

    %p = pad(%x) pad=[0,1,0,1] mode=constant value=-inf
    %y = max_pool2d(%p) kernel=3 stride=2  ⇒   %y = max_pool2d(%x) kernel=3 stride=2 ceil_mode

Zero padding folds into conv and into avg_pool2d that counts padding in its average;
-inf padding folds into max_pool2d. The conv record takes padding per side, so any zero
padding of the spatial dims folds into it (``padding=[0,1,0,1]`` for the first example
with ``pad=[0,1,0,1]``); the pools' padding is symmetric, so symmetric padding folds
into them. Padding of a max pool's input
with -inf only after (or more after than before) folds into ``ceil_mode`` where that
gives the same windows: ceil mode reads the last window past the input's end and
ignores the overhang, which is what a -inf pad does. Graphs exported from Caffe, whose
pooling rounds up, carry exactly that pad (``pads=[0,0,1,1]``). Other asymmetric padding
is kept. The pad must have no other reader.
"""

from __future__ import annotations

from coreml_compile.compiler.ir import Graph, Node, Value
from coreml_compile.compiler.ops._helpers import as_tuple
from coreml_compile.passes import register_pass
from coreml_compile.passes._engine import Match, New, Pattern, Rule, rewrite


def _folds(node, value: float) -> bool:
    """Whether padding with ``value`` means the same as ``node``'s own padding."""
    if node.op == "conv":
        return value == 0.0 and not isinstance(node.attrs["padding"], str)
    if node.op == "avg_pool2d":
        return value == 0.0 and node.attrs["count_include_pad"] and not node.attrs["ceil_mode"]
    if node.op == "max_pool2d":
        return value == float("-inf") and not node.attrs["ceil_mode"]
    return False


def _sides(padding, n: int) -> list[int]:
    """A conv's padding as [before0, after0, before1, after1, ...]."""
    if len(padding) == 2 * n:
        return list(padding)
    return [p for p in as_tuple(padding, n) for _ in range(2)]


def _ceil_mode_pool(pool: Node, x: Value, attrs: dict) -> dict | None:
    """``attrs`` with ceil_mode, if max pooling ``x`` (padded by ``attrs``' padding) in
    ceil mode gives the windows that ``pool`` took on ``x`` with more -inf after it."""
    sizes, out = x.type.shape[2:], pool.output.type.shape[2:]
    if not x.type.is_static or len(sizes) != 2 or len(out) != 2:
        return None
    kernel, padding = as_tuple(attrs["kernel_size"], 2), as_tuple(attrs["padding"], 2)
    stride = as_tuple(attrs["stride"] or attrs["kernel_size"], 2)
    dilation = as_tuple(attrs["dilation"], 2)
    for n, o, k, s, p, d in zip(sizes, out, kernel, stride, padding, dilation, strict=True):
        span = n + 2 * p - ((k - 1) * d + 1)
        # Rounded up, the same number of windows; and the last one starts inside the input
        # or its front padding. torch drops a last window that starts past that, Core ML
        # only when there is padding: where no window is dropped the two agree.
        if span < 0 or -(-span // s) + 1 != o or (o - 1) * s >= n + p:
            return None
    return dict(attrs, ceil_mode=True)


def _fold(graph: Graph, m: Match) -> New | None:
    conv, pad = m.root, m.node("pad")
    if not _folds(conv, pad.attrs["value"] or 0.0):
        return None
    spatial = 2 if conv.op != "conv" else conv.inputs[1].type.rank - 2
    pads = list(pad.attrs["pad"])
    # A negative pad crops: convolution padding cannot express it.
    if len(pads) > 2 * spatial or any(p < 0 for p in pads):
        return None
    pairs = [(pads[i], pads[i + 1]) for i in range(0, len(pads), 2)][::-1]
    pairs = [(0, 0)] * (spatial - len(pairs)) + pairs
    if conv.op == "conv":
        # The conv record takes padding per side: any zero padding folds into it.
        old = _sides(conv.attrs["padding"], spatial)
        sides = [o + p for o, p in zip(old, [p for pair in pairs for p in pair], strict=True)]
        padding = sides[0::2] if sides[0::2] == sides[1::2] else sides
        return New(conv.op, [m["x"], *conv.inputs[1:]], dict(conv.attrs, padding=padding))
    old = as_tuple(conv.attrs["padding"], spatial)
    attrs = dict(conv.attrs, padding=[o + p for o, (p, _) in zip(old, pairs, strict=True)])
    if conv.op != "conv" and any(
        2 * p > k for p, k in zip(attrs["padding"], as_tuple(attrs["kernel_size"], 2), strict=True)
    ):
        return None  # torch and Core ML pools take at most half the window as padding
    extra = [after - before for before, after in pairs]
    if any(extra):
        if conv.op != "max_pool2d" or any(e < 0 for e in extra):
            return None
        attrs = _ceil_mode_pool(conv, m["x"], attrs)
        if attrs is None:
            return None
    return New(conv.op, [m["x"], *conv.inputs[1:]], attrs)


RULE = Rule(
    Pattern(
        ("conv", "avg_pool2d", "max_pool2d"),
        Pattern(
            "pad", "x", bind="pad", single_use=True, check=lambda p: p.attrs["mode"] == "constant"
        ),
    ),
    _fold,
)


@register_pass("fold_pad")
def fold_pad(graph: Graph) -> bool:
    return rewrite(graph, [RULE])
