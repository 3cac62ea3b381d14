"""Graph rewrites: named passes in a registry, pipelines as plain lists of names.

A pass is a function ``Graph -> bool`` (did it change anything) registered with
:func:`register_pass`, one per file, each starting with a docstring that shows the
pattern it rewrites. Most passes state rewrite rules (pattern + check + replacement) and
hand them to the one engine in ``_engine.py``, which owns traversal and runs them to a
fixed point. A pipeline is a list of pass names, so a user can print it, skip a
pass, or reorder it; :func:`run_pipeline` runs one and records, per pass, its time, the
node count and the weight bytes before and after.

Rules every pass follows:
- it keeps the model's results (tests run the IR before and after and compare);
- it never writes into a constant's array: those share memory with the user's model,
  so a rewrite makes new arrays;
- it leaves the graph verified (``run_pipeline(verify=True)`` checks after each pass).
"""

from __future__ import annotations

import importlib
import pkgutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from coreml_compile.compiler.ir import Graph

PassFunction = Callable[..., bool]

_PASSES: dict[str, PassFunction] = {}
_TAKES_OPTIONS: set[str] = set()


@dataclass
class CompressionOptions:
    """What the weight-compression passes do and to which weights.

    ``quantize``: "int8" (per tensor), "int8-per-channel", with "-asym" for asymmetric
    (uint8 with a zero point), or "palette1/2/4/6/8" (k-means look-up tables).
    ``prune``: a sparsity ("0.5") or an n:m pattern ("2:4").
    Weights are those of ``op_types`` with at least ``min_weight_elements`` elements,
    less the first and last such layer when ``skip_first_last``.
    """

    quantize: str | None = None
    prune: str | None = None
    min_weight_elements: int = 2048
    op_types: tuple[str, ...] = ("conv", "conv_transpose", "linear", "matmul", "embedding")
    skip_first_last: bool = False


def register_pass(name: str, takes_options: bool = False) -> Callable[[PassFunction], PassFunction]:
    """Register ``fn(graph) -> changed`` (or ``fn(graph, options)`` if ``takes_options``)."""

    def register(fn: PassFunction) -> PassFunction:
        if name in _PASSES:
            raise ValueError(f"pass {name!r} is registered twice")
        _PASSES[name] = fn
        if takes_options:
            _TAKES_OPTIONS.add(name)
        return fn

    return register


CLEANUP = [
    "fold_constants",
    "remove_noops",
    "cancel_transposes",
    "eliminate_common_subexpressions",
    "eliminate_dead_code",
]
FUSION = [
    "fold_batch_norm",
    "batch_norm_to_scale",
    "fuse_scale",
    "fuse_bias",
    "fold_pad",
    "fold_reshape_into_reduction",
    "fuse_channel_shuffle",
    "merge_slices",
    "fold_embedding_lookups",
    "recompose_activations",
    "recompose_layer_norm",
]

# -O levels. Clean-up runs again after fusion: fusing exposes new no-ops and dead values.
# Compression passes are added by the compile options, not by the level.
PIPELINES: dict[str, list[str]] = {
    "O0": [],
    "O1": CLEANUP,
    "O2": CLEANUP + FUSION + CLEANUP,
}
DEFAULT_LEVEL = "O2"


def all_passes() -> dict[str, PassFunction]:
    # One pass per module, named like it: importing the modules registers them all.
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")
    return dict(_PASSES)


def get_pass(name: str) -> PassFunction:
    passes = all_passes()
    if name not in passes:
        raise ValueError(f"unknown pass {name!r}; known passes: {', '.join(sorted(passes))}")
    return passes[name]


# Opt-in: rewrites the inner layout for the Neural Engine, then cleans up after itself.
ANE_LAYOUT = [
    "ane_layout",
    "sink_transposes",
    "cancel_transposes",
    "split_softmax",
    "remove_noops",
    "eliminate_dead_code",
]

# The weight-compression passes, in the order they would run.
COMPRESSION = ["prune_weights", "quantize_weights", "palettize_weights"]

# Not optimisations but rewrites Core ML needs (ranks above 5 it cannot hold): every
# pipeline runs them first (the level's clean-up then tidies what they leave), at every
# level, unless skipped.
LEGALIZE = ["lower_rank"]


def compression_passes(options: CompressionOptions) -> list[str]:
    """The compression passes ``options`` asks for, in the order they must run."""
    names = []
    if options.prune:
        names.append("prune_weights")
    if options.quantize:
        palette = options.quantize.startswith("palette")
        names.append("palettize_weights" if palette else "quantize_weights")
    return names


def pipeline(
    level: str | int | Sequence[str] = DEFAULT_LEVEL,
    skip: Sequence[str] = (),
    compression: CompressionOptions | None = None,
    ane_layout: bool = False,
) -> list[str]:
    """The :data:`LEGALIZE` passes, the pass names of an -O level (``"O2"``, ``2``) or of an
    explicit list, then the compression passes ``compression`` asks for; less ``skip``."""
    if isinstance(level, int) or (isinstance(level, str) and level.lstrip("Oo").isdigit()):
        key = f"O{str(level).lstrip('Oo')}"
        if key not in PIPELINES:
            raise ValueError(f"unknown optimisation level {level!r}; choose {', '.join(PIPELINES)}")
        names = list(PIPELINES[key])
    else:
        names = list(level)
    names = [n for n in LEGALIZE if n not in names] + names
    if ane_layout:
        names += ANE_LAYOUT
    if compression is not None:
        names += compression_passes(compression)
    for name in [*names, *skip]:
        get_pass(name)  # unknown names fail here, before any work
    return [n for n in names if n not in set(skip)]


@dataclass
class PassRecord:
    name: str
    seconds: float
    nodes_before: int
    nodes_after: int
    weight_bytes_before: int
    weight_bytes_after: int
    changed: bool


def run_pipeline(
    graph: Graph,
    names: Sequence[str],
    verify: bool = False,
    options: CompressionOptions | None = None,
) -> list[PassRecord]:
    """Run passes in order on ``graph`` (in place); one record per pass run."""
    records = []
    options = options or CompressionOptions()
    for name in names:
        fn = get_pass(name)
        nodes, weights = len(graph.nodes), graph.weight_bytes()
        start = time.perf_counter()
        changed = bool(fn(graph, options) if name in _TAKES_OPTIONS else fn(graph))
        seconds = time.perf_counter() - start
        if verify:
            graph.verify()
        records.append(
            PassRecord(
                name, seconds, nodes, len(graph.nodes), weights, graph.weight_bytes(), changed
            )
        )
    return records


def format_records(records: Sequence[PassRecord]) -> str:
    """The per-pass table the compile summary prints."""
    lines = [f"  {'pass':<32}{'ms':>8}{'nodes':>14}{'weight MB':>20}"]
    for r in records:
        nodes = f"{r.nodes_before}->{r.nodes_after}" if r.changed else str(r.nodes_after)
        mb_before, mb_after = r.weight_bytes_before / 1e6, r.weight_bytes_after / 1e6
        weights = f"{mb_before:.1f}->{mb_after:.1f}" if mb_before != mb_after else f"{mb_after:.1f}"
        lines.append(f"  {r.name:<32}{r.seconds * 1000:>8.1f}{nodes:>14}{weights:>20}")
    return "\n".join(lines)
