"""Dynamic shapes end to end: one package serves every declared shape.

A CNN with dynamic height and width (models/resnet.py), an encoder with a dynamic
sequence length (models/bert.py, two inputs sharing one dimension) and a causal decoder
with a dynamic prompt length (models/llama.py, no KV cache) are compiled once with
torch.export's ``dynamic_shapes``, saved, loaded, and run by the reference executor at
several shapes; each must agree with torch at each (fp32 cosine >= 0.9999). Shapes
outside the declared range are refused before anything runs.
"""

from __future__ import annotations

import importlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.export import Dim

import coreml_compile
from coreml_compile.errors import InputSpecError, LoweringError, UnsupportedOpError
from coreml_compile.runtime.devices import coreml_available

pytestmark = pytest.mark.slow


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _description(compiled, name):
    for spec in compiled.mlmodel._spec.description.input:
        if spec.name == name:
            return spec.type.multiArrayType
    raise KeyError(name)


def test_cnn_with_dynamic_height_and_width(tmp_path):
    resnet = importlib.import_module("resnet")
    model = resnet.model().eval()
    (example,) = resnet.example_inputs()
    dims = {2: Dim("height", min=64, max=512), 3: Dim("width", min=64, max=512)}
    compiled = coreml_compile.compile(model, (example,), dynamic_shapes=(dims,), precision="fp32")
    ranges = _description(compiled, "x").shapeRange.sizeRanges
    assert [(r.lowerBound, r.upperBound) for r in ranges] == [(1, 1), (3, 3), (64, 512), (64, 512)]
    loaded = coreml_compile.load(compiled.save(tmp_path / "resnet.mlpackage"), backend="reference")
    for shape in [(1, 3, 224, 224), (1, 3, 97, 131), (1, 3, 512, 64)]:
        x = torch.randn(shape)
        with torch.no_grad():
            want = model(x).numpy()
        (got,) = loaded.predict({"x": x.numpy()}).values()
        assert got.shape == want.shape
        assert _cosine(got, want) >= 0.9999, shape
    with pytest.raises(InputSpecError, match="dimension 2 is 600, outside the range 64..512"):
        loaded.predict({"x": np.zeros((1, 3, 600, 100), np.float32)})


def _run_at_shapes(model, loaded, shapes):
    for shape in shapes:
        x = torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape)))
        with torch.no_grad():
            want = model(x).numpy()
        (got,) = loaded.predict({"x": x.numpy()}).values()
        assert got.shape == want.shape, shape
        assert _cosine(got, want) >= 0.9999, shape


def test_unet_with_dynamic_height_and_width(tmp_path):
    # Any size: F.pad makes each upsampled map its skip's size (odd sizes pad by a row),
    # with amounts computed from the sizes at run time.
    unet = importlib.import_module("unet")
    model = unet.model().eval()
    dims = {2: Dim("height", min=32, max=256), 3: Dim("width", min=32, max=256)}
    compiled = coreml_compile.compile(
        model, unet.example_inputs(), dynamic_shapes=(dims,), precision="fp32", allow_fallback=False
    )
    ranges = _description(compiled, "x").shapeRange.sizeRanges
    assert [(r.lowerBound, r.upperBound) for r in ranges] == [(1, 1), (3, 3), (32, 256), (32, 256)]
    loaded = coreml_compile.load(compiled.save(tmp_path / "unet.mlpackage"), backend="reference")
    _run_at_shapes(model, loaded, [(1, 3, 64, 64), (1, 3, 97, 131), (1, 3, 256, 35)])


class _DiffusionBlock(torch.nn.Module):
    """A diffusion UNet's residual block: GroupNorm, SiLU, conv, twice, and a skip; then
    pixel-unshuffle down, instance norm, pixel-shuffle back up."""

    def __init__(self):
        super().__init__()
        self.norm1 = torch.nn.GroupNorm(4, 16)
        self.conv1 = torch.nn.Conv2d(16, 16, 3, padding=1)
        self.norm2 = torch.nn.GroupNorm(4, 16)
        self.conv2 = torch.nn.Conv2d(16, 16, 3, padding=1)
        self.mid = torch.nn.InstanceNorm2d(64, affine=True)

    def forward(self, x):
        h = self.conv1(torch.nn.functional.silu(self.norm1(x)))
        h = x + self.conv2(torch.nn.functional.silu(self.norm2(h)))
        down = self.mid(torch.nn.functional.pixel_unshuffle(h, 2))
        return torch.nn.functional.pixel_shuffle(down, 2).clamp(-3, 3)


