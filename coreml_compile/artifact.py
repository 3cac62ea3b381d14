"""Writing packages safely: build beside the destination, then swap it into place.

- A failed or interrupted save never leaves a half-written package at the output path,
  and an existing package there is only replaced once the new one is complete.
- Nothing is left behind: the staging folder beside the output (``.NAME.<host>-<pid>-*``)
  is removed on any failure, and the next save to that path removes the staging folders
  of processes that died (killed) while saving. coremltools' scratch package in TMPDIR
  (``coreml_compile-<host>-<pid>-*``, see ``scratch_dir``) goes once the package is
  saved, on failure, when its model is dropped, and, for a killed process, at the next
  compile.
- Readers never see the path missing or half there: an existing package is exchanged
  with the new one in one step (Linux ``renameat2(RENAME_EXCHANGE)``, macOS
  ``renamex_np(RENAME_SWAP)``; elsewhere, two renames with a moment in between), and
  ``read_consistently`` (used by ``load``) reads again if a swap fell mid-read.
- Saves racing to one path all succeed and the last one to finish wins, whole: each swap
  is atomic, and each writer deletes only the package it swapped out.
- The package is written in its reproducible form (see ``reproducible.normalise``).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import os
import platform
import re
import shutil
import socket
import sys
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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


def write_atomically(
    path: str | os.PathLike,
    write: Callable[[Path], None],
    written: Callable[[tuple], None] | None = None,
) -> Path:
    """Call ``write(tmp)`` on a staging path beside ``path``, then swap it into place.

    ``written`` is told the package's ``package_identity`` just before the swap.
    """
    from coreml_compile import reproducible

    path = check_writable(path)
    parent = path.resolve().parent
    sweep(parent, f".{path.name}.")
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.{_owner_tag()}-", dir=parent))
    tmp = staging / path.name
    try:
        write(tmp)
        reproducible.normalise(tmp)
        if written is not None:
            written(package_identity(tmp))
        _install(tmp, path, staging)
    except OSError as exc:
        raise OutputPathError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        # The staging folder now holds what was at ``path`` before (or a failed write).
        shutil.rmtree(staging, ignore_errors=True)
    return path


def package_size(path: str | os.PathLike) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def read_consistently(path: str | os.PathLike, read: Callable[[], Any], attempts: int = 8) -> Any:
    """``read()`` the package at ``path`` as one version, though writers may replace it.

    A save swaps a whole package in at once, but a reader opens its files one by one: a
    swap in between would pair one version's model with another's weights. The folder at
    ``path`` holds new files after each swap (``package_identity``), so a read that saw
    the same ones before and after saw one version; otherwise it is done again.
    """
    for _ in range(attempts):
        before = _folder_identity(path)
        try:
            result = read()
        except Exception:
            if before is not None and _folder_identity(path) != before:
                continue  # replaced while being read: read the new one
            raise
        if before is None or _folder_identity(path) == before:
            return result
    from coreml_compile.errors import PackageError

    raise PackageError(f"{path} was replaced {attempts} times while being read; try again")


def _folder_identity(path: str | os.PathLike) -> tuple | None:
    try:
        return package_identity(path)
    except OSError:
        return None


# -- leftovers of dead processes -------------------------------------------------------


def _owner_tag(pid: int | None = None) -> str:
    """``<host>-<pid>``: which process owns a staging or scratch folder."""
    host = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
    return f"{host}-{os.getpid() if pid is None else pid}"


def _alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # no cheap check: never remove what may be in use
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: someone else's process
        return True
    return True


def sweep(folder: str | os.PathLike, prefix: str) -> list[Path]:
    """Remove ``folder/<prefix><host>-<pid>-*`` folders of dead processes on this host."""
    host = _owner_tag().split("-")[0]
    pattern = re.compile(re.escape(prefix) + r"([0-9a-f]{8})-(\d+)-[A-Za-z0-9_]+$")
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        match = pattern.match(name)
        if match is None or match.group(1) != host or _alive(int(match.group(2))):
            continue
        leftover = Path(folder) / name
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
            removed.append(leftover)
    return removed


# -- putting the package in place ------------------------------------------------------

AT_FDCWD = -100
_LINUX_NOREPLACE, _LINUX_EXCHANGE = 1, 2
_MACOS_SWAP, _MACOS_EXCL = 0x2, 0x4
# renameat2's number where libc lacks the wrapper (glibc < 2.28, musl < 1.2.?).
_SYS_RENAMEAT2 = {"x86_64": 316, "aarch64": 276, "arm64": 276, "i686": 353, "i386": 353}
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV}


def _libc() -> Any:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None


_LIBC = _libc() if os.name == "posix" else None


def _rename_flags(src: Path, dst: Path, flags: str) -> bool | None:
    """Rename with ``flags`` ("exchange" or "noreplace") in one atomic step.

    True when done; None when this system or filesystem cannot; OSError otherwise.
    """
    if _LIBC is None:
        return None
    a, b = os.fsencode(src), os.fsencode(dst)
    if sys.platform == "darwin":
        fn = getattr(_LIBC, "renamex_np", None)
        if fn is None:
            return None
        result = fn(a, b, ctypes.c_uint(_MACOS_SWAP if flags == "exchange" else _MACOS_EXCL))
    elif sys.platform.startswith("linux"):
        bits = ctypes.c_uint(_LINUX_EXCHANGE if flags == "exchange" else _LINUX_NOREPLACE)
        fn = getattr(_LIBC, "renameat2", None)
        if fn is not None:
            result = fn(AT_FDCWD, a, AT_FDCWD, b, bits)
        elif platform.machine() in _SYS_RENAMEAT2:
            number = ctypes.c_long(_SYS_RENAMEAT2[platform.machine()])
            at = ctypes.c_int(AT_FDCWD)
            result = _LIBC.syscall(number, at, a, at, b, bits)
        else:
            return None
    else:
        return None
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return None
    raise OSError(code, os.strerror(code), str(dst))


def _install(new: Path, path: Path, staging: Path) -> None:
    """Make ``new`` the package at ``path``; whatever was there ends up in ``staging``."""
    for attempt in range(20):
        try:
            if os.path.lexists(path):
                if _rename_flags(new, path, "exchange"):
                    return
                # No atomic exchange here: move the old package aside, then rename.
                os.rename(path, staging / f"{path.name}.old{attempt}")
                os.rename(new, path)
                return
            done = _rename_flags(new, path, "noreplace")
            if done is None:  # renames onto an empty folder only: a full one fails
                os.rename(new, path)
            return
        except FileNotFoundError:
            if not new.exists():
                raise
            continue  # ``path`` vanished in between (another writer): try again
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            continue  # ``path`` appeared in between (another writer): swap with it
    raise OSError(errno.EBUSY, "other processes keep replacing it", str(path))


# -- coremltools' scratch package ------------------------------------------------------

SCRATCH_PREFIX = "coreml_compile-"
_convert_lock = threading.Lock()


def scratch_dir() -> Path:
    """A new folder in TMPDIR for coremltools' package of one model (named by its owner).

    Leftovers of dead processes are removed first.
    """
    sweep(tempfile.gettempdir(), SCRATCH_PREFIX)
    return Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{_owner_tag()}-"))


@contextlib.contextmanager
def coremltools_temp_files_in(folder: Path) -> Iterator[None]:
    """Make ``ct.convert``'s temporary weights folder and files land in ``folder``.

    (They are removed by coremltools as it finishes; a killed process leaves them,
    and ``sweep`` then finds them by the folder's name.) One conversion at a time.
    """
    import coremltools.converters.mil.converter as converter
    import coremltools.models.utils as utils

    class _InFolder:
        def __getattr__(self, name: str) -> Any:
            return getattr(tempfile, name)

        def TemporaryDirectory(self, *args: Any, **kwargs: Any) -> Any:  # noqa: N802
            kwargs.setdefault("dir", folder)
            return tempfile.TemporaryDirectory(*args, **kwargs)

        def NamedTemporaryFile(self, *args: Any, **kwargs: Any) -> Any:  # noqa: N802
            kwargs.setdefault("dir", folder)
            return tempfile.NamedTemporaryFile(*args, **kwargs)

        def mkdtemp(self, *args: Any, **kwargs: Any) -> str:
            kwargs.setdefault("dir", folder)
            return tempfile.mkdtemp(*args, **kwargs)

    with _convert_lock:
        saved = {m: getattr(m, "_tempfile", None) for m in (converter, utils)}
        for module in saved:
            module._tempfile = _InFolder()
        try:
            yield
        finally:
            for module, original in saved.items():
                module._tempfile = original


# -- the package a compiled model reads from -------------------------------------------
#
# coremltools' MLModel copies its package folder when saved, and Core ML reads weights
# from it. Ours starts in a scratch folder (TMPDIR); once saved, the model reads from the
# saved package instead and the scratch folder goes. Should that package be removed or
# replaced later, the model rebuilds its own from its MIL program (same bytes) when it is
# next saved or its weights are asked for.


def own(mlmodel: Any, scratch: Path, rebuild: Callable[[], Any]) -> None:
    """Tie ``mlmodel`` (its package in ``scratch``) to the compile that made it.

    ``scratch`` is removed when the model is dropped (or at exit), or once it is saved;
    ``rebuild()`` makes the same model again, in a new scratch folder.
    """
    mlmodel.__class__ = _owned_class(type(mlmodel))
    mlmodel._cc_rebuild = rebuild
    mlmodel._cc_source = None  # None: the package in the scratch folder
    remove_with(mlmodel, scratch)


def remove_with(mlmodel: Any, scratch: Path) -> None:
    """Remove ``scratch`` (the folder of ``mlmodel``'s package) once the model is dropped."""
    mlmodel._cc_scratch = str(scratch)
    mlmodel._cc_cleanup = weakref.finalize(mlmodel, shutil.rmtree, str(scratch), True)


_OWNED: dict[type, type] = {}


def _owned_class(base: type) -> type:
    if getattr(base, "_cc_owned", False):
        return base
    if base not in _OWNED:

        class Owned(base):  # type: ignore[misc, valid-type]
            _cc_owned = True

            @property
            def weights_dir(self) -> Any:
                _ensure_source(self)
                return self._weights_dir

            def save(self, save_path: str) -> Any:
                _ensure_source(self)
                return super().save(save_path)

        Owned.__name__ = Owned.__qualname__ = base.__name__
        _OWNED[base] = Owned
    return _OWNED[base]


def _ensure_source(mlmodel: Any) -> None:
    """Rebuild the model's package if the one it reads from is gone or replaced."""
    path = mlmodel.package_path
    try:
        if mlmodel._cc_source is None:
            ok = os.path.isdir(path)
        else:
            ok = package_identity(path) == mlmodel._cc_source
    except OSError:
        ok = False
    if ok:
        return
    fresh = mlmodel._cc_rebuild()
    fresh._cc_cleanup.detach()  # the folder is this model's now
    mlmodel.package_path = fresh.package_path
    mlmodel._weights_dir = fresh._weights_dir
    mlmodel._cc_source = None
    remove_with(mlmodel, Path(fresh._cc_scratch))


def package_identity(package: str | os.PathLike) -> tuple:
    """Which package is at this path: its folder, model and weights files.

    Renames keep it; a new save changes it (new files). Not the folder's times, nor the
    manifest: coremltools rewrites ``Manifest.json`` (same bytes) whenever it opens one.
    """
    package = Path(package)
    folder = os.stat(package)
    identity: tuple = (folder.st_dev, folder.st_ino)
    data = package / "Data" / "com.apple.CoreML"
    for file in (data / "model.mlmodel", data / "weights" / "weight.bin"):
        try:
            s = os.stat(file)
        except FileNotFoundError:
            identity += (None,)
            continue
        identity += (s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns)
    return identity


def adopt(mlmodel: Any, package: str | os.PathLike) -> None:
    """Make a compiled ``mlmodel`` read from its saved ``package``; drop its scratch folder.

    Models loaded from a package (not compiled here) are left as they are.
    """
    if not getattr(mlmodel, "_cc_owned", False):
        return
    package = Path(package).resolve()
    mlmodel.package_path = str(package)
    weights = package / "Data" / "com.apple.CoreML" / "weights"
    mlmodel._weights_dir = str(weights) if weights.is_dir() else None
    mlmodel._cc_source = package_identity(package)
    mlmodel._cc_cleanup()  # removes the scratch folder now
