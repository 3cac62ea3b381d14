"""coreml-compile: PyTorch models in, Core ML packages out, and a runtime that runs them.

The heavy imports (torch, coremltools) happen on first use, so that importing the
package or asking the CLI for ``--help`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from coreml_compile.version import __version__

if TYPE_CHECKING:
    from coreml_compile.api import CompiledModel
    from coreml_compile.compiler.strategy import HybridExecutionStrategy

__all__ = [
    "CompiledModel",
    "HybridExecutionStrategy",
    "__version__",
    "compile",
    "devices",
    "load",
]


def compile(model: Any, example_inputs: Any = None, **options: Any) -> CompiledModel:  # noqa: A001
    """Trace ``model`` with torch.export and compile it; see :func:`coreml_compile.api.compile`."""
    from coreml_compile.api import compile as _compile

    return _compile(model, example_inputs, **options)


def load(path: str, **options: Any) -> CompiledModel:
    """Load a saved package; see :func:`coreml_compile.api.load`."""
    from coreml_compile.api import load as _load

    return _load(path, **options)


def devices() -> list:
    """What this machine can run packages on (Core ML compute units, torch devices)."""
    from coreml_compile.runtime.devices import devices as _devices

    return _devices()


def __getattr__(name: str) -> Any:
    if name == "CompiledModel":
        from coreml_compile.api import CompiledModel

        return CompiledModel
    if name == "HybridExecutionStrategy":
        from coreml_compile.compiler.strategy import HybridExecutionStrategy

        return HybridExecutionStrategy
    raise AttributeError(name)
