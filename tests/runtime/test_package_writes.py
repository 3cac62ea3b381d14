"""Writing packages: reproducible bytes, no litter, safe replacement under readers and races.

Several tests run separate Python processes on purpose: protobuf map order and UUIDs
differ between processes, a SIGKILL can only hit another process, and readers and
writers racing for real need more than one interpreter.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import coreml_compile
from coreml_compile import artifact, reproducible

ROOT = Path(__file__).resolve().parents[2]

# Models the subprocesses build: a plain one (conv, linear, metadata maps) and a
# partitioned one (torch.linalg.inv has no Core ML lowering: a fallback between two
# Core ML partitions; nested packages before iOS18, one multifunction program after).
MODELS = """
import sys, torch
from torch import nn
import coreml_compile

class Plain(nn.Module):
    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1)).softmax(-1)

class Partitioned(nn.Module):
    def forward(self, a):
        b = torch.relu(a * 0.5 + 1) + 3
        return torch.relu(torch.linalg.inv(b) * 0.5 + 1) - 0.25

def plain(seed=0, precision="fp32"):
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    return coreml_compile.compile(Plain(seed).eval(), (x,), precision=precision), x

def partitioned(target):
    a = torch.randn(4, 4, generator=torch.Generator().manual_seed(0)) + 4 * torch.eye(4)
    return coreml_compile.compile(Partitioned(), (a,), minimum_deployment_target=target), a
