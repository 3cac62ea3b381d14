"""Tampered packages: every defect is a clear PackageError, and nothing outside runs.

Each case copies a real package, changes one thing the way an attacker or a broken
disk would, then loads it and runs it. It must fail with a PackageError (never another
exception type), and a canary file outside the package must be neither opened, read nor
written: the canary is watched with inotify, which sees every open from any code (our
Python, coremltools' C++ readers, torch), not only what Python's own hooks report.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
import struct
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import coreml_compile
from coreml_compile.errors import CoreMLCompileError, PackageError
from tests.ops.samples import Fn

_W = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))


def _block(a):
    return torch.relu(a * 0.5 + 1) - 0.25


def _partitioned(a):
    # linalg_solve has no Core ML lowering: a fallback step between two Core ML steps,
    # reading a constant (so arrays.bin is not empty).
    return _block(torch.linalg.solve(_block(a) + 3 * torch.eye(4), _W))


X = torch.randn(4, 4, generator=torch.Generator().manual_seed(0))
PLAN = "Data/com.coreml-compile/plan.json"
ARRAYS = "Data/com.coreml-compile/arrays.bin"
MODEL = "Data/com.apple.CoreML/model.mlmodel"
WEIGHTS = "Data/com.apple.CoreML/weights/weight.bin"


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bases")
    out = {}
    for name, target in (("ios16", "iOS16"), ("ios18", "iOS18")):
        compiled = coreml_compile.compile(Fn(_partitioned), (X,), minimum_deployment_target=target)
        out[name] = compiled.save(root / f"{name}.mlpackage")
    plain = coreml_compile.compile(torch.nn.Linear(64, 64).eval(), (torch.randn(2, 64),))
    out["plain"] = plain.save(root / "plain.mlpackage")
    return out


# -- the canary ---------------------------------------------------------------------

_IN_ACCESS, _IN_MODIFY, _IN_OPEN, _IN_CREATE, _IN_DELETE = 0x1, 0x2, 0x20, 0x100, 0x200


class Canary:
    """A file outside the package, and a directory beside it, watched for any access."""

    def __init__(self, folder: Path):
        folder.mkdir()
        self.path = folder / "canary.txt"
        self.secret = b"CANARY-7d1f: if you can read this, the package escaped\n"
        self.path.write_bytes(self.secret)
        self._fd = None
        libc_name = ctypes.util.find_library("c")
        if sys.platform.startswith("linux") and libc_name:
            libc = ctypes.CDLL(libc_name, use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK)
            if fd >= 0:
                mask = _IN_ACCESS | _IN_MODIFY | _IN_OPEN
                libc.inotify_add_watch(fd, str(self.path).encode(), mask)
                libc.inotify_add_watch(fd, str(folder).encode(), _IN_CREATE | _IN_DELETE)
                self._fd = fd

    def events(self) -> int:
        if self._fd is None:
            return 0
        count = 0
        while True:
            try:
                data = os.read(self._fd, 4096)
            except BlockingIOError:
                return count
            offset = 0
            while offset < len(data):
                _wd, _mask, _cookie, length = struct.unpack_from("iIII", data, offset)
                offset += 16 + length
                count += 1

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)

    def assert_untouched(self) -> None:
        assert self.events() == 0, "the canary outside the package was opened or written"
        assert self.path.read_bytes() == self.secret
        assert sorted(p.name for p in self.path.parent.iterdir()) == ["canary.txt"]


@pytest.fixture
def canary(tmp_path):
    c = Canary(tmp_path / "outside")
    c.events()  # drain our own set-up
    yield c
    c.close()


# -- tampering helpers --------------------------------------------------------------


def _json(pkg: Path, rel: str, change: Callable[[dict], None]) -> None:
    path = pkg / rel
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def _plan(change: Callable[[dict], None]) -> Callable[[Path, Canary], None]:
    return lambda pkg, _canary: _json(pkg, PLAN, change)


def _fallback_step(doc: dict) -> dict:
    return next(s for s in doc["steps"] if s["kind"] == "fallback")


def _node(change: Callable[[dict], None]) -> Callable[[Path, Canary], None]:
    """Change the fallback graph's aten node."""

    def edit(doc: dict) -> None:
        node = _fallback_step(doc)["graph"]["nodes"][0]
        change(node)

    return _plan(edit)


def _retarget(target: str, args: list, kwargs: dict | None = None, inputs=None):
    def change(node: dict) -> None:
        node["attrs"] = {"target": target, "args": args, "kwargs": kwargs or {}}
        if inputs is not None:
            node["inputs"] = inputs

    return _node(change)