def test_group_norm_block_with_dynamic_height_and_width(tmp_path):
    model = _DiffusionBlock().eval()
    dims = {2: 2 * Dim("h", min=8, max=64), 3: 2 * Dim("w", min=8, max=64)}
    compiled = coreml_compile.compile(
        model,
        (torch.randn(1, 16, 32, 48),),
        dynamic_shapes=(dims,),
        precision="fp32",
        allow_fallback=False,
    )
    assert {"group_norm", "instance_norm", "pixel_shuffle"} <= set(compiled.report.ir_ops)
    loaded = coreml_compile.load(compiled.save(tmp_path / "block.mlpackage"), backend="reference")
    _run_at_shapes(model, loaded, [(1, 16, 32, 48), (1, 16, 18, 100), (1, 16, 128, 16)])


def test_deeplab_with_dynamic_height_and_width(tmp_path):
    # Output stride 8 and a bilinear resize back to the input size: sizes are multiples
    # of 8, so that resize is a whole-number factor.
    deeplab = importlib.import_module("deeplab")
    model = deeplab.model().eval()
    dims = {2: 8 * Dim("h", min=4, max=48), 3: 8 * Dim("w", min=4, max=48)}
    compiled = coreml_compile.compile(
        model,
        deeplab.example_inputs(),
        dynamic_shapes=(dims,),
        precision="fp32",
        allow_fallback=False,
    )
    ranges = _description(compiled, "x").shapeRange.sizeRanges
    assert [(r.lowerBound, r.upperBound) for r in ranges] == [(1, 1), (3, 3), (32, 384), (32, 384)]
    loaded = coreml_compile.load(compiled.save(tmp_path / "deeplab.mlpackage"), backend="reference")
    _run_at_shapes(model, loaded, [(1, 3, 96, 96), (1, 3, 64, 136), (1, 3, 384, 40)])
    with pytest.raises(InputSpecError, match="dimension 2 is 100, but the model takes only sizes"):
        loaded.predict({"x": np.zeros((1, 3, 100, 96), np.float32)})


