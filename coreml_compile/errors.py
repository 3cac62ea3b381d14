"""Every error the project raises on purpose, in one place.

Each carries enough to name what was wrong in one line; the CLI prints ``str(error)``
and exits non-zero, and shows the traceback only with ``--debug``.
"""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or its type's name if it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def with_type(exc: BaseException) -> str:
    """``"TypeName: first line"`` (just the type's name for an exception without a message):
    how an error from a library we called is quoted in one of ours."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


class CoreMLCompileError(Exception):
    """Base class: an expected failure with a one-line message for the user."""


class ModelFileError(CoreMLCompileError):
    """The model file is missing, does not define the model, or returns no nn.Module."""


class InputSpecError(CoreMLCompileError):
    """Example inputs or ``--input-shape`` are malformed or do not fit the model."""


class TraceError(CoreMLCompileError):
    """torch.export could not capture the model."""


class IRVerificationError(CoreMLCompileError):
    """The IR graph breaks an invariant (use before definition, type mismatch, ...)."""


class UnsupportedOpError(CoreMLCompileError):
    """An op has no Core ML lowering, or Core ML cannot run it for the chosen target.

    ``problems`` pairs each node's name with the reason; the message groups nodes that
    share a reason, so one cause reads as one clause however many nodes it hits.
    """

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        self.reasons = [f"{node}: {reason}" for node, reason in problems]
        grouped: dict[str, list[str]] = {}
        for node, reason in problems:
            grouped.setdefault(reason, []).append(node)
        clauses = []
        for reason, nodes in grouped.items():
            more = f" and {len(nodes) - 3} more" if len(nodes) > 3 else ""
            clauses.append(f"{reason} ({', '.join(nodes[:3])}{more})")
        super().__init__(f"Core ML cannot run {len(problems)} op(s): {'; '.join(clauses)}")


class LoweringError(CoreMLCompileError):
    """Lowering a node to MIL failed."""


class OutputPathError(CoreMLCompileError):
    """The output path cannot be written."""


class DeviceNotAvailable(CoreMLCompileError):
    """A backend, device or compute unit was asked for that this machine does not have."""


class PackageError(CoreMLCompileError):
    """A package is missing, malformed, tampered with, or asks for something unsafe.

    Raised while a package is read, before anything in it runs; the message names the
    file and what is wrong with it.
    """


class PlanFormatError(PackageError):
    """A package's execution plan or its items are missing, malformed or inconsistent."""


class ExecutionError(CoreMLCompileError):
    """Running a loaded package failed in one of its ops (named in the message)."""