"""


def _python(script: str, *args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    code = MODELS + textwrap.dedent(script)
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=full_env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out


def _files(package: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(package)): p.read_bytes()
        for p in sorted(package.rglob("*"))
        if p.is_file()
    }


# -- reproducible bytes ----------------------------------------------------------------

WRITE_ALL = """
out = sys.argv[1]
plain(precision="fp16")[0].save(f"{out}/plain.mlpackage")
partitioned("iOS16")[0].save(f"{out}/part16.mlpackage")
partitioned("iOS18")[0].save(f"{out}/part18.mlpackage")
"""


@pytest.mark.slow
def test_two_processes_write_byte_identical_packages(tmp_path):
    runs = [tmp_path / "one", tmp_path / "two"]
    procs = []
    for seed, run in zip(("1", "2"), runs, strict=True):  # different hash seeds
        run.mkdir()
        procs.append(_python(WRITE_ALL, str(run), env={"PYTHONHASHSEED": seed}))
    for proc in procs:
        _finish(proc)
    for name in ("plain", "part16", "part18"):
        one, two = (_files(run / f"{name}.mlpackage") for run in runs)
        assert sorted(one) == sorted(two), name
        for rel in one:
            assert one[rel] == two[rel], f"{name}: {rel} differs between two processes"
    # Partitioned before iOS18: a plan, arrays and nested packages, normalised too.
    part16 = _files(runs[0] / "part16.mlpackage")
    assert any(rel.endswith("plan.json") for rel in part16)
    nested = [rel for rel in part16 if rel.count("Manifest.json") and rel != "Manifest.json"]
    assert nested, sorted(part16)
    # No random UUIDs left: every identifier is the one derived from its item.
    for manifest in (runs[0] / "part16.mlpackage").rglob("Manifest.json"):
        doc = reproducible.read_manifest(manifest.parent)
        for ident, e in doc["itemInfoEntries"].items():
            assert ident == reproducible.item_id(e["author"], e["name"], e["path"])
    # ...and the packages still load and run.
    for name in ("plain", "part16", "part18"):
        loaded = coreml_compile.load(runs[0] / f"{name}.mlpackage")
        assert loaded.predict({n: _feed(loaded, n) for n in loaded.input_names})


def _feed(model, name):
    shape, _is_float = model.input_specs()[name]
    rng = np.random.default_rng(0)
    return (rng.standard_normal(shape) + 4 * np.eye(shape[-1])).astype(np.float32)


def test_saving_twice_in_one_process_gives_the_same_bytes(tmp_path):
    x = torch.randn(2, 3)
    compiled = coreml_compile.compile(torch.nn.Linear(3, 4).eval(), (x,))
    one = compiled.save(tmp_path / "one.mlpackage")
    two = compiled.save(tmp_path / "two.mlpackage")
    assert _files(one) == _files(two)


# -- no litter -------------------------------------------------------------------------


def _scratch(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("coreml_compile-"))


@pytest.fixture
def tmpdir_(tmp_path, monkeypatch):
    """A TMPDIR of the test's own, so coremltools' scratch packages can be counted."""
    folder = tmp_path / "TMPDIR"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_scratch_package_goes_once_saved(tmp_path, tmpdir_):
    x = torch.randn(2, 3)
    compiled = coreml_compile.compile(torch.nn.Linear(3, 4).eval(), (x,))
    assert len(_scratch(tmpdir_)) == 1
    a = compiled.save(tmp_path / "a.mlpackage")
    assert _scratch(tmpdir_) == [] and list(tmpdir_.iterdir()) == []
    # Saved again: copied from the saved package, same bytes.
    b = compiled.save(tmp_path / "b.mlpackage")
    assert _files(a) == _files(b)
    np.testing.assert_allclose(coreml_compile.load(b)(x).numpy(), compiled(x).numpy())
    # The package it now reads from is removed, or replaced by another model's: it
    # rebuilds its own (same bytes), and that scratch package goes once saved too.
    shutil.rmtree(b)
    c = compiled.save(tmp_path / "c.mlpackage")
    assert _files(c) == _files(a) and list(tmpdir_.iterdir()) == []
    other = coreml_compile.compile(torch.nn.Linear(3, 4).eval(), (x,))
    other.save(c)
    d = compiled.save(tmp_path / "d.mlpackage")
    assert _files(d) == _files(a) != _files(c)
    del other
    assert list(tmpdir_.iterdir()) == []


def test_partitioned_scratch_packages_go_once_saved(tmp_path, tmpdir_):
    a = torch.randn(4, 4) + 4 * torch.eye(4)

    def fn(a):
        return torch.relu(torch.linalg.inv(torch.relu(a * 0.5 + 1) + 3) * 0.5 + 1) - 0.25

    from tests.ops.samples import Fn

    compiled = coreml_compile.compile(Fn(fn), (a,))
    assert len(_scratch(tmpdir_)) >= 2  # the root and nested partitions
    path = compiled.save(tmp_path / "p.mlpackage")
    assert list(tmpdir_.iterdir()) == []
    again = compiled.save(tmp_path / "q.mlpackage")
    assert _files(path) == _files(again)
    torch.testing.assert_close(coreml_compile.load(again)(a), fn(a), rtol=2e-2, atol=2e-2)


def test_dropped_model_takes_its_scratch_package_along(tmpdir_):
    compiled = coreml_compile.compile(torch.nn.Linear(3, 4).eval(), (torch.randn(2, 3),))
    assert len(_scratch(tmpdir_)) == 1
    del compiled
    assert _scratch(tmpdir_) == []


def test_failed_conversion_leaves_no_scratch(tmpdir_, monkeypatch):
    import coremltools.converters.mil.converter as converter

    def broken(*args, **kwargs):
        import tempfile as t

        # coremltools made its weights folder; then conversion fails
        assert list(Path(t.gettempdir()).iterdir())
        raise RuntimeError("conversion broke")

    monkeypatch.setattr(converter, "mil_convert_to_proto", broken)
    with pytest.raises(RuntimeError, match="conversion broke"):
        coreml_compile.compile(torch.nn.Linear(3, 4).eval(), (torch.randn(2, 3),))
    assert list(tmpdir_.iterdir()) == []


def test_failed_write_leaves_old_package_and_no_staging(tmp_path):
    x = torch.randn(2, 3)
    path = coreml_compile.compile(torch.nn.Linear(3, 4).eval(), (x,)).save(tmp_path / "m.mlpackage")
    before = _files(path)

    def half_then_fail(tmp: Path) -> None:
        tmp.mkdir()
        (tmp / "Manifest.json").write_text("{}")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        artifact.write_atomically(path, half_then_fail)
    assert _files(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mlpackage"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_leftovers_of_dead_processes_are_swept_live_ones_kept(tmp_path):
    host = artifact._owner_tag().split("-")[0]
    dead, live = _dead_pid(), os.getpid()
    names = [
        f".m.mlpackage.{host}-{dead}-abc123",  # ours, dead: removed
        f".m.mlpackage.{host}-{live}-abc123",  # ours, alive: kept
        f".m.mlpackage.0000beef-{dead}-abc123",  # another host's: kept
        f".other.mlpackage.{host}-{dead}-abc123",  # another path's: kept
    ]
    for name in names:
        (tmp_path / name / "m.mlpackage").mkdir(parents=True)
    artifact.write_atomically(tmp_path / "m.mlpackage", lambda tmp: _tiny_package(tmp))
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["m.mlpackage", *names[1:]])


def _tiny_package(tmp: Path) -> None:
    coreml_compile.compile(torch.nn.Linear(2, 2).eval(), (torch.randn(1, 2),)).mlmodel.save(
        str(tmp)
    )


KILLED_MID_SAVE = """
import time
from coreml_compile import reproducible
compiled, x = plain(seed=1)

