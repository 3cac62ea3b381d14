"""Writing packages safely: build beside the destination, then rename into place.

A failed or interrupted save never leaves a half-written package at the output path,
and an existing package there is only replaced once the new one is complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from coreml_compile.errors import OutputPathError


def check_writable(path: str | os.PathLike) -> Path:
    """Fail early, before compiling, if ``path`` cannot be written."""
    path = Path(path)
    if path.suffix != ".mlpackage":
        raise OutputPathError(f"output path {path} must end in .mlpackage")
    parent = path.resolve().parent
    if not parent.is_dir():
        raise OutputPathError(f"cannot write {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputPathError(f"cannot write {path}: folder {parent} is not writable")
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"cannot write {path}: a file (not a package) is in the way")
    return path


def write_atomically(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then move it into place."""
    path = check_writable(path)
    parent = path.resolve().parent
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=parent))
    tmp = tmp_dir / path.name
    try:
        write(tmp)
        if path.exists():
            old = tmp_dir / (path.name + ".old")
            os.replace(path, old)
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputPathError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return path


def package_size(path: str | os.PathLike) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total
