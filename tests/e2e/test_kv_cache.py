"""A decoder with its KV cache as Core ML state (models/llama_kv.py), end to end.

The package is compiled once with a dynamic prompt length and a dynamic filled length,
saved and loaded; one state then serves a prefill and 10 decode steps, and each step's
logits must agree with the torch model run step by step on its own buffers (fp32
cosine >= 0.9999, the same next token). Core ML keeps states in fp16, so the package's
cache is rounded where torch's is not: that is the whole of the difference allowed.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

import coreml_compile
from coreml_compile.errors import CoreMLCompileError, InputSpecError
from coreml_compile.runtime.devices import coreml_available

pytestmark = pytest.mark.slow

llama_kv = importlib.import_module("llama_kv")


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    compiled = coreml_compile.compile(
        llama_kv.model().eval(),
        llama_kv.example_inputs(),
        dynamic_shapes=llama_kv.dynamic_shapes(),
        minimum_deployment_target="iOS18",
        precision="fp32",
        allow_fallback=False,
    )
    return compiled.save(tmp_path_factory.mktemp("kv") / "decoder.mlpackage")


def _generate(run, steps: int = 10, prompt_length: int = 7) -> list[np.ndarray]:
    """Prefill a seeded prompt, then decode greedily; ``run(tokens, mask)`` -> logits."""
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, llama_kv.VOCAB, (1, prompt_length), generator=generator)
    end = prompt_length
    logits = [run(tokens, llama_kv.causal_mask(prompt_length, end))]
    for _ in range(steps):
        tokens = torch.from_numpy(logits[-1][:, -1:].argmax(-1))
        end += 1
        logits.append(run(tokens, llama_kv.causal_mask(1, end)))
    return logits


def test_prefill_then_ten_decode_steps_agree_with_torch(package):
    model = llama_kv.model().eval()

    def torch_step(tokens, mask):
        with torch.no_grad():
            return model(tokens, mask).numpy()

    loaded = coreml_compile.load(package, backend="reference")
    state = loaded.make_state()

    def package_step(tokens, mask):
        feeds = {"tokens": tokens.numpy(), "causal_mask": mask.numpy()}
        (logits,) = loaded.predict(feeds, state=state).values()
        return logits

    want = _generate(torch_step)
    got = _generate(package_step)
    assert len(got) == 11
    for step, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.shape == w.shape
        assert _cosine(g, w) >= 0.9999, step
        assert (g[:, -1].argmax(-1) == w[:, -1].argmax(-1)).all(), step
    # The cache really holds the 17 positions written, and nothing beyond them.
    cache = state.read_state("layers_0_attn_k_cache")
    assert np.abs(cache[:, :, :17]).max() > 0
    assert np.abs(cache[:, :, 17:]).max() == 0


def test_states_are_independent_and_required(package):
    loaded = coreml_compile.load(package, backend="reference")
    tokens = np.array([[5, 9, 2]], dtype=np.int64)
    mask = llama_kv.causal_mask(3, 3).numpy()
    first, second = loaded.make_state(), loaded.make_state()
    (a,) = loaded.predict({"tokens": tokens, "causal_mask": mask}, state=first).values()
    (b,) = loaded.predict({"tokens": tokens, "causal_mask": mask}, state=second).values()
    np.testing.assert_array_equal(a, b)  # a fresh state each: the same result
    with pytest.raises(InputSpecError, match="keeps state"):
        loaded.predict({"tokens": tokens, "causal_mask": mask})


def test_a_state_needs_ios18():
    with pytest.raises(CoreMLCompileError, match="layers_0_attn_k_cache.*iOS18"):
        coreml_compile.compile(
            llama_kv.model().eval(),
            llama_kv.example_inputs(),
            minimum_deployment_target="iOS17",
        )


_ok, _why = coreml_available()


@pytest.mark.apple
@pytest.mark.skipif(not _ok, reason=_why or "no Core ML")
def test_core_ml_runs_the_same_steps(package):
    model = llama_kv.model().eval()
    loaded = coreml_compile.load(package, backend="coreml")
    state = loaded.make_state()

    def core_ml_step(tokens, mask):
        feeds = {"tokens": tokens.numpy().astype(np.int32), "causal_mask": mask.numpy()}
        (logits,) = loaded.predict(feeds, state=state).values()
        return logits

    def torch_step(tokens, mask):
        with torch.no_grad():
            return model(tokens, mask).numpy()

    for step, (g, w) in enumerate(zip(_generate(core_ml_step), _generate(torch_step), strict=True)):
        assert _cosine(g, w) >= 0.999, step


def test_a_buffer_that_is_not_zero_is_warned_about():
    class Counter(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("total", torch.ones(1, 4))

        def forward(self, x):
            self.total.add_(x)
            return self.total * 2

    compiled = coreml_compile.compile(
        Counter(), (torch.ones(1, 4),), minimum_deployment_target="iOS18", precision="fp32"
    )
    (warning,) = [w for w in compiled.report.warnings if "total" in w]
    assert "starts at zeros" in warning
    state = compiled.make_state()
    (out,) = compiled.predict({"x": np.ones((1, 4), np.float32)}, state=state).values()
    np.testing.assert_array_equal(out, np.full((1, 4), 2.0))  # 0 + 1, doubled
    (out,) = compiled.predict({"x": np.ones((1, 4), np.float32)}, state=state).values()
    np.testing.assert_array_equal(out, np.full((1, 4), 4.0))