def stuck(package):  # the package is written into the staging folder; now hang
    open(sys.argv[2], "w").close()
    time.sleep(600)

reproducible.normalise = stuck
compiled.save(sys.argv[1])
"""


@pytest.mark.slow
def test_killed_save_leaves_old_package_and_next_save_sweeps(tmp_path, tmpdir_):
    out = tmp_path / "out"
    out.mkdir()
    path = out / "m.mlpackage"
    compiled = coreml_compile.compile(torch.nn.Linear(3, 4).eval(), (torch.randn(2, 3),))
    compiled.save(path)
    before = _files(path)
    ready = tmp_path / "ready"
    proc = _python(KILLED_MID_SAVE, str(path), str(ready), env={"TMPDIR": str(tmpdir_)})
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()  # reaped: its pid is dead, not a zombie
    # The old package is intact; the dead process left its staging folder and scratch.
    assert _files(path) == before
    staging = [p for p in out.iterdir() if p.name.startswith(".m.mlpackage.")]
    assert len(staging) == 1 and str(proc.pid) in staging[0].name
    assert any(str(proc.pid) in name for name in _scratch(tmpdir_))
    # The next compile and save to that path remove both.
    compiled = coreml_compile.compile(torch.nn.Linear(3, 5).eval(), (torch.randn(2, 3),))
    compiled.save(path)
    assert sorted(p.name for p in out.iterdir()) == ["m.mlpackage"]
    assert list(tmpdir_.iterdir()) == []
    assert coreml_compile.load(path).output_names == compiled.output_names


# -- readers and racing writers --------------------------------------------------------

READER = """
import os, time, numpy as np
path, stop, expected = sys.argv[1], sys.argv[2], np.load(sys.argv[3])
x = plain()[1].numpy()
loads = failures = 0
while not os.path.exists(stop):
    try:
        model = coreml_compile.load(path)
        y = model.predict({model.input_names[0]: x})[model.output_names[0]]
        if not any(np.allclose(y, e, rtol=1e-4, atol=1e-5) for e in expected):
            raise AssertionError("outputs of neither model")
    except Exception as exc:
        failures += 1
        print("FAIL", type(exc).__name__, exc, flush=True)
    loads += 1
