"""HybridExecutionStrategy: the policy that decides where each partition runs.

The partitioner asks it about each Core ML partition wedged between fallbacks (keep it
on Core ML, or run it on the fallback executor to save two hand-offs?): a compile-time
decision, made here. Which torch device runs each fallback partition is decided when a
package is loaded, from the same settings, by ``runtime/placement.py``. Every answer comes with
a one-line reason, which the compile report and ``coreml-compile run`` show.

The rules, in order:

- ``battery=True`` prefers Core ML (the Neural Engine draws the least power): every
  supported node stays on Core ML however small its partition, Core ML is asked for
  CPU and Neural Engine, and fallback partitions run on the CPU rather than waking the
  GPU for them.
- A Core ML partition with a convolution, or with matrix products of at least
  ``large_matmul_macs`` multiply-accumulates, stays on Core ML: that is the work the
  Neural Engine and GPU are built for.
- Any other Core ML partition of fewer than ``min_coreml_nodes`` nodes that is not the
  whole model runs on the fallback executor: handing tensors to Core ML and back costs
  more than the few element-wise ops it would run.
- Fallback partitions run on ``fallback``: "cpu", "mps", "cuda", or "auto" (default),
  which takes the GPU (mps, then cuda) when there is one, unless the partition moves
  less than ``gpu_min_bytes`` (copying it to the GPU costs more than running it on the
  CPU) or more than ``gpu_memory_limit_mb`` (keep large working sets out of GPU memory).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from coreml_compile.compiler.ir import Node
from coreml_compile.errors import CoreMLCompileError

FALLBACK_DEVICES = ("auto", "mps", "cuda", "cpu")
STRATEGIES = ("auto", "battery")


@dataclass(frozen=True)
class Decision:
    """Where one partition runs, and why."""

    where: str  # "coreml", or the torch device of a fallback partition
    reason: str


@dataclass(frozen=True)
class HybridExecutionStrategy:
    """Where partitions run; see the module docstring for the rules."""

    fallback: str = "auto"
    min_coreml_nodes: int = 3
    large_matmul_macs: int = 1 << 20
    battery: bool = False
    gpu_memory_limit_mb: float | None = None
    gpu_min_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        if self.fallback not in FALLBACK_DEVICES:
            raise CoreMLCompileError(
                f"unknown fallback device {self.fallback!r}; choose one of "
                f"{', '.join(FALLBACK_DEVICES)}"
            )
        if self.min_coreml_nodes < 1:
            raise CoreMLCompileError("min_coreml_nodes must be at least 1")

    @classmethod
    def named(cls, name: str) -> HybridExecutionStrategy:
        """A preset: "auto" or "battery"."""
        if name not in STRATEGIES:
            raise CoreMLCompileError(
                f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}"
            )
        return cls(battery=name == "battery")

    def with_overrides(self, **settings: object) -> HybridExecutionStrategy:
        """This strategy with the settings given (those that are not None) replaced."""
        given = {k: v for k, v in settings.items() if v is not None}
        return replace(self, **given)  # type: ignore[arg-type]

    @property
    def name(self) -> str:
        return "battery" if self.battery else "auto"

    # -- compile time: which supported nodes go to Core ML ----------------------------

    def keep_on_coreml(self, nodes: Sequence[Node]) -> Decision:
        """Whether a Core ML partition that is not the whole model stays on Core ML."""
        if self.battery:
            return Decision("coreml", "battery mode keeps supported work on Core ML")
        # The op table on use: the CLI reads this module's presets without loading it.
        from coreml_compile.compiler.ops import get_record, macs

        kinds = {get_record(n.op).accelerated for n in nodes}
        if "convolution" in kinds:
            return Decision("coreml", "holds a convolution")
        work = sum(macs(n) for n in nodes if get_record(n.op).accelerated == "matmul")
        if work >= self.large_matmul_macs:
            return Decision("coreml", f"matrix products of {work:,} multiply-accumulates")
        if len(nodes) >= self.min_coreml_nodes:
            return Decision("coreml", f"{len(nodes)} nodes")
        return Decision(
            "fallback",
            f"a Core ML partition of {len(nodes)} node(s) without convolutions or large "
            f"matrix products, below the minimum of {self.min_coreml_nodes}",
        )

    # -- load time: which torch device runs each fallback partition -------------------

    def compute_units(self, requested: str | None) -> str | None:
        """Core ML compute units: battery mode asks for the Neural Engine if none given."""
        if requested is None and self.battery:
            return "cpu_and_ne"
        return requested
