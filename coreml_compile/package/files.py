"""A package's files, checked before any of them is read.

An ``.mlpackage`` is a folder: ``Manifest.json`` lists its items (each a path under
``Data/``, an author and a name) and names the root model. Everything a loader reads is
reached through this list, so the checks here come first:

- every path in the folder is a regular file or a folder; a symbolic link is allowed
  only if it stays inside the package; devices, pipes and sockets are refused;
- ``Manifest.json`` is small, well-formed JSON of the expected shape, and each item path
  is relative, has no ``..`` and resolves inside ``Data/``;
- reads are bounded: by a cap for JSON, by the size the package declares for binary
  items.

Every defect is a :class:`~coreml_compile.errors.PackageError` naming the file.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from coreml_compile.errors import PackageError

MANIFEST = "Manifest.json"
# Caps on what a package may make the loader read or walk.
MAX_MANIFEST_BYTES = 1 << 20
MAX_JSON_BYTES = 1 << 28
MAX_ENTRIES = 100_000


@dataclass(frozen=True)
class Item:
    identifier: str
    name: str
    author: str
    path: Path  # resolved, inside the package's Data/ folder


class PackageFiles:
    """The checked contents of the package folder at ``root``."""

    def __init__(self, root: str | os.PathLike):
        given = Path(root)
        if not given.exists():
            raise PackageError(f"package not found: {given}")
        if not given.is_dir():
            raise PackageError(f"{given} is not an .mlpackage folder")
        self.root = given.resolve()
        self.label = str(given)
        self._check_tree()
        self.items, self.root_model = self._read_manifest()

    # -- the folder -------------------------------------------------------------------

    def _check_tree(self) -> None:
        count = 0
        for folder, dirs, files in os.walk(self.root, followlinks=False):
            for name in [*dirs, *files]:
                count += 1
                if count > MAX_ENTRIES:
                    raise PackageError(f"{self.label} holds more than {MAX_ENTRIES:,} files")
                self._check_entry(Path(folder) / name)

    def _check_entry(self, path: Path) -> None:
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            target = path.resolve()
            if not _inside(target, self.root):
                raise PackageError(
                    f"{self.label}: {self._rel(path)} is a link to {target}, outside the package"
                )
            mode = target.stat().st_mode if target.exists() else 0
            if target.exists() and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise PackageError(f"{self.label}: {self._rel(path)} is not a regular file")
        elif not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            raise PackageError(
                f"{self.label}: {self._rel(path)} is not a regular file or folder "
                "(devices, pipes and sockets are refused)"
            )

    def _rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    # -- the manifest -----------------------------------------------------------------

    def _read_manifest(self) -> tuple[list[Item], Item]:
        path = self.root / MANIFEST
        if not path.is_file():
            raise PackageError(f"{self.label} is not an .mlpackage (no {MANIFEST})")
        doc = self.read_json(path, MAX_MANIFEST_BYTES)
        if not isinstance(doc, dict):
            raise PackageError(f"{self.label}: {MANIFEST} is not a JSON object")
        entries = doc.get("itemInfoEntries")
        root_id = doc.get("rootModelIdentifier")
        if not isinstance(doc.get("fileFormatVersion"), str):
            raise PackageError(f"{self.label}: {MANIFEST} has no fileFormatVersion")
        if not isinstance(entries, dict) or not entries:
            raise PackageError(f"{self.label}: {MANIFEST} lists no items")
        items = []
        data = self.root / "Data"
        for identifier, entry in entries.items():
            if not isinstance(entry, dict) or not all(
                isinstance(entry.get(k), str) for k in ("path", "name", "author")
            ):
                raise PackageError(
                    f"{self.label}: {MANIFEST} item {identifier!r} needs path, name and author"
                )
            path = self._item_path(data, entry["path"])
            if not path.exists():
                raise PackageError(
                    f"{self.label}: {MANIFEST} lists {entry['name']!r} at {entry['path']}, "
                    "which is missing"
                )
            items.append(Item(identifier, entry["name"], entry["author"], path))
        root = next((i for i in items if i.identifier == root_id), None)
        if root is None:
            raise PackageError(
                f"{self.label}: {MANIFEST} names root model {root_id!r}, which it does not list"
            )
        if not root.path.is_file():
            raise PackageError(f"{self.label}: the root model {root.path.name} is missing")
        return items, root

    def _item_path(self, data: Path, text: str) -> Path:
        pure = PurePosixPath(text)
        if not text or pure.is_absolute() or ".." in pure.parts or "\\" in text or "\0" in text:
            raise PackageError(
                f"{self.label}: {MANIFEST} item path {text!r} does not stay inside the package"
            )
        resolved = (data / pure).resolve()
        if not _inside(resolved, data.resolve()):
            raise PackageError(
                f"{self.label}: {MANIFEST} item path {text!r} resolves outside the package"
            )
        return resolved

    def find(self, name: str, author: str) -> Item | None:
        return next((i for i in self.items if i.name == name and i.author == author), None)

    # -- bounded reads ----------------------------------------------------------------

    def read_bytes(self, path: Path, size: int | None = None, limit: int = MAX_JSON_BYTES) -> bytes:
        """The file's bytes: exactly ``size`` of them if given, else at most ``limit``."""
        if not _inside(path.resolve(), self.root):
            raise PackageError(f"{self.label}: {path} is outside the package")
        if not path.is_file():
            raise PackageError(f"{self.label}: {self._rel(path)} is missing or not a file")
        with open(path, "rb") as f:
            actual = os.fstat(f.fileno()).st_size
            if size is not None and actual != size:
                raise PackageError(
                    f"{self.label}: {self._rel(path)} holds {actual:,} bytes; the package "
                    f"declares {size:,}"
                )
            if size is None and actual > limit:
                raise PackageError(
                    f"{self.label}: {self._rel(path)} is {actual:,} bytes, over the limit of "
                    f"{limit:,}"
                )
            data = f.read((size if size is not None else limit) + 1)
        if len(data) != actual:
            raise PackageError(f"{self.label}: {self._rel(path)} changed while it was read")
        return data

    def read_json(self, path: Path, limit: int = MAX_JSON_BYTES) -> Any:
        text = self.read_bytes(path, limit=limit)
        try:
            return json.loads(text.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise PackageError(
                f"{self.label}: {self._rel(path)} is not valid JSON: {exc}"
            ) from None


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents
