"""Same model, same options, same bytes: making a written package reproducible.

coremltools writes two things that differ from one run to the next:

- ``Manifest.json`` names each item by a random UUID (``uuid4``);
- ``model.mlmodel`` is a protobuf whose map fields (user-defined metadata, op inputs
  and attributes) serialise in an order that changes between processes.

``normalise(package)`` rewrites both in place, once the package is complete: item
identifiers become UUIDs derived from the item (its author, name and path), manifests are
written with sorted keys, and every model protobuf is re-serialised deterministically.
Nested packages (partitions of a partitioned package) are normalised the same way. The
rest is deterministic already: weights are written in program order, the plan is JSON
built in a fixed order, and ``lower.to_mlmodel`` drops coremltools' conversion date.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

MANIFEST = "Manifest.json"
# Fixed namespace for item identifiers: uuid5(namespace, "author/name/path").
_ITEM_NAMESPACE = uuid.UUID("4d1c5e43-2b7e-5c0a-9a51-636f72656d6c")


def item_id(author: str, name: str, path: str) -> str:
    """The identifier of a package item, derived from what names it."""
    return str(uuid.uuid5(_ITEM_NAMESPACE, f"{author}/{name}/{path}"))


def read_manifest(package: str | os.PathLike) -> dict[str, Any]:
    return json.loads((Path(package) / MANIFEST).read_text())


def item_path(package: str | os.PathLike, name: str) -> Path | None:
    """Where the item called ``name`` lives in ``package`` (None if it has none)."""
    entries = read_manifest(package).get("itemInfoEntries", {})
    for entry in entries.values():
        if entry.get("name") == name:
            return Path(package) / "Data" / entry["path"]
    return None


def normalise(package: str | os.PathLike) -> None:
    """Rewrite ``package`` (and the packages nested in it) into its reproducible form."""
    package = Path(package)
    doc = read_manifest(package)
    entries = doc.get("itemInfoEntries", {})
    renamed = {
        old: item_id(e.get("author", ""), e.get("name", ""), e.get("path", ""))
        for old, e in entries.items()
    }
    if len(set(renamed.values())) != len(renamed):  # two items alike: keep what they had
        renamed = {old: old for old in entries}
    doc["itemInfoEntries"] = {renamed[old]: entry for old, entry in entries.items()}
    if doc.get("rootModelIdentifier") in renamed:
        doc["rootModelIdentifier"] = renamed[doc["rootModelIdentifier"]]
    _rewrite(package / MANIFEST, (json.dumps(doc, indent=4, sort_keys=True) + "\n").encode())

    for entry in entries.values():
        path = package / "Data" / entry.get("path", "")
        if path.is_file() and path.suffix == ".mlmodel":
            _rewrite(path, _deterministic_model_bytes(path.read_bytes()))
        elif path.is_dir() and path.suffix == ".mlpackage" and (path / MANIFEST).is_file():
            normalise(path)


def _deterministic_model_bytes(data: bytes) -> bytes:
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    spec.ParseFromString(data)
    return spec.SerializeToString(deterministic=True)


def _rewrite(path: Path, data: bytes) -> None:
    """Replace a file's bytes (as a new file: its mode follows the umask, not a temp file's)."""
    path.unlink()
    path.write_bytes(data)
