"""What users feed a package: `run --input` files and `predict()` arguments.

Each mistake is one InputSpecError line naming the input (never an "internal error" or
a numpy failure); what can be fed correctly (one array for a one-input model, .npz files,
big-endian arrays) is.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from coremltools.proto.FeatureTypes_pb2 import ArrayFeatureType

import coreml_compile
from coreml_compile.errors import InputSpecError
from tests.cli.test_cli import run_cli

TWO_INPUTS = """
import torch
from torch import nn

class M(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, image, bias):
        return torch.relu(self.conv(image)) + bias

def model():
    torch.manual_seed(0)
    return M().eval()

def example_inputs():
    return (torch.randn(1, 3, 8, 8), torch.randn(1, 4, 6, 6))
"""

TOKENS = """
import torch
from torch import nn

def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2)).eval()

def example_inputs():
    return (torch.tensor([[1, 2, 3]]),)
"""


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    (folder / "two.py").write_text(textwrap.dedent(TWO_INPUTS))
    (folder / "tokens.py").write_text(textwrap.dedent(TOKENS))
    for name in ("two", "tokens"):
        result = run_cli(
            f"{name}.py", "-o", f"{name}.mlpackage", "-q", "--precision", "fp32", cwd=folder
        )
        assert result.returncode == 0, result.stderr
    return folder


def _one_error_line(result) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "internal error" not in lines[0] and "Traceback" not in result.stderr
    return lines[0]


def _outputs(folder: Path, *args: str) -> np.ndarray:
    result = run_cli("run", "two.mlpackage", *args, "-o", "out.npz", cwd=folder)
    assert result.returncode == 0, result.stderr
    return np.load(folder / "out.npz")["output"]


def test_npz_inputs_by_name_and_whole(packages):
    image = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    bias = np.full((1, 4, 6, 6), 2.0, np.float32)
    np.save(packages / "image.npy", image)
    np.save(packages / "bias.npy", bias)
    np.savez(packages / "both.npz", image=image, bias=bias)
    np.savez(packages / "only.npz", anything=image)
    expected = _outputs(packages, "--input", "image=image.npy", "--input", "bias=bias.npy")
    assert np.allclose(_outputs(packages, "--input", "both.npz"), expected)
    named = _outputs(packages, "--input", "image=both.npz", "--input", "bias=both.npz")
    assert np.allclose(named, expected)
    only = _outputs(packages, "--input", "image=only.npz", "--input", "bias=bias.npy")
    assert np.allclose(only, expected)
    line = _one_error_line(run_cli("run", "two.mlpackage", "--input", "x=both.npz", cwd=packages))
    assert "--input x: both.npz holds no array named x (it holds image, bias)" in line


def test_big_endian_arrays_are_converted_and_float64_noted(packages):
    image = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.save(packages / "image.npy", image)
    np.save(packages / "image_be.npy", image.astype(">f4"))
    np.save(packages / "image64.npy", image.astype(np.float64))
    expected = _outputs(packages, "--input", "image=image.npy")
    assert np.array_equal(_outputs(packages, "--input", "image=image_be.npy"), expected)
    result = run_cli("run", "two.mlpackage", "--input", "image=image64.npy", cwd=packages)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "note: --input image: float64 data converted to float32"


@pytest.mark.parametrize(
    "array,message",
    [
        (np.array([["a", "b"]]), "--input image: the array holds strings (<U1); inputs must"),
        (np.array([1, "a", None], dtype=object), "holds Python objects (dtype object)"),
    ],
    ids=["strings", "objects"],
)
def test_non_numeric_input_files_are_refused(packages, array, message):
    np.save(packages / "bad.npy", array, allow_pickle=True)
    line = _one_error_line(
        run_cli("run", "two.mlpackage", "--input", "image=bad.npy", cwd=packages)
    )
    assert message in line


def test_out_of_range_token_id_is_an_input_error(packages):
    np.save(packages / "ids.npy", np.array([[1, 2, 30]], np.int32))
    line = _one_error_line(
        run_cli("run", "tokens.mlpackage", "--input", "input=ids.npy", cwd=packages)
    )
    assert "an index is out of range while running the model (input holds 1..30)" in line
    model = coreml_compile.load(packages / "tokens.mlpackage")
    with pytest.raises(InputSpecError, match="token ids must be below"):
        model.predict({"input": np.array([[1, 2, 30]], np.int32)})


def test_predict_takes_one_array_for_a_one_input_model(packages):
    model = coreml_compile.load(packages / "tokens.mlpackage")
    ids = np.array([[1, 2, 3]], np.int32)
    expected = model.predict({"input": ids})["output"]
    assert np.array_equal(model.predict(ids)["output"], expected)
    assert np.array_equal(model.predict([ids])["output"], expected)
    assert np.array_equal(model.predict(torch.from_numpy(ids))["output"], expected)


def test_predict_refuses_what_it_cannot_run(packages):
    model = coreml_compile.load(packages / "two.mlpackage")
    image = np.zeros((1, 3, 8, 8), np.float32)
    bias = np.zeros((1, 4, 6, 6), np.float32)
    with pytest.raises(InputSpecError, match=r"one array given but the model takes 2 input\(s\)"):
        model.predict(image)
    with pytest.raises(InputSpecError, match=r"1 array\(s\) given but the model takes 2"):
        model.predict([image])
    with pytest.raises(InputSpecError, match=r"predict\(\) takes \{name: array\}, not str"):
        model.predict("image")
    with pytest.raises(InputSpecError, match="input image: float64 data, but Core ML has no"):
        model.predict({"image": image.astype(np.float64), "bias": bias})
    with pytest.raises(InputSpecError, match="input image: float64 data"):
        model(torch.zeros(1, 3, 8, 8, dtype=torch.float64), torch.from_numpy(bias))
    with pytest.raises(InputSpecError, match=r"input bias: <U1 data \(strings\)"):
        model.predict({"image": image, "bias": np.full((1, 4, 6, 6), "a")})
    big = model.predict({"image": image.astype(">f4"), "bias": bias.astype(">f4")})
    assert np.array_equal(big["output"], model.predict({"image": image, "bias": bias})["output"])


def test_a_float64_model_computes_in_float32_and_says_so():
    # Core ML has no float64: as coremltools does, the model becomes a float32 program
    # (its input too), and the compile warns instead of leaving a torch partition.
    class Double(torch.nn.Module):
        def forward(self, x):
            return x * 2

    x = torch.randn(2, 3, dtype=torch.float64)
    compiled = coreml_compile.compile(Double(), (x,))
    assert not compiled.report.partitions
    assert any("float64" in w for w in compiled.report.warnings)
    (spec,) = compiled.mlmodel._spec.description.input
    assert spec.type.multiArrayType.dataType == ArrayFeatureType.FLOAT32
    torch.testing.assert_close(compiled(x.float()), (x * 2).float(), rtol=2e-3, atol=2e-3)  # fp16
    # float64 data is still refused at predict, with the fix in the message.
    with pytest.raises(InputSpecError, match="float64 data, but Core ML has no float64; convert"):
        compiled(x)
