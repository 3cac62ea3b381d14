"""Graph rewrites: named passes in a registry, pipelines as plain lists of names.

A pass is a function ``Graph -> bool`` (did it change anything) registered with
:func:`register_pass`, one per file, each starting with a docstring that shows the
pattern it rewrites. A pipeline is a list of pass names, so a user can print it, skip a
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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from coreml_compile.compiler.ir import Graph

PassFunction = Callable[[Graph], bool]

_PASSES: dict[str, PassFunction] = {}


def register_pass(name: str) -> Callable[[PassFunction], PassFunction]:
    def register(fn: PassFunction) -> PassFunction:
        if name in _PASSES:
            raise ValueError(f"pass {name!r} is registered twice")
        _PASSES[name] = fn
        return fn

    return register


_MODULES = (
    "fold_constants",
    "remove_noops",
    "cancel_transposes",
    "eliminate_common_subexpressions",
    "eliminate_dead_code",
    "fold_batch_norm",
    "fuse_bias",
    "fold_pad",
    "fold_reshape_into_reduction",
    "recompose_activations",
)

CLEANUP = [
    "fold_constants",
    "remove_noops",
    "cancel_transposes",
    "eliminate_common_subexpressions",
    "eliminate_dead_code",
]
FUSION = [
    "fold_batch_norm",
    "fuse_bias",
    "fold_pad",
    "fold_reshape_into_reduction",
    "recompose_activations",
]

# -O levels. Clean-up runs again after fusion: fusing exposes new no-ops and dead values.
PIPELINES: dict[str, list[str]] = {
    "O0": [],
    "O1": CLEANUP,
    "O2": CLEANUP + FUSION + CLEANUP,
}
DEFAULT_LEVEL = "O2"


def all_passes() -> dict[str, PassFunction]:
    for module in _MODULES:
        importlib.import_module(f"coreml_compile.passes.{module}")
    return dict(_PASSES)


def get_pass(name: str) -> PassFunction:
    passes = all_passes()
    if name not in passes:
        raise ValueError(f"unknown pass {name!r}; known passes: {', '.join(sorted(passes))}")
    return passes[name]


def pipeline(
    level: str | int | Sequence[str] = DEFAULT_LEVEL, skip: Sequence[str] = ()
) -> list[str]:
    """The pass names of an -O level (``"O2"``, ``2``) or of an explicit list, less ``skip``."""
    if isinstance(level, int) or (isinstance(level, str) and level.lstrip("Oo").isdigit()):
        key = f"O{str(level).lstrip('Oo')}"
        if key not in PIPELINES:
            raise ValueError(f"unknown optimisation level {level!r}; choose {', '.join(PIPELINES)}")
        names = list(PIPELINES[key])
    else:
        names = list(level)
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


def run_pipeline(graph: Graph, names: Sequence[str], verify: bool = False) -> list[PassRecord]:
    """Run passes in order on ``graph`` (in place); one record per pass run."""
    records = []
    for name in names:
        fn = get_pass(name)
        nodes, weights = len(graph.nodes), graph.weight_bytes()
        start = time.perf_counter()
        changed = bool(fn(graph))
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
