"""--input-shape ranges (1,3,64..512,64..512) and alternatives (1,3,224,224/1,3,320,320).

What the CLI builds from them: the example tensors traced with, torch.export's
``dynamic_shapes`` and compile's ``enumerated_shapes``; and one error line for each
malformed form. Compiling dynamic shapes is not tested here, only what reaches compile
and that torch.export accepts it.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import coreml_compile
from coreml_compile.cli.main import cli
from coreml_compile.errors import CoreMLCompileError, InputSpecError
from coreml_compile.model_file import (
    compile_source,
    dynamic_shapes,
    example_sizes,
    input_names,
    parse_input_shape,
    parse_shape,
)

CONV = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, image):
        return torch.relu(self.conv(image))

def model():
    torch.manual_seed(0)
    return Net().eval()

def example_inputs():
    return (torch.randn(1, 3, 8, 8),)
"""

TWO_INPUTS = """
import torch
from torch import nn

class Net(nn.Module):
    def forward(self, tokens, mask):
        return tokens * 2, mask + 1

def model():
    return Net()
"""


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "conv.py").write_text(textwrap.dedent(CONV))
    (tmp_path / "two.py").write_text(textwrap.dedent(TWO_INPUTS))
    (tmp_path / "m.onnx").write_bytes(b"not read: ranges are refused before loading")
    return tmp_path


# -- parsing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,dims,alternatives",
    [
        ("1,3,224,224", (1, 3, 224, 224), ()),
        ("1,3,64..512,64..512", (1, 3, (64, 512), (64, 512)), ()),
        ("1,1..512", (1, (1, 512)), ()),
        (" 1 , 2..8 ", (1, (2, 8)), ()),
        ("1,64..64", (1, 64), ()),  # a one-size range is a fixed size
        (
            "1,3,224,224/1,3,256,256/1,3,320,320",
            (1, 3, (224, 320), (224, 320)),
            ((1, 3, 224, 224), (1, 3, 256, 256), (1, 3, 320, 320)),
        ),
        ("1,77/4,77", ((1, 4), 77), ((1, 77), (4, 77))),
    ],
)
def test_good_forms_parse(text, dims, alternatives):
    shape = parse_input_shape(text)
    assert shape.dims == dims
    assert shape.alternatives == alternatives
    assert shape.is_fixed == (not alternatives and all(isinstance(d, int) for d in dims))


BAD = [
    ("1x3x64x64", "'1x3x64x64': separate dimensions with commas, like 1,3,64,64"),
    ("1,three,8", "'1,three,8': expected comma-separated sizes like 1,3,224,224"),
    ("1,0,8", "'1,0,8': dimensions must be positive"),
    ("1,64..32", "'1,64..32': the range 64..32 ends below its start"),
    ("1,0..8", "'1,0..8': the range 0..8 must start at 1 or more"),
    ("1,a..b", "'1,a..b': the range a..b must be two integers LO..HI, like 64..512"),
    ("1,..8", "'1,..8': the range ..8 has no lower bound; write 1..8 for sizes from 1"),
    ("1,64..", "'1,64..': the range 64.. has no upper bound; give the largest size too, like"),
    ("1,3,224/1,3,256,256", "the shapes separated by / must have the same number of dimensions"),
    ("1,3,64..128/1,3,256", "give either ranges (LO..HI) or whole shapes separated by /"),
    ("1,3/", "'1,3/': a shape is missing before or after a /"),
    ("1,3/1,3", "'1,3/1,3': lists 1,3 twice"),
    ("1,3/1,x", "'1,3/1,x': expected comma-separated sizes"),
]


