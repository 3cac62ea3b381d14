"""Load-time placement: which torch device runs each fallback partition of a package.

The settings are the package's strategy (``compiler/strategy.py``, stored in its plan);
what exists on this machine is asked here, when the package is loaded.
"""

from __future__ import annotations

from coreml_compile.compiler import dtypes
from coreml_compile.compiler.ir import Graph
from coreml_compile.compiler.strategy import Decision, HybridExecutionStrategy
from coreml_compile.errors import DeviceNotAvailable
from coreml_compile.runtime import devices


def fallback_device(strategy: HybridExecutionStrategy, graph: Graph) -> Decision:
    """Where a fallback partition runs here, and why (see the strategy's rules)."""
    if strategy.fallback in ("mps", "cuda"):
        if not devices.torch_device_available(strategy.fallback):
            raise DeviceNotAvailable(
                f"fallback device {strategy.fallback!r} is not available on this machine"
            )
        return Decision(strategy.fallback, "asked for")
    if strategy.fallback == "cpu":
        return Decision("cpu", "asked for")
    if strategy.battery:
        return Decision("cpu", "battery mode does not wake the GPU for fallback work")
    gpu = next((d for d in ("mps", "cuda") if devices.torch_device_available(d)), None)
    if gpu is None:
        return Decision("cpu", "no mps or cuda device here")
    moved = _bytes_moved(graph)
    if moved < strategy.gpu_min_bytes:
        return Decision("cpu", f"moves {moved:,} bytes: cheaper on the CPU than a copy")
    if strategy.gpu_memory_limit_mb is not None and moved > strategy.gpu_memory_limit_mb * 2**20:
        return Decision("cpu", f"needs {moved / 2**20:.0f} MiB, over the GPU memory limit")
    return Decision(gpu, f"GPU present; moves {moved:,} bytes")


def _bytes_moved(graph: Graph) -> int:
    """Bytes of a partition's inputs, weights and outputs: what a GPU would hold."""

    def size(v) -> int:  # type: ignore[no-untyped-def]
        return v.type.numel() * dtypes.NUMPY[v.type.dtype].itemsize if v.type.is_static else 0

    values = [*graph.inputs, *graph.constants.values(), *graph.outputs]
    return sum(size(v) for v in values)