def _manifest(change: Callable[[dict, Canary], None]) -> Callable[[Path, Canary], None]:
    def edit(pkg: Path, canary: Canary) -> None:
        path = pkg / "Manifest.json"
        doc = json.loads(path.read_text())
        change(doc, canary)
        path.write_text(json.dumps(doc))

    return edit


def _item(doc: dict, name: str) -> dict:
    return next(e for e in doc["itemInfoEntries"].values() if e["name"] == name)


def _replace_with_link(rel: str, target: Callable[[Canary], str]):
    def edit(pkg: Path, canary: Canary) -> None:
        (pkg / rel).unlink()
        os.symlink(target(canary), pkg / rel)

    return edit


def _write(rel: str, data: Callable[[bytes], bytes]):
    def edit(pkg: Path, _canary: Canary) -> None:
        path = pkg / rel
        path.write_bytes(data(path.read_bytes()))

    return edit


def _tensor(name: str, **change):
    def edit(doc: dict) -> None:
        entry = next(t for t in doc["tensors"] if t["name"] == name)
        entry.update(change)

    return _plan(edit)


def _fifo(rel: str):
    def edit(pkg: Path, _canary: Canary) -> None:
        (pkg / rel).unlink()
        os.mkfifo(pkg / rel)

    return edit


def _swap_steps(doc: dict) -> None:
    doc["steps"][0], doc["steps"][1] = doc["steps"][1], doc["steps"][0]


def _duplicate_output(doc: dict) -> None:
    doc["steps"][2]["outputs"] = list(doc["steps"][0]["outputs"])


