"""Packages with flexible input shapes load, run at every shape they allow, refuse others.

The packages are written by coremltools, declared the two ways Core ML knows: a range per
dimension (``RangeDim``, ``shapeRange`` in the model description) and a list of shapes
(``EnumeratedShapes``). Two come from MIL programs that compute shapes at run time
(``shape``, ``gather``, ``range_1d``, a reshape/fill/tile/slice driven by computed
tensors, integer arithmetic, attention with a causal mask of the run-time length); one
from a traced convolutional net with a symbolic image size. Each runs at several shapes
and is compared with numpy or torch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import coreml_compile
from coreml_compile.compiler.mil import import_coremltools, quiet_coremltools
from coreml_compile.errors import InputSpecError
from coreml_compile.runtime.devices import coreml_available
from coreml_compile.runtime.input_shapes import InputShape, description_shapes
from coreml_compile.runtime.package import read_program
from coreml_compile.runtime.reference import ReferenceExecutor
from tests.conftest import assert_close

ct = import_coremltools()

# Shapes of x ([1, length, 32]) each package is run at, and the shapes it must refuse.
RANGE_RUNS = [2, 7, 16, 512]  # both bounds and two in between
ENUMERATED = [[1, 4, 32], [1, 8, 32], [1, 24, 32]]


def _range_shape() -> object:
    return ct.Shape([1, ct.RangeDim(2, 512, default=16), 32])


def _enumerated_shape() -> object:
    return ct.EnumeratedShapes(shapes=ENUMERATED, default=[1, 8, 32])


def _save(program, shape, path, target) -> None:
    with quiet_coremltools():
        mlmodel = ct.convert(
            program,
            convert_to="mlprogram",
            minimum_deployment_target=target,
            skip_model_load=True,
            pass_pipeline=ct.PassPipeline.EMPTY,
            inputs=[ct.TensorType(name="x", shape=shape)],
        )
        mlmodel.save(str(path))


def _shape_ops_program():
    """x [1, n, 32] -> values computed from the run-time n, one output per shape op."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import Function, Program, get_new_symbol, types

    def vector(*values):
        return np.array(values, np.int32)

    placeholders = {"x": mb.placeholder(shape=[1, get_new_symbol(), 32], dtype=types.fp32)}
    with Function(placeholders, opset_version=ct.target.iOS16) as function:
        x = function.inputs["x"]
        n = mb.gather(x=mb.shape(x=x), indices=1, axis=0)  # an int32 scalar
        half = mb.floor_div(x=n, y=2)
        less = mb.sub(x=n, y=1)
        sizes = [n, half, mb.mul(x=n, y=2), mb.add(x=n, y=3), less]
        n_vector = mb.expand_dims(x=n, axes=[0])
        positions = mb.range_1d(start=0, end=n, step=1)
        grid = mb.concat(values=[vector(1), n_vector, vector(4, 8)], axis=0)
        reps = mb.concat(values=[mb.expand_dims(x=less, axes=[0]), vector(2)], axis=0)
        begin = mb.concat(values=[vector(0), mb.expand_dims(x=half, axes=[0]), vector(0)], axis=0)
        end = mb.concat(values=[vector(1), n_vector, vector(32)], axis=0)
        tail = mb.slice_by_index(x=x, begin=begin, end=end)
        function.set_outputs(
            [
                mb.reshape(x=x, shape=grid, name="grid"),
                mb.cast(x=positions, dtype="fp32", name="positions"),
                mb.fill(
                    shape=mb.concat(values=[n_vector, vector(2)], axis=0), value=1.5, name="filled"
                ),
                mb.tile(x=mb.expand_dims(x=positions, axes=[0]), reps=reps, name="tiled"),
                mb.squeeze(x=tail, axes=[0], name="tail"),
                mb.concat(
                    values=[mb.expand_dims(x=s, axes=[0]) for s in sizes], axis=0, name="sizes"
                ),
            ]
        )
    program = Program()
    program.add_function("main", function)
    return program


