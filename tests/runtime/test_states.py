"""Stateful packages (Core ML states, iOS18): make_state(), predict(..., state=...).

The packages are written by coremltools from MIL programs that keep a cache as state:
one writes each call's rows with ``slice_update`` at a run-time position and length, one
keeps two states, written with ``scatter`` at run-time indices and with a running sum.
Every call's outputs and the state's contents are checked against a numpy simulation of
the same program; fp16 rounding is simulated with numpy's float16.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import coreml_compile
from coreml_compile.compiler.mil import import_coremltools, quiet_coremltools
from coreml_compile.errors import ExecutionError, InputSpecError, PackageError
from coreml_compile.runtime import mil_kernels
from coreml_compile.runtime.devices import coreml_available
from coreml_compile.runtime.package import read_program
from coreml_compile.runtime.reference import ReferenceExecutor
from coreml_compile.runtime.state import StateSpec, TorchState
from tests.conftest import assert_close

ct = import_coremltools()

ROWS, WIDTH = 16, 4
# (position, length) of each call's rows: they fill the cache, then two calls overwrite.
CALLS = [(0, 2), (2, 1), (3, 3), (6, 1), (7, 2), (9, 1), (10, 4), (14, 2), (1, 3), (0, 1)]


def _int32(*values: int) -> np.ndarray:
    return np.array(values, np.int32)


def _rows_program(rows: int = ROWS):
    """x [1, n, 4] written into state ``cache`` [1, rows, 4] (fp16) at rows
    [pos, pos + n) with slice_update; y = the column sums of the updated cache."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import Function, Program, get_new_symbol, types

    placeholders = {
        "x": mb.placeholder(shape=[1, get_new_symbol(), WIDTH], dtype=types.fp32),
        "pos": mb.placeholder(shape=[1], dtype=types.int32),
        "cache": mb.state_tensor_placeholder(shape=[1, rows, WIDTH], dtype=types.fp16),
    }
    with Function(placeholders, opset_version=ct.target.iOS18) as function:
        pos = function.inputs["pos"]
        x = mb.cast(x=function.inputs["x"], dtype="fp16")
        cache = mb.read_state(input=function.inputs["cache"])
        length = mb.slice_by_index(x=mb.shape(x=x), begin=[1], end=[2])
        begin = mb.concat(values=[_int32(0), pos, _int32(0)], axis=0)
        end = mb.concat(values=[_int32(1), mb.add(x=pos, y=length), _int32(WIDTH)], axis=0)
        updated = mb.slice_update(x=cache, update=x, begin=begin, end=end)
        mb.coreml_update_state(state=function.inputs["cache"], value=updated)
        total = mb.reduce_sum(x=updated, axes=[1])
        function.set_outputs([mb.cast(x=total, dtype="fp32", name="y")])
    program = Program()
    program.add_function("main", function)
    return program


