"""The execution plan of a partitioned model, and how a package stores it.

A model with ops Core ML cannot run is saved as one ``.mlpackage`` that still opens in
coremltools:

- The Core ML partitions are ML Program functions. From iOS18/macOS15 on they are the
  functions ``partition_<i>`` of one multifunction model, the package's root model.
  Before that, Core ML has no multifunction models: the first Core ML partition is the
  root model, and each further one is a complete nested ``.mlpackage`` stored as a
  package item (coremltools and Core ML open it by path, as any package). A model
  with no Core ML partition at all gets a root model that passes its inputs through,
  so the package still opens.
- The plan (``plan.json``: the ordered partitions, the tensors passed between them,
  why each node fell back) and the fallback partitions' IR graphs are items by the
  author ``com.coreml-compile``; the graphs' constants are in ``arrays.bin`` (see
  ``compiler/serialize.py``). Nothing is pickled.

A model Core ML runs whole is a plain package with no extra items.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from coreml_compile.compiler.plan import PLAN_FORMAT, HybridPlan, Step
from coreml_compile.compiler.serialize import ArrayWriter
from coreml_compile.errors import PlanFormatError
from coreml_compile.package.files import PackageFiles
from coreml_compile.package.validate import read_plan

AUTHOR = "com.coreml-compile"
PLAN_ITEM = "plan.json"
ARRAYS_ITEM = "arrays.bin"


def write_items(package: Path, plan: HybridPlan, nested: dict[str, Any]) -> None:
    """Add the plan, the fallback graphs' arrays and nested Core ML packages to ``package``.

    ``nested`` maps a step name to the coremltools MLModel of that partition. Items the
    package has already (coremltools copies them along when a loaded package is saved
    again) are overwritten in place.
    """
    from coreml_compile.compiler.mil import quiet_coremltools

    arrays = ArrayWriter()
    doc = plan.to_json(arrays)
    with tempfile.TemporaryDirectory(dir=package.parent) as tmp:
        staging = Path(tmp)
        (staging / PLAN_ITEM).write_text(json.dumps(doc, indent=1, allow_nan=True))
        (staging / ARRAYS_ITEM).write_bytes(arrays.getvalue())
        _put(package, staging / PLAN_ITEM, "execution plan")
        _put(package, staging / ARRAYS_ITEM, "fallback weights")
        for name, mlmodel in nested.items():
            item = staging / f"{name}.mlpackage"
            with quiet_coremltools():
                mlmodel.save(str(item))
            _put(package, item, f"Core ML partition {name}")


def _put(package: Path, source: Path, description: str) -> None:
    """Make ``source`` (a file or folder) the package item of that name by our author."""
    from coremltools.libmodelpackage import ModelPackage

    target = _item_path(package, source.name)
    if target is None:
        package_api = ModelPackage(str(package))
        package_api.addItem(str(source), source.name, AUTHOR, description)
        target = Path(package_api.findItemByNameAuthor(source.name, AUTHOR).path())
    if source.is_dir():
        # addItem copies a folder's top level only; a nested package needs all of it.
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)
    else:
        shutil.copyfile(source, target)


def _item_path(package: Path, name: str) -> Path | None:
    from coremltools.libmodelpackage import ModelPackage

    try:
        item = ModelPackage(str(package)).findItemByNameAuthor(name, AUTHOR)
    except Exception:
        return None
    return Path(item.path()) if item is not None else None


def read_items(files: PackageFiles) -> tuple[HybridPlan, dict[str, Path]] | None:
    """The plan of a partitioned package and its nested packages' paths, or None.

    ``files`` is the checked package folder: items are found through its manifest and
    read with bounds.
    """
    plan_item = files.find(PLAN_ITEM, AUTHOR)
    if plan_item is None:
        return None
    arrays_item = files.find(ARRAYS_ITEM, AUTHOR)
    if arrays_item is None:
        raise PlanFormatError(f"{files.label} has a plan but no {ARRAYS_ITEM}")
    doc = files.read_json(plan_item.path)
    if not isinstance(doc, dict):
        raise PlanFormatError(f"{files.label}: {PLAN_ITEM} is not a JSON object")
    if doc.get("format") != PLAN_FORMAT:
        raise PlanFormatError(
            f"{files.label}: the plan has format {doc.get('format')!r}; this version reads "
            f"{PLAN_FORMAT} (compile the model again)"
        )
    size = doc.get("arrays_bytes")
    if type(size) is not int or size < 0:
        raise PlanFormatError(f"{files.label}: the plan does not declare the size of {ARRAYS_ITEM}")
    # A writable copy of the arrays: torch tensors are then views of it, not copies.
    blob = bytearray(files.read_bytes(arrays_item.path, size=size))
    plan = read_plan(HybridPlan, Step, doc, blob)
    nested = {}
    for step in plan.steps:
        if step.kind == "coreml" and step.location == "nested":
            item = files.find(f"{step.name}.mlpackage", AUTHOR)
            if item is None or not item.path.is_dir():
                raise PlanFormatError(f"{files.label} lacks the Core ML partition {step.name}")
            nested[step.name] = item.path
    return plan, nested
