"""The command line: help, a real compile, and every kind of bad input.

Bad input must give one line naming the problem, a non-zero exit, no traceback, and
no package (complete or partial) at the output path.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

TINY = """
import torch
from torch import nn

def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())

def not_a_module():
    return 42

def example_inputs():
    return (torch.randn(1, 3, 8, 8),)
"""

BRANCHY = """
import torch
from torch import nn

class M(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x
        return -x

def model():
    return M()

def example_inputs():
    return (torch.randn(4),)
"""


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "coreml_compile.cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "tiny.py").write_text(textwrap.dedent(TINY))
    (tmp_path / "branchy.py").write_text(textwrap.dedent(BRANCHY))
    return tmp_path


def test_help_is_fast_and_teaches(workdir):
    start = time.perf_counter()
    result = run_cli("--help", cwd=workdir)
    elapsed = time.perf_counter() - start
    assert result.returncode == 0
    assert "FILE[:NAME]" in result.stdout and "example_inputs()" in result.stdout
    # The whole interpreter start counts here; torch alone takes seconds to import.
    assert elapsed < 1.5, f"--help took {elapsed:.2f}s"
    help_compile = run_cli("compile", "--help", cwd=workdir)
    assert "--input-shape" in help_compile.stdout and "--precision" in help_compile.stdout


def test_compiles_a_model_file(workdir):
    result = run_cli("tiny.py", "-o", "tiny.mlpackage", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert (workdir / "tiny.mlpackage" / "Manifest.json").is_file()
    # A short summary: package, ops, time; no progress lines when output is captured.
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and result.stderr == "", result.stdout + result.stderr
    assert lines[0].startswith("wrote tiny.mlpackage  (")
    assert lines[0].endswith(", fp16, iOS16)")  # precision and the target compiled for
    assert lines[1].startswith("  ops: ") and "Core ML ops" in lines[1]
    assert lines[2].startswith("  time: ")
    # Nothing else is left beside the package.
    assert sorted(p.name for p in workdir.iterdir()) == ["branchy.py", "tiny.mlpackage", "tiny.py"]


def test_verbose_shows_the_pass_table_and_json_the_whole_report(workdir):
    verbose = run_cli("tiny.py", "-o", "tiny.mlpackage", "-v", cwd=workdir)
    assert verbose.returncode == 0, verbose.stderr
    assert "passes (-O2):" in verbose.stdout and "fold_constants" in verbose.stdout
    assert "wrote tiny.mlpackage" in verbose.stdout
    as_json = run_cli("tiny.py", "-o", "tiny.mlpackage", "--json", cwd=workdir)
    assert as_json.returncode == 0, as_json.stderr
    import json

    doc = json.loads(as_json.stdout)
    assert doc["output"] == "tiny.mlpackage" and doc["package_bytes"] > 0
    assert doc["precision"] == "fp16" and doc["target"] == "iOS16"
    assert doc["mil_ops"]["conv"] == 1 and doc["mil_op_count"] >= 3
    assert {"export", "lower", "serialise"} <= set(doc["stages"])
    assert any(r["name"] == "fold_constants" for r in doc["passes"])
    assert doc["partitions"] == [] and doc["fallback_reasons"] == {}


def test_progress_is_one_line_updated_in_place_on_a_terminal(workdir, monkeypatch):
    import io

    from coreml_compile.cli import main as cli_main

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal, pipe = Terminal(), io.StringIO()
    for stream, expect_output in ((terminal, True), (pipe, False)):
        monkeypatch.setattr(cli_main.sys, "stderr", stream)
        progress = cli_main._Progress()
        progress("compiling tiny.py: export")
        progress("compiling tiny.py: lower")
        progress.done()
        text = stream.getvalue()
        if expect_output:
            # Each status overwrites the last; done() blanks the line and returns.
            assert "\n" not in text
            parts = [part.strip() for part in text.split("\r")]
            assert parts == ["", "compiling tiny.py: export", "compiling tiny.py: lower", "", ""]
        else:
            assert text == ""


def test_help_names_paths_and_input_names(workdir):
    result = run_cli("compile", "--help", cwd=workdir)
    assert "-o, --output PATH" in result.stdout and "DIRECTORY" not in result.stdout
    assert "forward()'s parameters" in result.stdout
    ran = run_cli("run", "--help", cwd=workdir)
    assert "-o, --output PATH" in ran.stdout and "file.npz" in ran.stdout.lower()


def test_input_shape_overrides_example_inputs(workdir):
    result = run_cli(
        "tiny.py:model", "--input-shape", "2,3,16,16", "-o", "t.mlpackage", "-q", cwd=workdir
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    import coreml_compile

    # The file's example_inputs() are 1x3x8x8: the package must take the shape given.
    specs = coreml_compile.load(workdir / "t.mlpackage").input_specs()
    assert [shape for shape, _is_float in specs.values()] == [[2, 3, 16, 16]]


BAD_INPUTS = [
    (["missing.py"], "model file not found: missing.py"),
    (["tiny.py:nothing"], "does not define 'nothing'"),
    (["tiny.py:not_a_module"], "returned int, not a torch.nn.Module"),
    (["branchy.py"], "torch.export failed"),
    (["tiny.py", "--input-shape", "1,three,8"], "malformed --input-shape '1,three,8'"),
    (["tiny.py", "--input-shape", "1x3x8x8"], "separate dimensions with commas, like 1,3,8,8"),
    (["tiny.py", "--input-shape", "1,3,2,2"], "torch.export failed"),
]


@pytest.mark.parametrize("args,message", BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_bad_input_is_one_clear_line(workdir, args, message):
    result = run_cli(*args, "-o", "out.mlpackage", "-q", cwd=workdir)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in result.stderr
    assert not (workdir / "out.mlpackage").exists()
    assert not any(p.name.startswith(".out.mlpackage") for p in workdir.iterdir())


def test_unwritable_output_path(workdir):
    result = run_cli("tiny.py", "-o", "no/such/dir/out.mlpackage", cwd=workdir)
    assert result.returncode != 0
    folder = workdir / "no" / "such" / "dir"
    assert result.stderr.strip().splitlines() == [
        f"error: cannot write no/such/dir/out.mlpackage: folder {folder} does not exist"
    ]


def test_output_must_be_a_package_path(workdir):
    result = run_cli("tiny.py", "-o", "out.bin", cwd=workdir)
    assert result.returncode != 0
    assert "must end in .mlpackage" in result.stderr


def test_debug_shows_the_traceback(workdir):
    result = run_cli("missing.py", "-o", "out.mlpackage", "--debug", cwd=workdir)
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "ModelFileError" in result.stderr


def test_existing_package_is_replaced_only_on_success(workdir):
    assert run_cli("tiny.py", "-o", "out.mlpackage", "-q", cwd=workdir).returncode == 0
    before = (workdir / "out.mlpackage" / "Manifest.json").read_bytes()
    failed = run_cli("branchy.py", "-o", "out.mlpackage", "-q", cwd=workdir)
    assert failed.returncode != 0
    assert (workdir / "out.mlpackage" / "Manifest.json").read_bytes() == before


def test_run_and_verify_a_package(workdir):
    import numpy as np

    assert (
        run_cli(
            "tiny.py", "-o", "tiny.mlpackage", "-q", "--precision", "fp32", cwd=workdir
        ).returncode
        == 0
    )
    np.save(workdir / "x.npy", np.ones((1, 3, 8, 8), np.float32))
    ran = run_cli("run", "tiny.mlpackage", "--input", "input=x.npy", "-o", "out.npz", cwd=workdir)
    assert ran.returncode == 0, ran.stderr
    out = np.load(workdir / "out.npz")["output"]
    assert out.shape == (1, 4)

    ok = run_cli("verify", "tiny.mlpackage", "--against", "tiny.py", cwd=workdir)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "verified: 1 output(s) agree (fp32 tolerance, reference:cpu)" in ok.stdout

    # A different model (other seed) must fail verification with a non-zero exit.
    (workdir / "other.py").write_text(
        (workdir / "tiny.py").read_text().replace("manual_seed(0)", "manual_seed(1)")
    )
    bad = run_cli("verify", "tiny.mlpackage", "--against", "other.py", cwd=workdir)
    assert bad.returncode == 1
    assert "FAIL" in bad.stdout
    assert bad.stderr.startswith("error: output output differs from the model beyond tolerance")


def test_verify_says_an_unseeded_model_file_is_not_seeded(workdir):
    (workdir / "unseeded.py").write_text(
        (workdir / "tiny.py").read_text().replace("torch.manual_seed(0)", "pass")
    )
    assert run_cli("unseeded.py", "-o", "u.mlpackage", "-q", cwd=workdir).returncode == 0
    result = run_cli("verify", "u.mlpackage", "--against", "unseeded.py", cwd=workdir)
    assert result.returncode == 3  # cannot check, which is not "differs" (1)
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: unseeded.py builds a model with different weights each time")
    assert "torch.manual_seed(0) at the start of model() in unseeded.py" in line
    assert "FAIL" not in result.stdout and "beyond tolerance" not in result.stderr


def test_run_reports_bad_inputs_in_one_line(workdir):
    assert run_cli("tiny.py", "-o", "tiny.mlpackage", "-q", cwd=workdir).returncode == 0
    import numpy as np

    np.save(workdir / "wrong.npy", np.ones((1, 3, 4, 4), np.float32))
    cases = [
        (["run", "nothing.mlpackage"], "package not found: nothing.mlpackage"),
        (["run", "tiny.mlpackage", "--input", "x"], "malformed --input 'x'"),
        (
            ["run", "tiny.mlpackage", "--input", "input=wrong.npy"],
            "input input: expected shape [1, 3, 8, 8]",
        ),
        (["run", "tiny.mlpackage", "--input", "y=wrong.npy"], "unknown input(s) y"),
    ]
    for args, message in cases:
        result = run_cli(*args, cwd=workdir)
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, result.stderr)


PARTIAL = """
import torch
from torch import nn

class M(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        return torch.relu(torch.linalg.inv(y + 3 * torch.eye(6)) * 0.5 + 1) - 0.25

def model():
    torch.manual_seed(0)
    return M().eval()

def example_inputs():
    return (torch.randn(1, 3, 8, 8),)
"""


def test_partitioned_compile_says_what_runs_where(workdir):
    (workdir / "partial.py").write_text(textwrap.dedent(PARTIAL))
    short = run_cli("partial.py", "-o", "p.mlpackage", cwd=workdir)
    assert short.returncode == 0, short.stderr
    # By default: the summary and one warning line saying what the package needs.
    assert len(short.stdout.splitlines()) == 3 and "partition_" not in short.stdout
    (warning,) = short.stderr.strip().splitlines()
    assert warning.startswith("warning: 1 of ") and "ops runs on torch outside Core ML" in warning
    assert "(aten::linalg_inv.default)" in warning and "coreml-compile's runtime" in warning
    assert "--no-fallback lists what blocks a plain Core ML model" in warning

    result = run_cli("partial.py", "-o", "p.mlpackage", "-v", cwd=workdir)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "partitions: 3, " in out and "of IR nodes on Core ML" in out
    assert "kept on Core ML: holds a convolution" in out
    assert "aten::linalg_inv.default: no Core ML lowering  (linalg_inv)" in out
    assert "partition_1 (fallback) -> torch:cpu" in out

    # The package's models say so where Xcode and coremltools show it.
    from coreml_compile.runtime.package import read_program

    mlmodel, _program = read_program(workdir / "p.mlpackage")
    description = mlmodel.short_description
    assert description.startswith("Partitioned by coreml-compile: 1 of ")
    assert "coreml_compile.load()" in description and "--no-fallback" in description

    ran = run_cli("run", "p.mlpackage", "--fallback", "cpu", cwd=workdir)
    assert ran.returncode == 0, ran.stderr
    assert "partition_" not in ran.stdout
    ran = run_cli("run", "p.mlpackage", "--fallback", "cpu", "-v", cwd=workdir)
    assert ran.returncode == 0, ran.stderr
    assert "partition_1 (fallback) -> torch:cpu: asked for" in ran.stdout
    ok = run_cli("verify", "p.mlpackage", "--against", "partial.py", cwd=workdir)
    assert ok.returncode == 0, ok.stdout + ok.stderr

    strict = run_cli("partial.py", "-o", "strict.mlpackage", "--no-fallback", cwd=workdir)
    assert strict.returncode == 1 and not (workdir / "strict.mlpackage").exists()
    (line,) = strict.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: Core ML cannot run 1 op(s): aten::linalg_inv.default")

    if not _has_mps():
        gpu = run_cli("run", "p.mlpackage", "--fallback", "mps", cwd=workdir)
        assert gpu.returncode == 1
        assert gpu.stderr.strip() == (
            "error: fallback device 'mps' is not available on this machine"
        )


def _has_mps() -> bool:
    import torch

    return torch.backends.mps.is_available()
