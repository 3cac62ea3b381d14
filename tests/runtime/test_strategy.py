"""HybridExecutionStrategy's load-time rules: which torch device runs a fallback partition.

There is no GPU on the development machine, so GPU presence is simulated by replacing
the device check; the decisions themselves are what is under test.
"""

from __future__ import annotations

import numpy as np
import pytest

from coreml_compile.compiler.ir import Graph, TensorType
from coreml_compile.compiler.strategy import HybridExecutionStrategy
from coreml_compile.errors import CoreMLCompileError, DeviceNotAvailable
from coreml_compile.runtime import devices
from coreml_compile.runtime.placement import fallback_device


def _graph(elements: int) -> Graph:
    g = Graph("fallback")
    x = g.add_input("x", TensorType("float32", (elements,)))
    w = g.add_constant("w", np.ones(elements, np.float32))
    g.outputs.append(g.add_node("mul", [x, w]).output)
    return g


@pytest.fixture
def gpu(monkeypatch):
    monkeypatch.setattr(devices, "torch_device_available", lambda name: name in ("cpu", "mps"))


def test_auto_takes_the_gpu_for_large_partitions_only(gpu):
    strategy = HybridExecutionStrategy()
    big, small = _graph(1 << 20), _graph(100)  # 12 MiB moved vs 1.2 KB
    assert fallback_device(strategy, big).where == "mps"
    decision = fallback_device(strategy, small)
    assert decision.where == "cpu" and "cheaper on the CPU" in decision.reason


def test_memory_limit_keeps_large_partitions_off_the_gpu(gpu):
    strategy = HybridExecutionStrategy(gpu_memory_limit_mb=4)
    decision = fallback_device(strategy, _graph(1 << 20))
    assert decision.where == "cpu" and "over the GPU memory limit" in decision.reason


def test_battery_mode_stays_on_the_cpu_and_asks_for_the_neural_engine(gpu):
    strategy = HybridExecutionStrategy.named("battery")
    assert fallback_device(strategy, _graph(1 << 20)).where == "cpu"
    assert strategy.compute_units(None) == "cpu_and_ne"
    assert strategy.compute_units("all") == "all"  # an explicit choice wins


def test_explicit_devices_are_checked():
    assert fallback_device(HybridExecutionStrategy(fallback="cpu"), _graph(8)).where == "cpu"
    if not devices.torch_device_available("cuda"):
        with pytest.raises(DeviceNotAvailable, match="'cuda' is not available"):
            fallback_device(HybridExecutionStrategy(fallback="cuda"), _graph(8))


def test_bad_settings_are_named():
    with pytest.raises(CoreMLCompileError, match="unknown fallback device 'gpu'"):
        HybridExecutionStrategy(fallback="gpu")
    with pytest.raises(CoreMLCompileError, match="unknown strategy 'fast'"):
        HybridExecutionStrategy.named("fast")