def test_encoder_with_dynamic_sequence_length():
    bert = importlib.import_module("bert")
    model = bert.model().eval()
    sequence = Dim("sequence", min=2, max=bert.MAX_POSITIONS)
    compiled = coreml_compile.compile(
        model,
        bert.example_inputs(),
        dynamic_shapes=({1: sequence}, {1: sequence}),
        precision="fp32",
        allow_fallback=False,
    )
    generator = torch.Generator().manual_seed(0)
    for length in (5, 32, bert.MAX_POSITIONS):
        ids = torch.randint(1, bert.VOCAB, (1, length), generator=generator)
        mask = torch.ones_like(ids)
        mask[:, length - 2 :] = 0
        with torch.no_grad():
            want = model(ids, mask).numpy()
        (got,) = compiled.predict(
            {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
        ).values()
        assert _cosine(got, want) >= 0.9999, length


def test_causal_decoder_with_dynamic_prompt_length():
    llama = importlib.import_module("llama")
    model = llama.model().eval()
    compiled = coreml_compile.compile(
        model,
        llama.example_inputs(),
        dynamic_shapes=({1: Dim("prompt", min=2, max=llama.MAX_SEQUENCE)},),
        precision="fp32",
    )
    generator = torch.Generator().manual_seed(1)
    for length in (3, 17, llama.MAX_SEQUENCE):
        tokens = torch.randint(0, llama.VOCAB, (1, length), generator=generator)
        with torch.no_grad():
            want = model(tokens).numpy()
        (got,) = compiled.predict({"tokens": tokens.numpy()}).values()
        assert got.shape == want.shape
        # The causal mask is built at run time: a mask of the traced length would fail.
        assert _cosine(got, want) >= 0.9999, length


class _SmallNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.head = torch.nn.Linear(8, 4)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        return self.head(y.mean(dim=(2, 3)))


def test_enumerated_shapes_are_declared_and_enforced():
    model = _SmallNet().eval()
    side = Dim("side", min=32, max=256)
    shapes = [(1, 3, 64, 64), (1, 3, 128, 128), (1, 3, 224, 224)]
    compiled = coreml_compile.compile(
        model,
        (torch.randn(1, 3, 64, 64),),
        dynamic_shapes=({2: side, 3: side},),
        enumerated_shapes={"x": shapes},
        precision="fp32",
    )
    declared = _description(compiled, "x").enumeratedShapes.shapes
    assert [tuple(s.shape) for s in declared] == shapes
    for shape in shapes:
        x = torch.randn(shape)
        (got,) = compiled.predict({"x": x.numpy()}).values()
        with torch.no_grad():
            assert _cosine(got, model(x).numpy()) >= 0.9999
    with pytest.raises(InputSpecError, match="not one of the shapes"):
        compiled.predict({"x": np.zeros((1, 3, 96, 96), np.float32)})


def test_an_unbounded_dimension_is_a_clear_error():
    with pytest.raises(LoweringError, match="has no upper bound; give its torch.export.Dim a max"):
        coreml_compile.compile(
            _SmallNet().eval(),
            (torch.randn(1, 3, 64, 64),),
            dynamic_shapes=({2: Dim("h", min=8)},),
        )


def test_a_dynamic_model_needing_fallback_names_the_op():
    class Erfinv(torch.nn.Module):
        def forward(self, x):
            return torch.special.erfinv(torch.tanh(x)) * 2

    with pytest.raises(UnsupportedOpError, match="erfinv"):
        coreml_compile.compile(
            Erfinv(), (torch.randn(1, 16),), dynamic_shapes=({1: Dim("n", min=2, max=64)},)
        )


def test_cli_compiles_a_range(tmp_path):
    source = tmp_path / "net.py"
    source.write_text(
        "import torch\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        torch.manual_seed(0)\n"
        "        self.conv = torch.nn.Conv2d(3, 4, 3, stride=2)\n"
        "    def forward(self, x):\n"
        "        return torch.relu(self.conv(x))\n"
        "def model():\n"
        "    return Net()\n"
    )
    out = tmp_path / "net.mlpackage"
    result = subprocess.run(
        [sys.executable, "-m", "coreml_compile.cli.main", "compile", str(source), "-o", str(out),
         "--input-shape", "1,3,32..128,32..96"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    loaded = coreml_compile.load(out, backend="reference")
    model = importlib.import_module("runpy").run_path(str(source))["model"]().eval()
    for shape in [(1, 3, 32, 96), (1, 3, 101, 45)]:
        x = torch.randn(shape)
        (got,) = loaded.predict({"x": x.numpy()}).values()
        with torch.no_grad():
            assert _cosine(got, model(x).numpy()) >= 0.9999


_ok, _why = coreml_available()


@pytest.mark.apple
@pytest.mark.skipif(not _ok, reason=_why or "no Core ML")
def test_core_ml_runs_the_dynamic_cnn_at_each_size(tmp_path):
    model = _SmallNet().eval()
    side = Dim("side", min=32, max=256)
    compiled = coreml_compile.compile(
        model, (torch.randn(1, 3, 64, 64),), dynamic_shapes=({2: side, 3: side},)
    )
    loaded = coreml_compile.load(compiled.save(tmp_path / "net.mlpackage"), backend="coreml")
    for size in (32, 100, 256):
        x = torch.randn(1, 3, size, size)
        (got,) = loaded.predict({"x": x.numpy()}).values()
        with torch.no_grad():
            assert _cosine(got, model(x).numpy()) >= 0.999


class _Derived(torch.nn.Module):
    def forward(self, x, y):
        return torch.cat([x, x], 1) + y


def test_derived_dimensions_and_their_relation_are_kept(tmp_path):
    n = Dim("n", min=2, max=32)
    compiled = coreml_compile.compile(
        _Derived(),
        (torch.randn(1, 4), torch.randn(1, 8)),
        dynamic_shapes=({1: n}, {1: 2 * n}),
        precision="fp32",
    )
    y_range = _description(compiled, "y").shapeRange.sizeRanges[1]
    assert (y_range.lowerBound, y_range.upperBound) == (4, 64)
    loaded = coreml_compile.load(compiled.save(tmp_path / "d.mlpackage"), backend="reference")
    for k in (2, 13, 32):
        x, y = torch.randn(1, k), torch.randn(1, 2 * k)
        (got,) = loaded.predict({"x": x.numpy(), "y": y.numpy()}).values()
        np.testing.assert_allclose(got, _Derived()(x, y).numpy(), rtol=1e-6)
    # Each size is inside its own range, but 7 is not twice 3.
    with pytest.raises(InputSpecError, match="ties it to input x dimension 1 and needs 6"):
        loaded.predict({"x": np.zeros((1, 3), np.float32), "y": np.zeros((1, 7), np.float32)})


def test_a_tampered_dimension_expression_is_refused(tmp_path):
    from coreml_compile.api import read_input_dims
    from coreml_compile.errors import PackageError

    bad = '{"x": [1, "().__class__.__bases__"]}'
    with pytest.raises(PackageError, match="input_dims is malformed"):
        read_input_dims({"coreml_compile.input_dims": bad})
    assert read_input_dims({"coreml_compile.input_dims": '{"x": [1, "2*s0 + 1"]}'}) == {
        "x": [1, "2*s0 + 1"]
    }


class _Histogram(torch.nn.Module):
    """Counts scattered into bins: the bins and the number of items are both dynamic."""

    def forward(self, bins, index, weight):
        return bins.scatter_add(1, index, weight) + bins.scatter(1, index, weight * 2)


def test_scatter_with_dynamic_sizes():
    model = _Histogram()
    n, m = Dim("bins", min=2, max=64), Dim("items", min=2, max=256)
    example = (torch.zeros(2, 8), torch.randint(0, 8, (2, 20)), torch.rand(2, 20))
    compiled = coreml_compile.compile(
        model,
        example,
        dynamic_shapes=({1: n}, {1: m}, {1: m}),
        precision="fp32",
        allow_fallback=False,
    )
    for bins, items in ((5, 3), (40, 200)):
        generator = torch.Generator().manual_seed(bins)
        # Distinct positions per row for the write: which of two equal ones wins is open.
        index = torch.stack([torch.randperm(bins, generator=generator)[: min(bins, items)]] * 2)
        weight = torch.rand(2, index.shape[1], generator=generator)
        feeds = (torch.rand(2, bins, generator=generator), index, weight)
        (got,) = compiled.predict(
            {k: t.numpy() for k, t in zip(("bins", "index", "weight"), feeds, strict=True)}
        ).values()
        torch.testing.assert_close(torch.from_numpy(got), model(*feeds))


class _TableMaskedAttention(torch.nn.Module):
    """Attention masked as Hugging Face decoders build it: a (max, max) mask table read
    at two broadcast index tensors, aranges of the run-time length (one per axis)."""

    def __init__(self, size: int = 16, width: int = 8):
        super().__init__()
        self.register_buffer("table", torch.ones(size, size, dtype=torch.bool).tril())
        self.proj = torch.nn.Linear(width, width)

    def forward(self, x):
        n = x.shape[1]
        positions = torch.arange(n)
        allowed = self.table[positions[:, None], positions[None, :]]
        scores = self.proj(x) @ x.transpose(1, 2)
        scores = scores.masked_fill(~allowed, float("-inf"))
        return scores.softmax(-1) @ x


def test_index_with_several_dynamic_index_tensors():
    model = _TableMaskedAttention().eval()
    compiled = coreml_compile.compile(
        model,
        (torch.randn(1, 6, 8),),
        dynamic_shapes=({1: Dim("n", min=2, max=16)},),
        precision="fp32",
        allow_fallback=False,
    )
    assert compiled.report.ir_ops.get("index")
    for n in (2, 7, 16):
        x = torch.randn(1, n, 8)
        with torch.no_grad():
            want = model(x).numpy()
        (got,) = compiled.predict({"x": x.numpy()}).values()
        assert _cosine(got, want) >= 0.9999, n


def test_grouped_query_attention_with_a_dynamic_length():
    # Falcon's multi-query attention: one key/value head repeated for four query heads.
    class MultiQuery(torch.nn.Module):
        def forward(self, q, k, v):
            return torch.nn.functional.scaled_dot_product_attention(
                q, k, v, is_causal=True, enable_gqa=True
            )

    n = Dim("n", min=2, max=32)
    example = (torch.randn(1, 4, 6, 8), torch.randn(1, 1, 6, 8), torch.randn(1, 1, 6, 8))
    compiled = coreml_compile.compile(
        MultiQuery(),
        example,
        dynamic_shapes=({2: n}, {2: n}, {2: n}),
        precision="fp32",
        allow_fallback=False,
    )
    for length in (3, 17):
        q, k, v = (
            torch.randn(1, 4, length, 8),
            torch.randn(1, 1, length, 8),
            torch.randn(1, 1, length, 8),
        )
        (got,) = compiled.predict({"q": q.numpy(), "k": k.numpy(), "v": v.numpy()}).values()
        assert _cosine(got, MultiQuery()(q, k, v).numpy()) >= 0.9999, length


def test_slices_counted_from_the_end_of_a_dynamic_length():
    # MobileBERT's trigram input: the sequence shifted by one both ways, x[:, 1:] and
    # x[:, :-1] padded back; -2 holds for every length the range allows (3 and up).
    class Trigram(torch.nn.Module):
        def forward(self, x):
            after = torch.nn.functional.pad(x[:, 1:], (0, 0, 0, 1))
            before = torch.nn.functional.pad(x[:, :-1], (0, 0, 1, 0))
            return after * 2 + x - before + x[:, -2:].sum(1, keepdim=True)

    model = Trigram()
    compiled = coreml_compile.compile(
        model,
        (torch.randn(1, 6, 4),),
        dynamic_shapes=({1: Dim("n", min=3, max=32)},),
        precision="fp32",
        allow_fallback=False,
    )
    for n in (3, 9, 32):
        x = torch.randn(1, n, 4)
        (got,) = compiled.predict({"x": x.numpy()}).values()
        np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-5, atol=1e-5)