@pytest.mark.parametrize("text,message", BAD, ids=[text for text, _ in BAD])
def test_bad_forms_are_one_line_naming_the_text(text, message):
    with pytest.raises(InputSpecError) as info:
        parse_input_shape(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_open_range_says_why_a_bound_is_needed():
    with pytest.raises(InputSpecError, match=r"like 64\.\.HI \(Core ML needs bounded shapes"):
        parse_input_shape("1,3,64..,64..")


def test_parse_shape_takes_fixed_shapes_only():
    assert parse_shape("2,3") == (2, 3)
    for text in ("1,2..8", "1,3/2,3"):
        with pytest.raises(InputSpecError, match="a fixed shape is needed here"):
            parse_shape(text)


# -- example sizes and Dims ---------------------------------------------------------------------


def _sizes(*texts: str) -> list[tuple[int, ...]]:
    return example_sizes([parse_input_shape(t) for t in texts])


def test_example_sizes_are_in_range_above_one_and_distinct():
    texts = ("1,3,64..512,64..512", "1,1..512", "1,1..8,5..6")
    sizes = _sizes(*texts)
    dynamic: list[int] = []
    for text, size in zip(texts, sizes, strict=True):
        for axis, dim in enumerate(parse_input_shape(text).dims):
            if isinstance(dim, tuple):
                assert max(dim[0], 2) <= size[axis] <= dim[1], (text, size)
                dynamic.append(size[axis])
            else:
                assert size[axis] == dim
    assert len(set(dynamic)) == len(dynamic), sizes
    # The rule: the smallest free size from max(LO, 2), in input and axis order.
    assert sizes == [(1, 3, 64, 65), (1, 2), (1, 3, 5)]


def test_a_full_range_shares_its_smallest_size():
    assert _sizes("2..3,2..3,2..3") == [(2, 3, 2)]
    assert _sizes("1..2", "1..2") == [(2,), (2,)]


def test_alternatives_trace_at_a_listed_shape_with_no_size_one_axis():
    assert _sizes("1,3,224,224/1,3,320,320") == [(1, 3, 224, 224)]
    # torch.export would fix a varying batch axis traced at 1: trace at the next shape.
    assert _sizes("1,3,8,8/4,3,8,8/8,3,8,8") == [(4, 3, 8, 8)]
    # No listed shape is free of size-1 varying axes: raise those axes in the first.
    assert _sizes("1,8/8,1") == [(8, 8)]
    # Range axes then avoid the sizes the alternatives took.
    assert _sizes("2,3/4,3", "2..9") == [(2, 3), (3,)]


def test_dims_are_named_after_input_and_axis_with_the_range_as_bounds():
    texts = ("1,3,64..512,32..128", "4", "1,3,224,224/1,3,256,320")
    shapes = [parse_input_shape(t) for t in texts]
    built = dynamic_shapes(shapes, ["image", "scale", "crop"])
    assert built is not None and len(built) == 3
    image, scale, crop = built
    assert scale is None
    assert {a: (d.__name__, d.min, d.max) for a, d in image.items()} == {
        2: ("image_dim2", 64, 512),
        3: ("image_dim3", 32, 128),
    }
    assert {a: (d.__name__, d.min, d.max) for a, d in crop.items()} == {
        2: ("crop_dim2", 224, 256),
        3: ("crop_dim3", 224, 320),
    }
    assert dynamic_shapes([parse_input_shape("1,3")], ["x"]) is None


def test_input_names_come_from_forward():
    class Star(torch.nn.Module):
        def forward(self, first, *rest, flag=False):
            return first

    assert input_names(torch.nn.Sequential(torch.nn.ReLU()), 1) == ["input"]
    assert input_names(Star(), 3) == ["first", "rest_0", "rest_1"]
    with pytest.raises(InputSpecError, match=r"3 --input-shape given, but forward\(\) takes 1"):
        input_names(torch.nn.Sequential(torch.nn.ReLU()), 3)


# -- compile_source and the CLI -----------------------------------------------------------------


def test_compile_source_declares_ranges_and_alternatives(files):
    source = compile_source(str(files / "two.py"), ["1,1..512", "1,16/4,16/8,16"])
    tokens, mask = source.example_inputs
    assert tuple(tokens.shape) == (1, 2) and tuple(mask.shape) == (4, 16)
    assert source.enumerated_shapes == {"mask": [(1, 16), (4, 16), (8, 16)]}
    (token_dims, mask_dims) = source.dynamic_shapes
    assert {a: (d.__name__, d.min, d.max) for a, d in token_dims.items()} == {
        1: ("tokens_dim1", 1, 512)
    }
    assert {a: (d.__name__, d.min, d.max) for a, d in mask_dims.items()} == {0: ("mask_dim0", 1, 8)}


def test_compile_source_leaves_fixed_shapes_static(files):
    source = compile_source(str(files / "conv.py"), ["2,3,16,16"])
    assert tuple(source.example_inputs[0].shape) == (2, 3, 16, 16)
    assert source.dynamic_shapes is None and source.enumerated_shapes is None
    source = compile_source(str(files / "conv.py"), None)
    assert tuple(source.example_inputs[0].shape) == (1, 3, 8, 8)
    assert source.dynamic_shapes is None and source.enumerated_shapes is None


def test_onnx_sources_take_fixed_shapes_only(files):
    onnx_path = str(files / "m.onnx")
    assert compile_source(onnx_path, ["2,3"]).example_inputs == [(2, 3)]
    for text in ("1,2..8", "1,3/2,3"):
        with pytest.raises(InputSpecError, match="ranges in --input-shape are for PyTorch models"):
            compile_source(onnx_path, [text])


class _Captured(CoreMLCompileError):
    """Stops the CLI once compile's arguments are recorded."""


@pytest.fixture
def captured(monkeypatch) -> dict:
    calls: dict = {}

    def fake_compile(model, example_inputs=None, **options):
        calls.update(model=model, example_inputs=example_inputs, **options)
        raise _Captured("compile reached")

    monkeypatch.setattr(coreml_compile, "compile", fake_compile)
    return calls


def _invoke(files: Path, *args: str):
    return CliRunner().invoke(cli, ["compile", *args, "-o", str(files / "out.mlpackage")])


def test_cli_passes_ranges_and_alternatives_to_compile(files, captured):
    result = _invoke(files, str(files / "two.py"), "--input-shape", "1,1..512")
    assert "error: compile reached" in result.stderr, result.output
    (tokens,) = captured["example_inputs"]
    assert tuple(tokens.shape) == (1, 2)
    (dims,) = captured["dynamic_shapes"]
    assert {a: (d.__name__, d.min, d.max) for a, d in dims.items()} == {1: ("tokens_dim1", 1, 512)}
    assert captured["enumerated_shapes"] is None

    captured.clear()
    result = _invoke(
        files, str(files / "conv.py"), "--input-shape", "1,3,224,224/1,3,256,256/1,3,320,320"
    )
    assert "error: compile reached" in result.stderr, result.output
    assert captured["enumerated_shapes"] == {
        "image": [(1, 3, 224, 224), (1, 3, 256, 256), (1, 3, 320, 320)]
    }
    assert tuple(captured["example_inputs"][0].shape) == (1, 3, 224, 224)
    assert set(captured["dynamic_shapes"][0]) == {2, 3}


def test_cli_passes_no_dynamic_shapes_for_fixed_ones(files, captured):
    _invoke(files, str(files / "conv.py"), "--input-shape", "2,3,16,16")
    assert tuple(captured["example_inputs"][0].shape) == (2, 3, 16, 16)
    assert captured["dynamic_shapes"] is None and captured["enumerated_shapes"] is None


@pytest.mark.parametrize(
    "text,message",
    [
        ("1,3,64..32,64", "error: malformed --input-shape '1,3,64..32,64': the range 64..32"),
        ("1,3,64..,64", "error: --input-shape '1,3,64..,64': the range 64.. has no upper bound"),
    ],
)
def test_cli_errors_are_one_line(files, captured, text, message):
    result = _invoke(files, str(files / "conv.py"), "--input-shape", text)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(message), result.stderr
    assert not captured


def test_cli_help_teaches_the_three_forms():
    help_text = " ".join(CliRunner().invoke(cli, ["compile", "--help"]).output.split())
    for example in ("1,3,224,224", "1,3,64..512,64..512", "1,3,224,224/1,3,320,320"):
        assert example in help_text
    epilog = CliRunner().invoke(cli, ["--help"]).output
    assert "--input-shape 1,3,64..512,64..512" in epilog


# -- torch.export accepts what is built ----------------------------------------------------------


def test_torch_export_accepts_ranges_for_a_conv_model(files):
    source = compile_source(str(files / "conv.py"), ["1,3,32..128,32..128"])
    (image,) = source.example_inputs
    assert tuple(image.shape) == (1, 3, 32, 33)
    exported = torch.export.export(
        source.model, source.example_inputs, dynamic_shapes=source.dynamic_shapes
    )
    bounds = sorted((r.lower, r.upper) for r in exported.range_constraints.values())
    assert bounds == [(32, 128), (32, 128)]
    other = torch.randn(1, 3, 100, 48)
    with torch.no_grad():
        assert torch.allclose(exported.module()(other), source.model(other))


def test_torch_export_accepts_alternatives_for_a_conv_model(files):
    source = compile_source(str(files / "conv.py"), ["1,3,32,32/2,3,48,32"])
    exported = torch.export.export(
        source.model, source.example_inputs, dynamic_shapes=source.dynamic_shapes
    )
    bounds = sorted((r.lower, r.upper) for r in exported.range_constraints.values())
    assert bounds == [(1, 2), (32, 48)]


def test_a_model_file_can_name_its_minimum_target_and_dynamic_shapes(tmp_path):
    from coreml_compile.errors import ModelFileError
    from coreml_compile.model_file import compile_source

    root = Path(__file__).resolve().parents[2]
    source = compile_source(str(root / "models" / "llama_kv.py"), None)
    assert source.minimum_target == "iOS18"
    assert source.dynamic_shapes is not None  # the file's dynamic_shapes()
    bad = tmp_path / "bad_target.py"
    bad.write_text(
        "import torch\nMINIMUM_TARGET = 18\n"
        "def model():\n    return torch.nn.ReLU()\n"
        "def example_inputs():\n    return (torch.zeros(2),)\n"
    )
    with pytest.raises(ModelFileError, match="MINIMUM_TARGET must be a target name"):
        compile_source(str(bad), None)