print("loads", loads, "failures", failures)
"""


def _reader_results(out: str) -> tuple[int, int, str]:
    last = out.strip().splitlines()[-1].split()
    return int(last[1]), int(last[3]), out


@pytest.mark.slow
def test_replacing_never_shows_readers_a_missing_or_mixed_package(tmp_path):
    models = [__import__("types").SimpleNamespace() for _ in range(2)]
    x = None
    for seed, ns in enumerate(models):
        exec(MODELS + f"\nns.compiled, ns.x = plain(seed={seed})", {"ns": ns})
        x = ns.x
    expected = np.stack([ns.compiled(x).numpy() for ns in models])
    assert not np.allclose(expected[0], expected[1])
    np.save(tmp_path / "expected.npy", expected)
    path = models[0].compiled.save(tmp_path / "m.mlpackage")
    stop = tmp_path / "stop"
    reader = _python(READER, str(path), str(stop), str(tmp_path / "expected.npy"))
    time.sleep(4)  # the reader is loading by now
    # Saves through the API (each one swapping models, so each rebuilds its package)...
    for replaced in range(20):
        models[replaced % 2].compiled.save(path)
    # ...then faster swaps of the two packages, for longer.
    sources = [ns.compiled.save(tmp_path / f"src{i}.mlpackage") for i, ns in enumerate(models)]
    start = time.monotonic()
    while time.monotonic() - start < 6:
        replaced += 1
        source = sources[replaced % 2]
        artifact.write_atomically(path, lambda t, source=source: shutil.copytree(source, t))
        time.sleep(0.2)
    assert replaced >= 30
    stop.touch()
    loads, failures, out = _reader_results(_finish(reader))
    assert failures == 0, out
    assert loads >= 10, out
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "expected.npy", "m.mlpackage", "src0.mlpackage", "src1.mlpackage", "stop"
    ]  # fmt: skip


def test_a_read_that_a_swap_interrupts_is_done_again(tmp_path):
    x = torch.randn(2, 3)
    a, b = (
        coreml_compile.compile(torch.nn.Linear(3, n).eval(), (x,)).save(tmp_path / f"{n}.mlpackage")
        for n in (4, 6)
    )
    path = shutil.copytree(a, tmp_path / "m.mlpackage")
    calls = []

    def read():
        calls.append(1)
        if len(calls) == 1:  # a writer swaps b in while this read is under way
            artifact.write_atomically(path, lambda t: shutil.copytree(b, t))
        from coreml_compile.api import load as load_package

        return load_package(path)

    assert artifact.read_consistently(path, read)(x).shape == (2, 6)
    assert len(calls) == 2


WRITER = """
import os, time
compiled, x = plain(seed=int(sys.argv[2]))
while not os.path.exists(sys.argv[3]):  # start together
    time.sleep(0.01)
for _ in range(int(sys.argv[4])):
    compiled.save(sys.argv[1])
print("saved")
"""


@pytest.mark.slow
def test_racing_writers_all_succeed_and_the_last_one_wins_whole(tmp_path):
    path = tmp_path / "m.mlpackage"
    go = tmp_path / "go"
    writers = [_python(WRITER, str(path), str(seed), str(go), "15") for seed in (0, 1)]
    time.sleep(0.5)
    go.touch()
    for proc in writers:
        assert _finish(proc).strip() == "saved"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["go", "m.mlpackage"]
    # Whole: byte for byte one of the two writers' packages.
    wanted = []
    for seed in (0, 1):
        ns = __import__("types").SimpleNamespace()
        exec(MODELS + f"\nns.compiled, ns.x = plain(seed={seed})", {"ns": ns})
        wanted.append(_files(ns.compiled.save(tmp_path / f"w{seed}.mlpackage")))
    assert _files(path) in wanted


def test_replacing_without_an_atomic_exchange_still_works(tmp_path, monkeypatch):
    monkeypatch.setattr(artifact, "_rename_flags", lambda *args: None)
    x = torch.randn(2, 3)
    first = coreml_compile.compile(torch.nn.Linear(3, 4).eval(), (x,))
    second = coreml_compile.compile(torch.nn.Linear(3, 6).eval(), (x,))
    path = first.save(tmp_path / "m.mlpackage")
    second.save(path)
    assert coreml_compile.load(path)(x).shape == (2, 6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mlpackage"]


def test_compile_and_save_freeze_the_heap_only_while_they_run(tmp_path):
    import gc

    # The objects that exist before a compile are kept out of the collector's walks
    # while it runs (api._heap_frozen), and given back after, even when it fails.
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x):
            seen.append(gc.get_freeze_count())
            return x * 2

    assert gc.get_freeze_count() == 0
    compiled = coreml_compile.compile(Spy(), (torch.ones(2, 3),))
    assert seen and seen[0] > 0  # frozen while torch.export traced forward()
    assert gc.get_freeze_count() == 0
    compiled.save(tmp_path / "m.mlpackage")
    assert gc.get_freeze_count() == 0
    with pytest.raises(ValueError, match="precision"):
        coreml_compile.compile(Spy(), (torch.ones(2, 3),), precision="fp8")
    assert gc.get_freeze_count() == 0
    # A caller's own freeze is left alone.
    gc.freeze()
    try:
        coreml_compile.compile(Spy(), (torch.ones(2, 3),))
        assert gc.get_freeze_count() > 0  # not thawed by the compile
    finally:
        gc.unfreeze()
