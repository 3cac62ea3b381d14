"""End-to-end regression tests on the project's own ResNet and VGG definitions.

Each compiles the model, saves the package, re-opens it with coremltools (MLModel and the
milproto loader: proof the saved program is well formed), checks the op counts the
architecture implies, and runs the saved package with the reference executor against
torch.
"""

from __future__ import annotations

import pytest
import torch

import coreml_compile
from coreml_compile.runtime.package import read_program
from tests.conftest import assert_close

pytestmark = pytest.mark.slow


def _ops(program) -> dict[str, int]:
    counts: dict[str, int] = {}
    for op in program.functions["main"].operations:
        if op.op_type != "const":
            counts[op.op_type] = counts.get(op.op_type, 0) + 1
    return counts


RESNET_BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet50": (3, 4, 6, 3)}


def _resnet_expected(name: str) -> dict[str, int]:
    blocks = sum(RESNET_BLOCKS[name])
    convs_per_block = 2 if name == "resnet18" else 3
    downsamples = 3 if name == "resnet18" else 4  # resnet50's first stage widens channels
    convs = 1 + blocks * convs_per_block + downsamples
    # After -O2: batch norms folded into the convs, pooling + flatten one reduce_mean.
    return {
        "conv": convs,
        "relu": 1 + blocks * convs_per_block,
        "add": blocks,
        "max_pool": 1,
        "reduce_mean": 1,
        "linear": 1,
        "cast": 2,
    }


VGG_CONVS = {"vgg11": 8, "vgg16": 13}


def _vgg_expected(name: str) -> dict[str, int]:
    convs = VGG_CONVS[name]
    # After -O2: dropout and the 7x7 -> 7x7 adaptive pool are gone.
    return {
        "conv": convs,
        "relu": convs + 2,
        "max_pool": 5,
        "reshape": 1,
        "linear": 3,
        "cast": 2,
    }


CASES = [
    ("resnet", "resnet18", _resnet_expected("resnet18")),
    ("resnet", "resnet50", _resnet_expected("resnet50")),
    ("vgg", "vgg11", _vgg_expected("vgg11")),
    ("vgg", "vgg16", _vgg_expected("vgg16")),
]


@pytest.mark.parametrize("module_name,factory,expected_ops", CASES, ids=[c[1] for c in CASES])
def test_model_end_to_end(tmp_path, module_name, factory, expected_ops):
    module = __import__(module_name)
    model = getattr(module, factory)()
    (x,) = module.example_inputs()
    compiled = coreml_compile.compile(model, (x,))
    assert compiled.report.mil_ops == expected_ops

    path = compiled.save(tmp_path / f"{factory}.mlpackage")
    mlmodel, program = read_program(path)
    assert [o.name for o in mlmodel.get_spec().description.output] == ["output"]
    assert list(mlmodel.get_spec().description.output[0].type.multiArrayType.shape) == [1, 1000]
    assert _ops(program) == expected_ops

    loaded = coreml_compile.load(path)
    with torch.no_grad():
        expected = model(x)
    actual = loaded(x)
    assert actual.shape == (1, 1000)
    assert_close(actual, expected, "fp16", f"{factory} saved package")
    cosine = torch.nn.functional.cosine_similarity(actual.flatten(), expected.flatten(), 0)
    assert cosine.item() > 0.9999


@pytest.mark.parametrize("target", ["iOS16", "iOS18"])
def test_resnet18_with_a_fallback_op_in_the_middle(tmp_path, target):
    import resnet

    model = resnet.resnet18_with_fallback()
    (x,) = resnet.example_inputs()
    compiled = coreml_compile.compile(model, (x,), minimum_deployment_target=target)
    assert [s.kind for s in compiled.plan.steps] == ["coreml", "fallback", "coreml"]
    reasons = compiled.report.fallback_reasons
    assert reasons == {"erfinv": "aten::erfinv.default: no Core ML lowering"}
    # Both Core ML halves together hold what the plain ResNet-18 lowers to, the tanh
    # and scale before the fallback, and the casts at the two new boundaries (fp32 I/O
    # around an fp16 program).
    plain = _resnet_expected("resnet18")
    assert compiled.report.mil_ops == {**plain, "cast": plain["cast"] + 2, "tanh": 1, "mul": 1}
    path = compiled.save(tmp_path / "r18f.mlpackage")
    loaded = coreml_compile.load(path)
    with torch.no_grad():
        expected = model(x)  # erfinv included: the fallback step must compute it
        without = resnet.resnet18()(x)
    actual = loaded(x)
    # The fallback op matters: leaving it out changes the result.
    assert not torch.allclose(expected, without, atol=1e-2)
    assert_close(actual, expected, "fp16", "resnet18 with fallback, saved package")
    cosine = torch.nn.functional.cosine_similarity(actual.flatten(), expected.flatten(), 0)
    assert cosine.item() > 0.9999
