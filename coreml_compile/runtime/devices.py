"""What this machine can run a compiled model on, and choosing among it.

Two kinds of executor run a package's Core ML program:

- ``coreml``: Core ML itself, through coremltools' native bindings. Only on macOS;
  ``compute_units`` picks ALL, CPU_AND_NE (the Neural Engine), CPU_AND_GPU or CPU_ONLY.
- ``reference``: the reference executor (torch kernels), on any torch device: ``cpu``,
  ``cuda`` where there is a CUDA GPU, ``mps`` (Metal) on Apple silicon.

By default a package runs on Core ML where it exists, else on the reference executor on
the CPU, which is the exact reference (fp16 rounding included) rather than the fastest.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from coreml_compile.errors import DeviceNotAvailable

BACKENDS = ("coreml", "reference")
COMPUTE_UNITS = ("all", "cpu_and_ne", "cpu_and_gpu", "cpu_only")
TORCH_DEVICES = ("cpu", "cuda", "mps")


@dataclass(frozen=True)
class Device:
    """One place a model can run: ``backend`` plus its compute units or torch device."""

    backend: str
    name: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.backend}:{self.name}" + (f"  ({self.detail})" if self.detail else "")


def coreml_available() -> tuple[bool, str]:
    """(True, "") if Core ML can run models here, else (False, why not)."""
    if sys.platform != "darwin":
        return False, f"Core ML runs only on macOS (this is {sys.platform})"
    from coreml_compile.compiler.mil import quiet_coremltools

    with quiet_coremltools():
        try:
            from coremltools.models.model import _MLModelProxy
        except ImportError:
            _MLModelProxy = None
    if _MLModelProxy is None:
        return False, "coremltools' native library (libcoremlpython) did not load"
    return True, ""


def torch_device_available(name: str) -> bool:
    import torch

    if name == "cpu":
        return True
    if name == "cuda":
        return torch.cuda.is_available()
    if name == "mps":
        return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    return False


def devices() -> list[Device]:
    """Everything this machine can run a package on, best first."""
    found = []
    ok, _why = coreml_available()
    if ok:
        for unit in COMPUTE_UNITS:
            found.append(Device("coreml", unit, "Core ML"))
    for name in TORCH_DEVICES:
        if torch_device_available(name):
            found.append(Device("reference", name, "reference executor (torch kernels)"))
    return found


@dataclass(frozen=True)
class Choice:
    backend: str
    compute_units: str | None
    device: str


def choose(
    backend: str | None = None, compute_units: str | None = None, device: str | None = None
) -> Choice:
    """Resolve the user's request (all optional) against this machine, or raise."""
    if backend is not None and backend not in BACKENDS:
        raise DeviceNotAvailable(
            f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}"
        )
    if compute_units is not None:
        compute_units = compute_units.lower()
        if compute_units not in COMPUTE_UNITS:
            raise DeviceNotAvailable(
                f"unknown compute units {compute_units!r}; choose one of {', '.join(COMPUTE_UNITS)}"
            )
    if device is not None and device not in TORCH_DEVICES:
        raise DeviceNotAvailable(
            f"unknown device {device!r}; choose one of {', '.join(TORCH_DEVICES)}"
        )
    coreml_ok, why = coreml_available()
    if backend is None:
        wants_coreml = compute_units is not None or (device is None and coreml_ok)
        backend = "coreml" if wants_coreml else "reference"
    if backend == "coreml":
        if not coreml_ok:
            raise DeviceNotAvailable(
                f"backend coreml is not available: {why}; use the reference backend"
            )
        if device is not None:
            raise DeviceNotAvailable("--device applies to the reference backend, not to coreml")
        return Choice("coreml", compute_units or "all", "")
    if compute_units is not None:
        raise DeviceNotAvailable("compute units apply to the coreml backend, not to reference")
    device = device or "cpu"
    if not torch_device_available(device):
        raise DeviceNotAvailable(f"torch device {device!r} is not available on this machine")
    return Choice("reference", None, device)
