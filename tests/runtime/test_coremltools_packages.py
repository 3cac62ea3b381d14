"""Packages written by coremltools itself run in the reference executor and agree with torch.

coremltools.convert is used here as an independent oracle: the executor must run what
Apple's converter writes (EfficientNet-style convolutional blocks, a transformer block),
including compressed weights (int8, palettised, sparse).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import coreml_compile
from coreml_compile.compiler.mil import import_coremltools, quiet_coremltools
from coreml_compile.runtime.package import read_program
from coreml_compile.runtime.reference import ReferenceExecutor
from tests.conftest import assert_close


class SqueezeExcite(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.reduce = nn.Conv2d(c, c // 4, 1)
        self.expand = nn.Conv2d(c // 4, c, 1)

    def forward(self, x):
        w = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(nn.functional.silu(self.reduce(w))))


class ConvNet(nn.Module):
    """EfficientNet/MobileNetV3-class ops: depthwise conv, SE, SiLU, hardswish, upsampling."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.SiLU())
        self.dw = nn.Sequential(
            nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.BatchNorm2d(16), nn.Hardswish()
        )
        self.se = SqueezeExcite(16)
        self.head = nn.Sequential(
            nn.Conv2d(16, 32, 1),
            nn.GELU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.LayerNorm(32),
            nn.Linear(32, 10),
            nn.LogSoftmax(-1),
        )

    def forward(self, x):
        y = self.dw(self.stem(x))
        y = y + self.se(y)
        y = nn.functional.interpolate(y, scale_factor=2, mode="nearest")
        y = torch.cat([y, nn.functional.max_pool2d(y, 3, 1, 1)], 1)[:, :16]
        return self.head(y)


class TransformerBlock(nn.Module):
    def __init__(self, d: int = 32, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(
            nn.Linear(d, 4 * d), nn.GELU(approximate="tanh"), nn.Linear(4 * d, d)
        )

    def forward(self, x):
        b, s, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).chunk(3, -1)
        q, k, v = (t.reshape(b, s, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))
        att = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, -1)
        y = (att @ v).transpose(1, 2).reshape(b, s, d)
        x = x + self.proj(y)
        return x + self.mlp(self.norm2(x))


def _randomised(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _convert(model: nn.Module, x: torch.Tensor, path, target: str = "iOS18"):
    ct = import_coremltools()
    ep = torch.export.export(model, (x,)).run_decompositions({})
    with quiet_coremltools():
        mlmodel = ct.convert(
            ep,
            convert_to="mlprogram",
            minimum_deployment_target=getattr(ct.target, target),
            skip_model_load=True,
        )
        mlmodel.save(str(path))
    return mlmodel


CASES = {
    "convnet": (lambda: _randomised(ConvNet()), (1, 3, 32, 32)),
    "transformer": (lambda: _randomised(TransformerBlock()), (2, 8, 32)),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("target", ["iOS16", "iOS18"])
def test_coremltools_package_runs_and_matches_torch(tmp_path, name, target):
    make, shape = CASES[name]
    model = make()
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    path = tmp_path / f"{name}.mlpackage"
    _convert(model, x, path, target)
    loaded = coreml_compile.load(path, backend="reference")
    (out_name,) = loaded.output_names
    got = loaded.predict({loaded.input_names[0]: x.numpy()})[out_name]
    with torch.no_grad():
        assert_close(torch.from_numpy(got), model(x), "fp16", f"coremltools {name} {target}")


@pytest.fixture(scope="module")
def convnet_packages(tmp_path_factory):
    """The ConvNet converted by coremltools, plain and with each kind of compression."""
    ct = import_coremltools()
    import coremltools.optimize.coreml as cto

    folder = tmp_path_factory.mktemp("compressed")
    model = _randomised(ConvNet())
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    plain = _convert(model, x, folder / "plain.mlpackage")
    configs = {
        "int8": cto.OpLinearQuantizerConfig(mode="linear_symmetric", weight_threshold=0),
        "palette6": cto.OpPalettizerConfig(mode="uniform", nbits=6, weight_threshold=0),
        "sparse": cto.OpMagnitudePrunerConfig(target_sparsity=0.5, weight_threshold=0),
    }
    functions = {
        "int8": cto.linear_quantize_weights,
        "palette6": cto.palettize_weights,
        "sparse": cto.prune_weights,
    }
    paths = {"plain": folder / "plain.mlpackage"}
    with quiet_coremltools():
        for kind, config in configs.items():
            compressed = functions[kind](plain, cto.OptimizationConfig(global_config=config))
            paths[kind] = folder / f"{kind}.mlpackage"
            compressed.save(str(paths[kind]))
    assert ct is not None
    return paths, x


@pytest.mark.parametrize(
    "kind,op", [("int8", "constexpr_blockwise_shift_scale"), ("palette6", "constexpr_lut_to_dense")]
)
def test_compressed_weights_run_close_to_the_uncompressed_package(convnet_packages, kind, op):
    paths, x = convnet_packages
    _, program = read_program(paths[kind])
    assert op in {o.op_type for o in program.functions["main"].operations}
    feeds = {"x": x.numpy()}
    plain = coreml_compile.load(paths["plain"], backend="reference").predict(feeds)
    compressed = coreml_compile.load(paths[kind], backend="reference").predict(feeds)
    a, b = plain["log_softmax"].ravel(), compressed["log_softmax"].ravel()
    cosine = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    assert cosine > 0.999, f"{kind}: cosine {cosine}"


def test_sparse_weights_decompress_to_the_kept_original_values(convnet_packages):
    paths, _x = convnet_packages
    _, plain = read_program(paths["plain"])
    _, sparse = read_program(paths["sparse"])
    dense = ReferenceExecutor(plain).constants
    decompressed = ReferenceExecutor(sparse).constants
    sparse_ops = [
        op
        for op in sparse.functions["main"].operations
        if op.op_type == "constexpr_sparse_to_dense"
    ]
    assert sparse_ops
    for op in sparse_ops:
        weight = decompressed[op.outputs[0].name]
        # The consumer of the decompressed weight reads the plain package's const of the
        # same consumer input; find it through the consumer op's name.
        consumer = op.outputs[0].child_ops[0]
        original_var = next(
            o for o in plain.functions["main"].operations if o.name == consumer.name
        ).inputs["weight"]
        original = dense[original_var.name]
        kept = weight != 0
        assert 0.45 <= 1 - kept.float().mean().item() <= 0.55
        assert torch.equal(weight[kept], original[kept])