def _shape_ops_expected(x: np.ndarray) -> dict[str, np.ndarray]:
    n = x.shape[1]
    positions = np.arange(n)
    return {
        "grid": x.reshape(1, n, 4, 8),
        "positions": positions.astype(np.float32),
        "filled": np.full((n, 2), 1.5, np.float32),
        "tiled": np.tile(positions[None], (n - 1, 2)).astype(np.int32),
        "tail": x[0, n // 2 :, :],
        "sizes": np.array([n, n // 2, 2 * n, n + 3, n - 1], np.int32),
    }


def _attention_program():
    """Causal self-attention over x [1, n, 32]: the mask is built from range_1d(n)."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import Function, Program, get_new_symbol, types

    placeholders = {"x": mb.placeholder(shape=[1, get_new_symbol(), 32], dtype=types.fp32)}
    with Function(placeholders, opset_version=ct.target.iOS18) as function:
        x = function.inputs["x"]
        n = mb.gather(x=mb.shape(x=x), indices=1, axis=0)
        steps = mb.range_1d(start=0, end=n, step=1)
        # Query i sees keys j <= i.
        mask = mb.greater_equal(
            x=mb.expand_dims(x=steps, axes=[1]), y=mb.expand_dims(x=steps, axes=[0])
        )
        key = mb.mul(x=x, y=0.5)
        out = mb.scaled_dot_product_attention(query=x, key=key, value=x, attn_mask=mask)
        function.set_outputs([mb.identity(x=out, name="attended")])
    program = Program()
    program.add_function("main", function)
    return program


def _attention_expected(x: np.ndarray) -> dict[str, np.ndarray]:
    t = torch.from_numpy(x)
    out = nn.functional.scaled_dot_product_attention(t, t * 0.5, t, is_causal=True)
    return {"attended": out.numpy()}


class ConvNet(nn.Module):
    """Strided, depthwise and pooled convolutions: every spatial size is symbolic."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 2, 1)
        self.depthwise = nn.Conv2d(8, 8, 3, 1, 1, groups=8)

    def forward(self, x):
        y = torch.relu(self.stem(x))
        y = y + self.depthwise(y)
        y = nn.functional.interpolate(y, scale_factor=2, mode="nearest")
        return y.flatten(2).transpose(1, 2).mean(1), nn.functional.max_pool2d(y, 2)


def _convnet() -> nn.Module:
    torch.manual_seed(0)
    return ConvNet().eval()


def _save_traced(model: nn.Module, shape, path) -> None:
    traced = torch.jit.trace(model, torch.randn(1, 3, 64, 64))
    with quiet_coremltools():
        mlmodel = ct.convert(
            traced,
            inputs=[ct.TensorType(name="x", shape=shape)],
            convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT32,
            minimum_deployment_target=ct.target.iOS16,
            skip_model_load=True,
        )
        mlmodel.save(str(path))


CONV_RANGE_RUNS = [(32, 32), (64, 96), (256, 40), (130, 254)]
CONV_ENUMERATED = [[1, 3, 32, 32], [1, 3, 64, 48], [1, 3, 96, 96]]


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    """name -> (path, the x shapes to run it at, ground truth of x: {output: array}, or
    torch's outputs as a list in the package's output order)."""
    folder = tmp_path_factory.mktemp("flexible")
    made = {}
    ranged = [[1, n, 32] for n in RANGE_RUNS]
    for name, shape, runs in (
        ("range", _range_shape(), ranged),
        ("enumerated", _enumerated_shape(), ENUMERATED),
    ):
        _save(_shape_ops_program(), shape, folder / f"ops_{name}.mlpackage", ct.target.iOS16)
        made[f"ops_{name}"] = (folder / f"ops_{name}.mlpackage", runs, _shape_ops_expected)
    _save(_attention_program(), _range_shape(), folder / "attention.mlpackage", ct.target.iOS18)
    made["attention_range"] = (folder / "attention.mlpackage", ranged[:3], _attention_expected)
    model = _convnet()

    def conv_expected(x: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            return [y.numpy() for y in model(torch.from_numpy(x))]

    conv_range = ct.Shape(
        [1, 3, ct.RangeDim(32, 256, default=64), ct.RangeDim(32, 256, default=64)]
    )
    conv_enumerated = ct.EnumeratedShapes(shapes=CONV_ENUMERATED, default=CONV_ENUMERATED[1])
    for name, shape, runs in (
        ("range", conv_range, [[1, 3, h, w] for h, w in CONV_RANGE_RUNS]),
        ("enumerated", conv_enumerated, CONV_ENUMERATED),
    ):
        path = folder / f"conv_{name}.mlpackage"
        _save_traced(model, shape, path)
        made[f"conv_{name}"] = (path, runs, conv_expected)
    return made


def _run_and_compare(loaded, runs, expected, what: str) -> None:
    rng = np.random.default_rng(0)
    for shape in runs:
        x = rng.standard_normal(shape).astype(np.float32)
        got = loaded.predict({"x": x})
        want = expected(x)
        if isinstance(want, list):  # torch's outputs, in the package's output order
            want = dict(zip(loaded.output_names, want, strict=True))
        assert set(got) == set(want), f"{what}: outputs {sorted(got)}"
        for name, value in want.items():
            tensor = torch.from_numpy(np.asarray(value))
            assert_close(torch.from_numpy(got[name]), tensor, "fp32", f"{what} {shape} {name}")


@pytest.mark.parametrize(
    "name", ["ops_range", "ops_enumerated", "attention_range", "conv_range", "conv_enumerated"]
)
def test_flexible_package_runs_at_each_allowed_shape(packages, name):
    path, runs, expected = packages[name]
    loaded = coreml_compile.load(path, backend="reference")
    _run_and_compare(loaded, runs, expected, name)


def test_call_takes_tensors_of_any_allowed_shape(packages):
    path, _runs, _expected = packages["conv_range"]
    loaded = coreml_compile.load(path, backend="reference")
    model = _convnet()
    for h, w in CONV_RANGE_RUNS[:2]:
        x = torch.randn(1, 3, h, w)
        with torch.no_grad():
            want = model(x)
        for got, expected in zip(loaded(x), want, strict=True):
            assert_close(got, expected, "fp32", f"call {h}x{w}")


REFUSED = [
    (
        "ops_range",
        (1, 600, 32),
        "input x: dimension 1 is 600, outside the range 2..512 the model accepts",
    ),
    ("ops_range", (1, 1, 32), "input x: dimension 1 is 1, outside the range 2..512"),
    ("ops_range", (1, 8, 31), "input x: dimension 2 is 31, the model takes only 32"),
    (
        "ops_range",
        (8, 32),
        "input x: shape [8, 32] has 2 dimension(s), the model takes 3: [1, 2..512, 32]",
    ),
    (
        "ops_enumerated",
        (1, 5, 32),
        "input x: shape [1, 5, 32] is not one of the shapes the model accepts: "
        "[1,4,32], [1,8,32], [1,24,32]",
    ),
    (
        "conv_enumerated",
        (1, 3, 100, 100),
        "input x: shape [1, 3, 100, 100] is not one of the shapes the model accepts: "
        "[1,3,32,32], [1,3,64,48], [1,3,96,96]",
    ),
    (
        "conv_range",
        (1, 3, 64, 300),
        "input x: dimension 3 is 300, outside the range 32..256 the model accepts",
    ),
]


@pytest.mark.parametrize(("name", "shape", "message"), REFUSED)
def test_shape_outside_what_the_model_accepts_is_one_clear_line(packages, name, shape, message):
    loaded = coreml_compile.load(packages[name][0], backend="reference")
    x = np.zeros(shape, np.float32)
    for call in (lambda: loaded.predict({"x": x}), lambda: loaded(torch.from_numpy(x))):
        with pytest.raises(InputSpecError) as caught:
            call()
        assert str(caught.value).startswith(message)
        assert "\n" not in str(caught.value)


def test_reference_executor_checks_the_declared_shapes_it_is_given(packages):
    mlmodel, program = read_program(packages["ops_range"][0])
    declared = description_shapes(mlmodel.get_spec().description)
    executor = ReferenceExecutor(program, input_shapes=declared)
    with pytest.raises(InputSpecError, match="outside the range 2..512"):
        executor.predict({"x": np.zeros((1, 600, 32), np.float32)})
    # Without the description, the program alone knows the rank and the fixed sizes.
    loose = ReferenceExecutor(program)
    assert loose.predict({"x": np.zeros((1, 600, 32), np.float32)})["grid"].shape == (
        1,
        600,
        4,
        8,
    )
    with pytest.raises(InputSpecError, match="dimension 2 is 31, the model takes only 32"):
        loose.predict({"x": np.zeros((1, 8, 31), np.float32)})


def test_input_specs_give_the_default_shape_and_what_is_accepted(packages):
    from coreml_compile.cli.main import _random_inputs

    ranged = coreml_compile.load(packages["ops_range"][0], backend="reference")
    enumerated = coreml_compile.load(packages["conv_enumerated"][0], backend="reference")
    (spec,) = ranged.input_specs().values()
    assert spec == ([1, 16, 32], True)  # still the (shape, is_float) pair callers unpack
    assert str(spec.accepts) == "[1, 2..512, 32]"
    assert enumerated.input_specs()["x"].shape == [1, 3, 64, 48]
    # run/verify make random inputs of the default shape, which the model accepts.
    for loaded in (ranged, enumerated):
        feeds = _random_inputs(loaded, {}, seed=0)
        assert list(feeds["x"].shape) == loaded.input_specs()["x"].shape
        loaded.predict(feeds)


def test_unbounded_range_from_a_description():
    feature = ct.proto.Model_pb2.FeatureDescription()
    feature.name = "x"
    array = feature.type.multiArrayType
    array.shape.extend([1, 8])
    for lower, upper in ((1, 1), (4, -1)):
        size = array.shapeRange.sizeRanges.add()
        size.lowerBound, size.upperBound = lower, upper
    accepts = InputShape.from_description(feature)
    assert accepts == InputShape((1, 8), ranges=((1, 1), (4, None)))
    assert str(accepts) == "[1, 4..]"
    accepts.check("x", (1, 100_000))
    with pytest.raises(
        InputSpecError, match=r"^input x: dimension 1 is 3, the model accepts 4 or more$"
    ):
        accepts.check("x", (1, 3))


_ok, _why = coreml_available()


@pytest.mark.apple
@pytest.mark.skipif(not _ok, reason=_why or "no Core ML")
@pytest.mark.parametrize("name", ["ops_range", "ops_enumerated", "conv_range", "conv_enumerated"])
def test_core_ml_runs_flexible_packages_at_each_allowed_shape(packages, name):
    path, runs, expected = packages[name]
    loaded = coreml_compile.load(path, backend="coreml", compute_units="cpu_only")
    _run_and_compare(loaded, runs, expected, f"core ml {name}")
    refused = {
        "ops_range": (1, 600, 32),
        "ops_enumerated": (1, 5, 32),
        "conv_range": (1, 3, 64, 300),
        "conv_enumerated": (1, 3, 100, 100),
    }[name]
    with pytest.raises(InputSpecError):
        loaded.predict({"x": np.zeros(refused, np.float32)})