# name -> (base package, tampering, text the error must hold)
CASES: dict[str, tuple[str, Callable[[Path, Canary], None], str]] = {
    # fallback ops: the allow-rule
    "from_file_reads_a_path": (
        "ios16",
        lambda pkg, c: _retarget(
            "aten::from_file.default", [str(c.path), False, 64], {}, inputs=[]
        )(pkg, c),
        "str argument",
    ),
    "copy_into_a_shared_file": (
        "ios16",
        _retarget("aten::copy_.default", [{"input": 0}, {"input": 1}]),
        "writes into",
    ),
    "out_variant": ("ios16", _retarget("aten::add.out", [{"input": 0}, {"input": 0}]), "writes"),
    "in_place_fill": ("ios16", _retarget("aten::fill_.Scalar", [{"input": 0}, 1.0]), "writes"),
    "view_aliases": ("ios16", _retarget("aten::view.default", [{"input": 0}, [16]]), "aliases"),
    "other_namespace_import": (
        "ios16",
        _retarget("import_module::os.default", [{"input": 0}]),
        "not the 'import_module' namespace",
    ),
    "load_library": (
        "ios16",
        _retarget("ops::load_library.default", ["libevil.so"]),
        "namespace",
    ),
    "dunder_attribute": (
        "ios16",
        _retarget("aten::__getattribute__.default", [{"input": 0}]),
        "not an operator name",
    ),
    "python_attribute_of_namespace": ("ios16", _retarget("aten::name.default", []), "no such"),
    "scalar_result": (
        "ios16",
        _retarget("aten::_local_scalar_dense.default", [{"input": 0}]),
        "returns a number",
    ),
    "storage_argument": (
        "ios16",
        _retarget("aten::set_.source_Storage", [{"input": 0}, {"input": 1}]),
        "writes",
    ),
    "huge_factory": (
        "ios16",
        _retarget("aten::zeros.default", [[100_000, 100_000, 100]], inputs=[]),
        "over the limit",
    ),
    "factory_bigger_than_declared": (
        "ios16",
        _retarget("aten::zeros.default", [[1000, 3]], inputs=[]),
        "declares outputs",
    ),
    "dtype_names_a_function": (
        "ios16",
        _retarget(
            "aten::linalg_solve.default",
            [{"input": 0}, {"input": 1}],
            {"left": {"torch.dtype": "load"}},
        ),
        "not a torch.dtype",
    ),
    "argument_reads_absent_input": (
        "ios16",
        _retarget("aten::linalg_solve.default", [{"input": 0}, {"input": 7}]),
        "absent",
    ),
    "argument_is_an_unknown_object": (
        "ios16",
        _retarget("aten::linalg_solve.default", [{"input": 0}, {"__class__": "os"}]),
        "neither a tensor",
    ),
    # the plan, whole
    "plan_not_json": ("ios16", _write(PLAN, lambda b: b"{not json"), "not valid JSON"),
    "plan_format_99": ("ios16", _plan(lambda d: d.update(format=99)), "format 99"),
    "plan_is_a_list": ("ios16", _write(PLAN, lambda b: b"[1, 2]"), "not a JSON object"),
    "step_kind_unknown": (
        "ios16",
        _plan(lambda d: d["steps"][1].update(kind="python")),
        "kind 'python'",
    ),
    "step_reads_undefined": (
        "ios16",
        _plan(lambda d: d["steps"][2].update(inputs=["nowhere"])),
        "before any step makes it",
    ),
    "steps_out_of_order": ("ios16", _plan(_swap_steps), "before any step makes it"),
    "tensor_made_twice": ("ios16", _plan(_duplicate_output), "already defined"),
    "output_never_made": (
        "ios16",
        _plan(lambda d: d["outputs"].append({"name": "ghost", "dtype": "float32", "shape": [1]})),
        "ghost",
    ),
    "declared_dtype_disagrees": ("ios16", _tensor("linalg_solve", dtype="int32"), "declares"),
    "declared_shape_disagrees": ("ios16", _tensor("add_1", shape=[2, 8]), "declares"),
    "negative_dim": ("ios16", _tensor("add_1", shape=[-4, 4]), "non-negative"),
    "absurd_size": ("ios16", _tensor("add_1", shape=[10**12, 10**12]), "over the limit"),
    "unknown_dtype": ("ios16", _tensor("add_1", dtype="object"), "unknown dtype"),
    "node_reads_undefined_value": (
        "ios16",
        _node(lambda n: n.update(inputs=["add_1", "missing"])),
        "undefined",
    ),
    "unknown_op_record": ("ios16", _node(lambda n: n.update(op="os_system")), "os_system"),
    "record_with_unknown_attribute": (
        "ios16",
        _node(lambda n: n.update(op="relu", inputs=["add_1"], attrs={"shell": "rm -rf /"})),
        "no attribute",
    ),
    "graph_outputs_disagree_with_step": (
        "ios16",
        _plan(lambda d: _fallback_step(d)["graph"].update(outputs=["add_1"])),
        "the plan says",
    ),
    "array_offset_past_blob": (
        "ios16",
        _plan(lambda d: _fallback_step(d)["graph"]["constants"][0].update(offset=1 << 40)),
        "past the end",
    ),
    "array_offset_negative": (
        "ios16",
        _plan(lambda d: _fallback_step(d)["graph"]["constants"][0].update(offset=-64)),
        "past the end",
    ),
    "arrays_truncated": ("ios16", _write(ARRAYS, lambda b: b[:8]), "declares"),
    "arrays_size_lies": ("ios16", _plan(lambda d: d.update(arrays_bytes=1 << 40)), "declares"),
    "strategy_tampered": (
        "ios16",
        _plan(lambda d: d["strategy"].update(fallback="rm -rf /")),
        "unknown fallback device",
    ),
    "strategy_wrong_type": (
        "ios16",
        _plan(lambda d: d["strategy"].update(min_coreml_nodes="many")),
        "min_coreml_nodes",
    ),
    "coreml_function_missing": (
        "ios18",
        _plan(lambda d: d["steps"][0].update(name="partition_7")),
        "partition_7",
    ),
    "nested_in_multifunction": (
        "ios18",
        _plan(lambda d: d["steps"][2].update(location="nested")),
        "lacks the Core ML partition partition_2",
    ),
    # paths and files
    "item_path_climbs_out": (
        "ios16",
        _manifest(lambda d, c: _item(d, "plan.json").update(path=f"../../../{c.path}")),
        "inside the package",
    ),
    "item_path_absolute": (
        "ios16",
        _manifest(lambda d, c: _item(d, "plan.json").update(path=str(c.path))),
        "inside the package",
    ),
    "plan_is_a_link_outside": (
        "ios16",
        _replace_with_link(PLAN, lambda c: str(c.path)),
        "outside the package",
    ),
    "weights_link_outside": (
        "plain",
        _replace_with_link(WEIGHTS, lambda c: str(c.path)),
        "outside the package",
    ),
    "plan_links_to_endless_device": (
        "ios16",
        _replace_with_link(PLAN, lambda c: "/dev/zero"),
        "outside the package",
    ),
    "plan_is_a_pipe": ("ios16", _fifo(PLAN), "not a regular file"),
    "manifest_garbage": ("ios16", _write("Manifest.json", lambda b: os.urandom(200)), "JSON"),
    "manifest_huge": (
        "ios16",
        _write("Manifest.json", lambda b: b" " * (2 << 20) + b),
        "over the limit",
    ),
    "manifest_root_missing": (
        "ios16",
        _manifest(lambda d, c: d.update(rootModelIdentifier="nope")),
        "root model",
    ),
    "manifest_entry_not_object": (
        "ios16",
        _manifest(lambda d, c: d["itemInfoEntries"].update(bad=[1, 2])),
        "needs path",
    ),
    "model_spec_garbage": ("plain", _write(MODEL, lambda b: os.urandom(len(b))), "model.mlmodel"),
    "model_spec_truncated": ("plain", _write(MODEL, lambda b: b[: len(b) // 3]), "model.mlmodel"),
    "weights_truncated": ("plain", _write(WEIGHTS, lambda b: b[: len(b) // 2]), "weight"),
    "weights_garbage_header": ("plain", _write(WEIGHTS, lambda b: os.urandom(len(b))), "weight"),
    "weights_empty": ("plain", _write(WEIGHTS, lambda b: b""), "weight"),
    "nested_package_missing": (
        "ios16",
        lambda pkg, c: shutil.rmtree(pkg / "Data/com.coreml-compile/partition_2.mlpackage"),
        "partition_2",
    ),
    "nested_manifest_climbs_out": (
        "ios16",
        lambda pkg, c: _json(
            pkg,
            "Data/com.coreml-compile/partition_2.mlpackage/Manifest.json",
            lambda d: _item(d, "model.mlmodel").update(path=f"../../../../../{c.path}"),
        ),
        "inside the package",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_tampered_package_is_refused(case, bases, canary, tmp_path):
    base, tamper, message = CASES[case]
    pkg = tmp_path / "pkg.mlpackage"
    shutil.copytree(bases[base], pkg, symlinks=True)
    tamper(pkg, canary)
    canary.events()  # the tampering itself may touch the canary's folder; reset
    with pytest.raises(PackageError) as info:
        loaded = coreml_compile.load(pkg)
        loaded.predict(
            {
                loaded.input_names[0]: np.zeros(
                    loaded.input_specs()[loaded.input_names[0]][0], np.float32
                )
            }
        )
    assert message in str(info.value), str(info.value)
    assert "\n" not in str(info.value)
    canary.assert_untouched()


def test_the_catalogue_is_large_enough():
    assert len(CASES) >= 30


def test_untampered_bases_load_and_run(bases, canary):
    for name in ("ios16", "ios18"):
        loaded = coreml_compile.load(bases[name])
        got = loaded(X)
        torch.testing.assert_close(got, _partitioned(X), atol=2e-2, rtol=2e-2)
    canary.assert_untouched()


def test_the_canary_sees_a_read(canary):
    # The watch works: an ordinary read of the canary is noticed.
    canary.path.read_bytes()
    if sys.platform.startswith("linux"):
        assert canary.events() > 0


def test_cli_reports_a_tampered_package_in_one_line(bases, tmp_path):
    from click.testing import CliRunner

    from coreml_compile.cli.main import cli

    pkg = tmp_path / "pkg.mlpackage"
    shutil.copytree(bases["ios16"], pkg)
    _retarget("aten::copy_.default", [{"input": 0}, {"input": 1}])(pkg, None)
    result = CliRunner().invoke(cli, ["run", str(pkg)])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "internal error" not in lines[0]


def test_compiler_refuses_a_model_needing_a_refused_op():
    # segment_reduce takes a string argument (reduce): no package may run it on torch,
    # and Core ML has no lowering for it, so the compile stops with the reason.
    lengths = torch.tensor([2, 3])

    def segments(a):
        return torch.segment_reduce(a, "sum", lengths=lengths) + 1

    with pytest.raises(CoreMLCompileError, match="may not run on torch either: .*str"):
        coreml_compile.compile(Fn(segments), (torch.rand(5),))


def test_in_place_and_view_fallbacks_run_as_functional_twins(tmp_path):
    # erfinv_ (in place) and as_strided (a view; reading out of order it is no
    # reshape) have no Core ML lowering and may not run from a package as traced; their
    # allowed twins compute the same values.
    def model(a):
        b = torch.tanh(a) * 0.5
        b.erfinv_()
        return b.as_strided((5, 4), (1, 5)) * 2

    x = torch.randn(4, 5)
    compiled = coreml_compile.compile(Fn(model), (x,), precision="fp32")
    targets = sorted(n.attrs["target"] for n in compiled.graph.nodes if n.op == "aten")
    assert targets == ["aten::as_strided_copy.default", "aten::erfinv.default"]
    loaded = coreml_compile.load(compiled.save(tmp_path / "m.mlpackage"))
    torch.testing.assert_close(loaded(x), model(x.clone()))