def _two_states_program():
    """State ``keys`` [1, 16, 4] gets x's rows at indices pos..pos+n-1 (scatter along
    axis 1); state ``total`` [1, 4] adds x's column sums. Outputs: the largest key per
    column ("peak") and the new total ("total_out")."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import Function, Program, get_new_symbol, types

    placeholders = {
        "x": mb.placeholder(shape=[1, get_new_symbol(), WIDTH], dtype=types.fp32),
        "pos": mb.placeholder(shape=[1], dtype=types.int32),
        "keys": mb.state_tensor_placeholder(shape=[1, ROWS, WIDTH], dtype=types.fp16),
        "total": mb.state_tensor_placeholder(shape=[1, WIDTH], dtype=types.fp16),
    }
    with Function(placeholders, opset_version=ct.target.iOS18) as function:
        x = mb.cast(x=function.inputs["x"], dtype="fp16")
        start = mb.squeeze(x=function.inputs["pos"])
        n = mb.gather(x=mb.shape(x=x), indices=1, axis=0)
        indices = mb.range_1d(start=start, end=mb.add(x=start, y=n), step=1)
        keys = mb.read_state(input=function.inputs["keys"])
        keys = mb.scatter(data=keys, indices=indices, updates=x, axis=1, mode="update")
        mb.coreml_update_state(state=function.inputs["keys"], value=keys)
        total = mb.add(
            x=mb.read_state(input=function.inputs["total"]), y=mb.reduce_sum(x=x, axes=[1])
        )
        total = mb.coreml_update_state(state=function.inputs["total"], value=total)
        function.set_outputs(
            [
                mb.cast(x=mb.reduce_max(x=keys, axes=[1]), dtype="fp32", name="peak"),
                mb.cast(x=total, dtype="fp32", name="total_out"),
            ]
        )
    program = Program()
    program.add_function("main", function)
    return program


def _save(program, path) -> str:
    with quiet_coremltools():
        mlmodel = ct.convert(
            program,
            convert_to="mlprogram",
            minimum_deployment_target=ct.target.iOS18,
            skip_model_load=True,
            pass_pipeline=ct.PassPipeline.EMPTY,
            inputs=[
                ct.TensorType(
                    name="x", shape=ct.Shape([1, ct.RangeDim(1, ROWS, 2), WIDTH]), dtype=np.float32
                ),
                ct.TensorType(name="pos", shape=(1,), dtype=np.int32),
            ],
        )
        mlmodel.save(str(path))
    return str(path)


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    folder = tmp_path_factory.mktemp("states")
    return {
        "rows": _save(_rows_program(), folder / "rows.mlpackage"),
        "rows32": _save(_rows_program(rows=32), folder / "rows32.mlpackage"),
        "two": _save(_two_states_program(), folder / "two.mlpackage"),
    }


def _inputs(seed: int) -> list[dict[str, np.ndarray]]:
    """One feed per call of CALLS; values that fp16 must round (random floats)."""
    rng = np.random.default_rng(seed)
    return [
        {"x": rng.standard_normal((1, n, WIDTH)).astype(np.float32), "pos": _int32(pos)}
        for pos, n in CALLS
    ]


class RowsSimulation:
    """What the rows program computes, in numpy."""

    def __init__(self, rows: int = ROWS):
        self.cache = np.zeros((1, rows, WIDTH), np.float16)

    def step(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x, pos = feed["x"].astype(np.float16), int(feed["pos"][0])
        self.cache[:, pos : pos + x.shape[1]] = x
        # reduce_sum in fp16: summed wider, rounded once (tolerance covers the order).
        return {"y": self.cache.astype(np.float32).sum(1).astype(np.float16).astype(np.float32)}


class TwoStatesSimulation:
    def __init__(self):
        self.keys = np.zeros((1, ROWS, WIDTH), np.float16)
        self.total = np.zeros((1, WIDTH), np.float16)

    def step(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x, pos = feed["x"].astype(np.float16), int(feed["pos"][0])
        self.keys[:, pos : pos + x.shape[1]] = x
        column_sums = x.astype(np.float32).sum(1).astype(np.float16)
        self.total = (self.total.astype(np.float32) + column_sums).astype(np.float16)
        return {
            "peak": self.keys.max(1).astype(np.float32),
            "total_out": self.total.astype(np.float32),
        }


def _run_rows(model, state, feeds, simulation, what: str) -> None:
    for i, feed in enumerate(feeds):
        want = simulation.step(feed)
        got = model.predict(feed, state=state)
        assert_close(got["y"], want["y"], "fp16", f"{what} call {i}")
        # The state holds exactly the fp16 values written into it.
        np.testing.assert_array_equal(state.read_state("cache"), simulation.cache)


# -- the rows package ------------------------------------------------------------------


def test_states_are_not_inputs(packages):
    model = coreml_compile.load(packages["rows"], backend="reference")
    assert model.input_names == ["x", "pos"]
    assert list(model.input_specs()) == ["x", "pos"]
    state = model.make_state()
    assert isinstance(state, TorchState)
    assert state.names == ["cache"]
    assert repr(state) == "TorchState(cache [1, 16, 4] fp16)"
    cache = state.read_state("cache")
    assert cache.dtype == np.float16 and cache.shape == (1, ROWS, WIDTH)
    assert not cache.any()  # a new state is zeros


def test_ten_calls_with_one_state_match_numpy(packages):
    model = coreml_compile.load(packages["rows"], backend="reference")
    _run_rows(model, model.make_state(), _inputs(0), RowsSimulation(), "rows")


def test_two_states_do_not_interfere(packages):
    model = coreml_compile.load(packages["rows"], backend="reference")
    first, second = model.make_state(), model.make_state()
    sim_first, sim_second = RowsSimulation(), RowsSimulation()
    feeds_first, feeds_second = _inputs(1), _inputs(2)
    # Interleaved, the second state one call behind.
    for i in range(len(CALLS)):
        _run_rows(model, first, feeds_first[i : i + 1], sim_first, f"first, call {i}")
        if i:
            _run_rows(model, second, feeds_second[i - 1 : i], sim_second, f"second, call {i}")
    assert not np.array_equal(first.read_state("cache"), second.read_state("cache"))


def test_calling_the_model_with_a_state(packages):
    model = coreml_compile.load(packages["rows"], backend="reference")
    state, simulation = model.make_state(), RowsSimulation()
    for feed in _inputs(3)[:3]:
        want = simulation.step(feed)
        got = model(torch.from_numpy(feed["x"]), torch.from_numpy(feed["pos"]), state=state)
        assert_close(got, torch.from_numpy(want["y"]), "fp16", "__call__")
    np.testing.assert_array_equal(state.read_state("cache"), simulation.cache)


def test_written_state_values_are_read_by_the_program(packages):
    model = coreml_compile.load(packages["rows"], backend="reference")
    state, simulation = model.make_state(), RowsSimulation()
    start = np.random.default_rng(4).standard_normal((1, ROWS, WIDTH))  # float64, rounded
    state.write_state("cache", start)
    simulation.cache[:] = start.astype(np.float16)
    _run_rows(model, state, _inputs(5)[:2], simulation, "written")


def test_a_failed_prediction_leaves_the_state_as_it_was(packages):
    model = coreml_compile.load(packages["rows"], backend="reference")
    state, simulation = model.make_state(), RowsSimulation()
    _run_rows(model, state, _inputs(6)[:2], simulation, "before")
    before = state.read_state("cache")
    # Rows 15..17 of a 16-row cache: the slice is cut short, the update does not fit.
    x = np.ones((1, 3, WIDTH), np.float32)
    with pytest.raises(ExecutionError, match="slice_update"):
        model.predict({"x": x, "pos": _int32(15)}, state=state)
    np.testing.assert_array_equal(state.read_state("cache"), before)


def test_a_write_is_rounded_to_the_state_dtype_and_kept_until_commit():
    state = TorchState({"cache": StateSpec((2,), "fp16"), "count": StateSpec((1,), "int32")})
    slots = state.slots(torch.device("cpu"))
    value = torch.tensor([1 / 3, 70000.0])  # not fp16 values: rounded, and inf
    slots["cache"].write(value)
    rounded = value.to(torch.float16)
    # A read later in the same run sees what the state will hold...
    assert torch.equal(slots["cache"].read(), rounded.to(torch.float32))
    assert slots["count"].read().dtype == torch.int64  # integers are worked on as int64
    assert not state.read_state("cache").any()  # ...which it holds only once committed
    slots["cache"].commit()
    np.testing.assert_array_equal(state.read_state("cache"), rounded.numpy())


def test_reference_executor_runs_states_directly(packages):
    _mlmodel, program = read_program(packages["rows"])
    executor = ReferenceExecutor(program)
    assert list(executor.inputs) == ["x", "pos"]
    assert executor.states == {"cache": StateSpec((1, ROWS, WIDTH), "fp16")}
    state, simulation = executor.make_state(), RowsSimulation()
    for feed in _inputs(7)[:4]:
        want = simulation.step(feed)
        assert_close(executor.predict(feed, state)["y"], want["y"], "fp16", "executor")
    np.testing.assert_array_equal(state.read_state("cache"), simulation.cache)


# -- the two-state package (scatter at run-time indices) -------------------------------


def test_two_states_with_scatter_match_numpy(packages):
    model = coreml_compile.load(packages["two"], backend="reference")
    state, simulation = model.make_state(), TwoStatesSimulation()
    assert repr(state) == "TorchState(keys [1, 16, 4] fp16, total [1, 4] fp16)"
    for i, feed in enumerate(_inputs(8)):
        want = simulation.step(feed)
        got = model.predict(feed, state=state)
        for name in ("peak", "total_out"):
            assert_close(got[name], want[name], "fp16", f"{name}, call {i}")
        np.testing.assert_array_equal(state.read_state("keys"), simulation.keys)
        assert_close(
            state.read_state("total").astype(np.float32),
            simulation.total.astype(np.float32),
            "fp16",
            f"total, call {i}",
        )


# -- errors ----------------------------------------------------------------------------


def test_a_stateful_model_needs_a_state(packages):
    model = coreml_compile.load(packages["rows"], backend="reference")
    feed = _inputs(0)[0]
    message = r"^this model keeps state \(cache\): pass state=model\.make_state\(\)$"
    with pytest.raises(InputSpecError, match=message):
        model.predict(feed)
    with pytest.raises(InputSpecError, match=message):
        model(torch.from_numpy(feed["x"]), torch.from_numpy(feed["pos"]))
    two = coreml_compile.load(packages["two"], backend="reference")
    with pytest.raises(
        InputSpecError,
        match=r"^this model keeps state \(keys, total\): pass state=model\.make_state\(\)$",
    ):
        two.predict(feed)


def test_a_state_of_another_model_is_refused(packages):
    model = coreml_compile.load(packages["rows"], backend="reference")
    other = coreml_compile.load(packages["rows32"], backend="reference")
    feed = _inputs(0)[0]
    with pytest.raises(
        InputSpecError,
        match=r"^this state belongs to another model: it holds cache \[1, 32, 4\] fp16; "
        r"this model keeps cache \[1, 16, 4\] fp16 \(make one with its make_state\(\)\)$",
    ):
        model.predict(feed, state=other.make_state())
    two = coreml_compile.load(packages["two"], backend="reference")
    with pytest.raises(
        InputSpecError, match=r"^this state belongs to another model: it holds keys"
    ):
        model.predict(feed, state=two.make_state())
    with pytest.raises(
        InputSpecError, match=r"^state= takes what model\.make_state\(\) returns, not dict$"
    ):
        model.predict(feed, state={"cache": np.zeros((1, ROWS, WIDTH), np.float16)})


def test_a_model_without_states_takes_none(tmp_path):
    model = coreml_compile.compile(torch.nn.ReLU(), (torch.randn(2, 3),), backend="reference")
    x = np.zeros((2, 3), np.float32)
    state = TorchState({"cache": StateSpec((1, ROWS, WIDTH), "fp16")})
    message = r"^this model keeps no state: call it without state=$"
    with pytest.raises(InputSpecError, match=message):
        model.predict({"input": x}, state=state)
    with pytest.raises(InputSpecError, match=message):
        model(torch.from_numpy(x), state=state)
    with pytest.raises(
        InputSpecError,
        match=r"^this model keeps no state: make_state\(\) is for models with states$",
    ):
        model.make_state()


def test_reading_and_writing_a_state_checks_names_and_shapes(packages):
    state = coreml_compile.load(packages["rows"], backend="reference").make_state()
    with pytest.raises(
        InputSpecError, match=r"^no state kv \(this state holds cache \[1, 16, 4\] fp16\)$"
    ):
        state.read_state("kv")
    with pytest.raises(
        InputSpecError, match=r"^state cache: expected shape \[1, 16, 4\], got \[16, 4\]$"
    ):
        state.write_state("cache", np.zeros((ROWS, WIDTH), np.float16))


def test_a_partitioned_package_with_states_is_refused(tmp_path, monkeypatch):
    from coreml_compile.runtime import package

    def fn(a):  # inv has no Core ML lowering: a fallback partition
        return torch.linalg.inv(torch.relu(a * 0.5 + 1) - 0.25 + 3 * torch.eye(4))

    from tests.ops.samples import Fn

    compiled = coreml_compile.compile(Fn(fn), (torch.rand(4, 4),))
    assert compiled.plan is not None
    path = compiled.save(tmp_path / "partitioned.mlpackage")
    # No compile writes such a package: pretend its programs declare a state.
    monkeypatch.setattr(package, "_state_names", lambda program: ["cache"])
    with pytest.raises(PackageError, match=r"a partitioned package declares state\(s\) cache"):
        coreml_compile.load(path, backend="reference")


# -- kernels the programs above rely on, at run-time sizes -----------------------------


SLICES = {
    # begin, end, stride, begin_mask, end_mask, squeeze_mask -> the numpy index
    "plain": (([0, 1, 2], [2, 4, 5], None, None, None, None), np.s_[0:2, 1:4, 2:5]),
    "stride": (([0, 0, 1], [2, 5, 6], [1, 2, 2], None, None, None), np.s_[0:2, 0:5:2, 1:6:2]),
    "negative": (
        ([1, 4, 5], [0, 0, 0], [-1, -2, -1], None, None, None),
        np.s_[1:0:-1, 4:0:-2, 5:0:-1],
    ),
    "masks": (
        ([1, 2, 3], [0, 0, 4], [1, 1, -1], [True, False, True], [False, True, False], None),
        np.s_[:0, 2:, :4:-1],
    ),
    "squeeze": (([1, 0, 2], [2, 5, 3], None, None, None, [True, False, True]), np.s_[1, 0:5, 2]),
    "negative_begin": (([-2, -3, 0], [3, 5, 6], None, None, None, None), np.s_[-2:3, -3:5, 0:6]),
}


@pytest.mark.parametrize("case", list(SLICES))
def test_slice_update_and_slice_by_index_match_numpy(case):
    (begin, end, stride, begin_mask, end_mask, squeeze_mask), index = SLICES[case]
    x = np.arange(3 * 5 * 6, dtype=np.float32).reshape(3, 5, 6)
    update = -np.arange(x[index].size, dtype=np.float32).reshape(x[index].shape) - 1
    want = x.copy()
    want[index] = update

    def as_tensor(values):  # run-time begin/end: int tensors, as a computed value arrives
        return None if values is None else torch.tensor(values)

    params = dict(
        begin=as_tensor(begin),
        end=as_tensor(end),
        stride=stride,
        begin_mask=begin_mask,
        end_mask=end_mask,
        squeeze_mask=squeeze_mask,
    )
    got = mil_kernels.KERNELS["slice_update"](
        x=torch.from_numpy(x), update=torch.from_numpy(update), **params
    )
    np.testing.assert_array_equal(got.numpy(), want)
    sliced = mil_kernels.KERNELS["slice_by_index"](x=torch.from_numpy(x), **params)
    np.testing.assert_array_equal(sliced.numpy(), x[index])


def _numpy_combine(current, update, mode):
    return {
        "update": lambda: update,
        "add": lambda: current + update,
        "sub": lambda: current - update,
        "mul": lambda: current * update,
        "div": lambda: current / update,
        "max": lambda: np.maximum(current, update),
        "min": lambda: np.minimum(current, update),
    }[mode]()


MODES = ["update", "add", "sub", "mul", "div", "max", "min"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_scatter_matches_numpy(mode, axis):
    rng = np.random.default_rng(9)
    data = rng.uniform(1, 2, (4, 5, 3)).astype(np.float32)
    size = data.shape[axis]
    indices = np.array([size - 1, 0, 2], np.int32)  # distinct: "update" is then defined
    shape = list(data.shape)
    shape[axis] = len(indices)
    updates = rng.uniform(1, 2, shape).astype(np.float32)
    want = data.copy()
    for i, position in enumerate(indices):
        target = [slice(None)] * 3
        target[axis] = position
        source = [slice(None)] * 3
        source[axis] = i
        want[tuple(target)] = _numpy_combine(want[tuple(target)], updates[tuple(source)], mode)
    got = mil_kernels.KERNELS["scatter"](
        data=torch.from_numpy(data),
        indices=torch.from_numpy(indices).to(torch.int64),
        updates=torch.from_numpy(updates),
        axis=axis,
        mode=mode,
    )
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("axis", [0, 1])
def test_scatter_along_axis_matches_numpy(mode, axis):
    rng = np.random.default_rng(10)
    data = rng.uniform(1, 2, (4, 6)).astype(np.float32)
    # Each column (axis 0) or row (axis 1) gets distinct positions.
    other = data.shape[1 - axis]
    picks = np.stack([rng.permutation(data.shape[axis])[:3] for _ in range(other)])
    indices = picks.T if axis == 0 else picks
    updates = rng.uniform(1, 2, indices.shape).astype(np.float32)
    want = data.copy()
    for position in np.ndindex(indices.shape):
        target = list(position)
        target[axis] = indices[position]
        want[tuple(target)] = _numpy_combine(want[tuple(target)], updates[position], mode)
    got = mil_kernels.KERNELS["scatter_along_axis"](
        data=torch.from_numpy(data),
        indices=torch.from_numpy(indices.astype(np.int64)),
        updates=torch.from_numpy(updates),
        axis=axis,
        mode=mode,
    )
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)


# -- Core ML itself ----------------------------------------------------------------------

_ok, _why = coreml_available()


@pytest.mark.apple
@pytest.mark.skipif(not _ok, reason=_why or "no Core ML")
def test_core_ml_runs_the_stateful_packages(packages):
    from coreml_compile.runtime.coreml_executor import CoreMLState

    model = coreml_compile.load(packages["rows"], backend="coreml", compute_units="cpu_only")
    assert model.input_names == ["x", "pos"]
    state, simulation = model.make_state(), RowsSimulation()
    assert isinstance(state, CoreMLState)
    assert not state.read_state("cache").any()
    for i, feed in enumerate(_inputs(0)):
        want = simulation.step(feed)
        got = model.predict(feed, state=state)
        assert_close(got["y"], want["y"], "fp16", f"core ml call {i}")
        assert_close(
            state.read_state("cache").astype(np.float32),
            simulation.cache.astype(np.float32),
            "fp16",
            f"core ml cache, call {i}",
        )
    with pytest.raises(InputSpecError, match=r"^this model keeps state \(cache\)"):
        model.predict(_inputs(0)[0])
    reference = coreml_compile.load(packages["rows"], backend="reference")
    with pytest.raises(InputSpecError, match=r"^this state was made for the reference backend"):
        model.predict(_inputs(0)[0], state=reference.make_state())

    two = coreml_compile.load(packages["two"], backend="coreml", compute_units="cpu_only")
    state, simulation = two.make_state(), TwoStatesSimulation()
    for i, feed in enumerate(_inputs(8)):
        want = simulation.step(feed)
        got = two.predict(feed, state=state)
        for name in ("peak", "total_out"):
            assert_close(got[name], want[name], "fp16", f"core ml {name}, call {i}")
