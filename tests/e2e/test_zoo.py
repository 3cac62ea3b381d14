"""End-to-end tests on the project's model zoo (models/): transformers, recurrent nets,
segmentation and mobile CNNs, each written here with seeded weights.

Each model is compiled as a plain Core ML model (``allow_fallback=False``: every op must
lower) in fp32 and fp16, saved, re-opened with ``coreml_compile.load`` and run on its
example inputs by the reference executor; the outputs must agree with torch's: cosine at
least 0.9999 (fp32) / 0.999 (fp16), and max abs error within the project's tolerance
relative to the output's scale (tests/conftest.py). A model that cannot compile yet is
marked ``xfail(strict=True)`` with the op that blocks it, so it fails loudly once it can.
"""

from __future__ import annotations

import importlib

import pytest
import torch

import coreml_compile
from coreml_compile.compiler.frontends.torch_export import export
from tests.conftest import assert_close

pytestmark = pytest.mark.slow

MINIMUM_COSINE = {"fp32": 0.9999, "fp16": 0.999}

# Model file -> the exact op that keeps it from compiling whole (none today).
BLOCKED: dict[str, str] = {}

ZOO = [
    "bert",
    "llama",
    "vit",
    "swin",
    "unet",
    "text_rnn",
    "deeplab",
    "shufflenet",
    "mobilevit",
]


def _param(name: str):
    if name in BLOCKED:
        return pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=BLOCKED[name]))
    return name


def _outputs(value) -> tuple[torch.Tensor, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


@pytest.mark.parametrize("name", [_param(n) for n in ZOO])
def test_zoo_model_runs_entirely_on_core_ml(tmp_path, name):
    module = importlib.import_module(name)
    model = module.model()
    inputs = module.example_inputs()
    # The model-file convention: the factory is seeded (verify rebuilds the model).
    again = module.model().state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, again[key]), f"{name}: {key} differs between two builds"
    with torch.no_grad():
        expected = _outputs(model(*inputs))
    for value in expected:
        assert torch.isfinite(value).all(), f"{name}: torch's own output is not finite"

    program = export(model, inputs)  # traced once, compiled at both precisions
    for precision in ("fp32", "fp16"):
        compiled = coreml_compile.compile(program, precision=precision, allow_fallback=False)
        assert compiled.plan is None, f"{name} {precision}: partitioned"
        assert compiled.report.fallback_reasons == {}
        path = compiled.save(tmp_path / f"{name}-{precision}.mlpackage")
        loaded = coreml_compile.load(path)
        assert loaded.plan is None, f"{name} {precision}: the saved package is partitioned"
        actual = _outputs(loaded(*inputs))
        assert len(actual) == len(expected)
        for i, (got, want) in enumerate(zip(actual, expected, strict=True)):
            what = f"{name} {precision} output {i}"
            assert_close(got, want, precision, what)
            cosine = torch.nn.functional.cosine_similarity(
                got.double().flatten(), want.double().flatten(), 0
            ).item()
            assert cosine >= MINIMUM_COSINE[precision], f"{what}: cosine {cosine:.6f}"
