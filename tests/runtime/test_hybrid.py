"""Partitioned models: Core ML where it can, torch where it cannot, one package.

Every case compiles, saves, loads the package back and runs it against torch.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import coreml_compile
from coreml_compile.compiler.frontends.torch_export import trace
from coreml_compile.compiler.ir import TensorType
from coreml_compile.compiler.ops import unsupported_reason
from coreml_compile.errors import DeviceNotAvailable, PlanFormatError, UnsupportedOpError
from tests.conftest import assert_close
from tests.ops.samples import Fn


def inv(a):  # no Core ML lowering: an `aten` fallback node
    return torch.linalg.inv(a)


def block(a):  # enough supported work for the default strategy to keep it on Core ML
    return torch.relu(a * 0.5 + 1) - 0.25


CASES = {
    "start": (lambda a: block(inv(a)), ["fallback", "coreml"]),
    "middle": (lambda a: block(inv(block(a) + 3)), ["coreml", "fallback", "coreml"]),
    "end": (lambda a: inv(block(a) + 3), ["coreml", "fallback"]),
    # the branch without the fallback op joins the Core ML work after it
    "parallel": (lambda a: block(inv(a) + block(a)), ["fallback", "coreml"]),
    "residual": (lambda a: block(a + inv(block(a) + 3)), ["coreml", "fallback", "coreml"]),
    "only_op": (inv, ["fallback"]),
    "several": (
        lambda a: block(torch.erfinv(torch.tanh(block(inv(block(a) + 3))) * 0.5)),
        ["coreml", "fallback", "coreml", "fallback", "coreml"],
    ),
}


def _x():
    return torch.randn(4, 4, generator=torch.Generator().manual_seed(0)) + 4 * torch.eye(4)


def _round_trip(fn, tmp_path, target="iOS16", **options):
    x = _x()
    compiled = coreml_compile.compile(Fn(fn), (x,), minimum_deployment_target=target, **options)
    path = compiled.save(tmp_path / "model.mlpackage")
    return compiled, coreml_compile.load(path), x


@pytest.mark.parametrize("target", ["iOS16", "iOS18"])
@pytest.mark.parametrize("case", list(CASES))
def test_save_load_run_agrees_with_torch(case, target, tmp_path):
    fn, kinds = CASES[case]
    compiled, loaded, x = _round_trip(fn, tmp_path, target)
    assert [s.kind for s in compiled.plan.steps] == kinds
    assert [s.kind for s in loaded.plan.steps] == kinds
    with torch.no_grad():
        want = fn(x)
    assert_close(compiled(x), want, "fp16", f"{case} compiled")
    assert_close(loaded(x), want, "fp16", f"{case} loaded")
    # The fallback partitions fell back for the op Core ML lacks, and say so.
    assert all("no Core ML lowering" in r for r in compiled.report.fallback_reasons.values())


def test_fp32_partitioned_model_matches_torch_closely(tmp_path):
    fn = CASES["several"][0]
    compiled, loaded, x = _round_trip(fn, tmp_path, precision="fp32")
    assert_close(loaded(x), fn(x), "fp32", "several fp32")


def test_fully_supported_model_is_a_plain_package(tmp_path):
    compiled, loaded, x = _round_trip(block, tmp_path)
    assert compiled.plan is None and loaded.plan is None
    assert compiled.report.coreml_share == 1.0
    assert not (tmp_path / "model.mlpackage" / "Data" / "com.coreml-compile").exists()
    manifest = json.loads((tmp_path / "model.mlpackage" / "Manifest.json").read_text())
    assert {e["author"] for e in manifest["itemInfoEntries"].values()} == {"com.apple.CoreML"}


@pytest.mark.parametrize("target", ["iOS16", "iOS18"])
def test_package_opens_in_coremltools_and_holds_no_pickle(target, tmp_path):
    import coremltools as ct

    compiled, _loaded, _x = _round_trip(CASES["several"][0], tmp_path, target)
    path = tmp_path / "model.mlpackage"
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    functions = [f.name for f in spec.description.functions]
    if target == "iOS18":  # Core ML partitions are functions of one multifunction model
        assert functions == ["partition_0", "partition_2", "partition_4"]
        assert spec.description.defaultFunctionName == "partition_0"
    else:  # the first is the root model, the others nested packages
        assert functions == []
        nested = sorted(p.name for p in (path / "Data" / "com.coreml-compile").glob("*.mlpackage"))
        assert nested == ["partition_2.mlpackage", "partition_4.mlpackage"]
        for item in nested:
            ct.models.MLModel(
                str(path / "Data" / "com.coreml-compile" / item), skip_model_load=True
            )
    ours = path / "Data" / "com.coreml-compile"
    assert {p.name for p in ours.iterdir() if p.is_file()} == {"plan.json", "arrays.bin"}
    for f in ours.rglob("*"):
        if f.is_file():
            assert not f.read_bytes().startswith(b"\x80"), f"{f} looks like a pickle"


def test_report_shares_partitions_and_reasons():
    x = _x()
    compiled = coreml_compile.compile(Fn(CASES["middle"][0]), (x,))
    report = compiled.report
    nodes = sum(s.node_count for s in compiled.plan.steps)
    assert report.coreml_share == pytest.approx((nodes - 1) / nodes)
    assert len(report.partitions) == 3 and "fallback" in report.partitions[1]
    assert list(report.fallback_reasons.values()) == [
        "aten::linalg_inv.default: no Core ML lowering"
    ]


def test_reasons_name_rank_and_float64():
    x = _x()

    def rank6(a):
        # lower_rank merges axes that stay adjacent; reversing them all leaves none to merge
        rank6 = a.reshape(1, 2, 1, 2, 2, 2).permute(5, 4, 3, 2, 1, 0)
        return inv(a) + torch.relu(rank6).reshape(4, 4)

    compiled = coreml_compile.compile(Fn(rank6), (x,), min_coreml_nodes=1)
    reasons = " | ".join(compiled.report.fallback_reasons.values())
    assert "rank 6 exceeds Core ML's limit of 5" in reasons

    # The frontends hold float64 in float32; a float64 value in the IR cannot lower.
    graph = trace(Fn(lambda a: a * 3), (x,))
    (node,) = graph.nodes
    node.outputs[0].type = TensorType("float64", node.outputs[0].type.shape)
    assert "Core ML has no float64 tensors" in unsupported_reason(node, 16)


def test_float64_is_computed_in_float32_with_a_warning():
    # As coremltools converts it: Core ML has no float64, and a partition on torch for
    # it would keep an app from shipping the model.
    x = _x()
    model = Fn(lambda a: (block(a).double() * 3 + torch.ones(4, 4, dtype=torch.float64)).float())
    compiled = coreml_compile.compile(model, (x,), allow_fallback=False)
    assert not compiled.report.partitions
    assert any("float64" in w and "float32" in w for w in compiled.report.warnings)
    assert_close(compiled(x), model(x), "fp16", "float64 held in float32")


def test_no_fallback_lists_every_unsupported_op():
    fn = CASES["several"][0]
    with pytest.raises(UnsupportedOpError) as err:
        coreml_compile.compile(Fn(fn), (_x(),), allow_fallback=False)
    message = str(err.value)
    assert "linalg_inv" in message and "erfinv" in message


def test_strategy_decisions_and_placements_are_reported():
    x = _x()
    fn = lambda a: inv(torch.relu(inv(a)))  # noqa: E731 - one relu between two fallbacks
    default = coreml_compile.compile(Fn(fn), (x,))
    assert [s.kind for s in default.plan.steps] == ["fallback"]
    assert "below the minimum of 3" in default.report.fallback_reasons["relu"]
    battery = coreml_compile.compile(Fn(fn), (x,), strategy="battery")
    assert [s.kind for s in battery.plan.steps] == ["fallback", "coreml", "fallback"]
    placements = battery.placements()
    assert [p.where for p in placements] == ["torch:cpu", "reference:cpu", "torch:cpu"]
    assert "battery" in placements[0].reason
    assert_close(battery(x), fn(x), "fp16", "battery")


def test_load_overrides_the_fallback_device(tmp_path):
    _compiled, loaded, _x = _round_trip(CASES["middle"][0], tmp_path)
    assert loaded.placements()[1].where == "torch:cpu"
    cpu = coreml_compile.load(tmp_path / "model.mlpackage", fallback="cpu")
    assert cpu.placements()[1].reason == "asked for"
    if not torch.backends.mps.is_available():
        with pytest.raises(DeviceNotAvailable, match="mps"):
            coreml_compile.load(tmp_path / "model.mlpackage", fallback="mps")


def test_wrong_inputs_are_named(tmp_path):
    _compiled, loaded, x = _round_trip(CASES["middle"][0], tmp_path)
    with pytest.raises(Exception, match="expected shape"):
        loaded.predict({"xs_0": np.zeros((3, 4), np.float32)})
    with pytest.raises(Exception, match="missing input"):
        loaded.predict({"b": x.numpy()})


def test_corrupt_plan_is_a_clear_error(tmp_path):
    _round_trip(CASES["middle"][0], tmp_path)
    plan = tmp_path / "model.mlpackage" / "Data" / "com.coreml-compile" / "plan.json"
    doc = json.loads(plan.read_text())
    plan.write_text(json.dumps({**doc, "format": 99}))
    with pytest.raises(PlanFormatError, match="format 99"):
        coreml_compile.load(tmp_path / "model.mlpackage")


def test_tensors_are_handed_over_without_copies():
    x = _x()
    compiled = coreml_compile.compile(Fn(CASES["middle"][0]), (x,))
    executor = compiled._runner()
    produced, received = {}, {}
    for runner in executor.runners:
        inner, step = runner.run, runner.step

        def spy(tensors, inner=inner, step=step):
            received.update(zip(step.inputs, tensors, strict=True))
            outputs = inner(tensors)
            produced.update(zip(step.outputs, outputs, strict=True))
            return outputs

        runner.run = spy
    array = x.numpy()
    compiled.predict({"xs_0": array})
    # The Core ML partition's result reaches the fallback partition as the same tensor.
    (handed,) = executor.plan.steps[1].inputs
    assert received[handed] is produced[handed]
    # The numpy input is viewed, not copied, on its way in.
    assert np.shares_memory(received["xs_0"].numpy(), array)


@pytest.mark.parametrize("target", ["iOS16", "iOS18"])
def test_a_loaded_package_saves_again(target, tmp_path):
    fn = CASES["several"][0]
    _compiled, loaded, x = _round_trip(fn, tmp_path, target)
    again = coreml_compile.load(loaded.save(tmp_path / "again.mlpackage"))
    assert [s.kind for s in again.plan.steps] == CASES["several"][1]
    assert_close(again(x), fn(x), "fp16", "saved twice")
    manifest = json.loads((tmp_path / "again.mlpackage" / "Manifest.json").read_text())
    names = sorted(e["name"] for e in manifest["itemInfoEntries"].values())
    expected = ["arrays.bin", "model.mlmodel", "plan.json", "weights"]
    if target == "iOS16":
        expected = sorted([*expected, "partition_2.mlpackage", "partition_4.mlpackage"])
    assert names == expected  # each item once


def test_bool_tensors_cross_partitions(tmp_path):
    # cummin has no Core ML lowering: a fallback op reading and writing bool between two
    # Core ML partitions (Core ML programs pass bools as int32 0/1 at their edges).
    def f(a):
        mask = block(a) > 0.5
        kept = torch.cummin(mask, dim=1).values  # every column so far above? (mixed here)
        return block(torch.where(kept, a, -a)), kept

    compiled, loaded, x = _round_trip(f, tmp_path)
    assert [s.kind for s in loaded.plan.steps] == ["coreml", "fallback", "coreml"]
    (fallback,) = [n for n in compiled.graph.nodes if n.op == "aten"]
    assert [v.type.dtype for v in [*fallback.inputs, fallback.outputs[0]]] == ["bool", "bool"]
    with torch.no_grad():
        want = f(x)
    for model in (compiled, loaded):
        got = model(x)
        assert got[1].dtype == torch.bool
        assert_close(got[0], want[0], "fp16", "values")
        assert_close(got[1], want[1], "fp16", "mask")
