"""Weight compression: int8, palettes, pruning, and their Core ML encodings.

The key check: the IR (decompressing with our torch kernels) and the saved package
(decompressed by coremltools' own constexpr op definitions in the reference executor)
must agree, which proves the bit packing; and both stay close to the uncompressed model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import coreml_compile
from coreml_compile.compiler.interpreter import run_graph
from coreml_compile.compiler.ops import get_record
from coreml_compile.errors import CoreMLCompileError
from coreml_compile.passes.palettize_weights import kmeans_1d
from coreml_compile.passes.prune_weights import magnitude_mask, parse
from coreml_compile.passes.quantize_weights import quantize
from tests.conftest import assert_close


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    ).eval()


X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))

MODES = [
    ("quantize", "int8", "dequantize"),
    ("quantize", "int8-asym", "dequantize"),
    ("quantize", "int8-per-tensor", "dequantize"),
    ("quantize", "int8-per-tensor-asym", "dequantize"),
    ("quantize", "int8-per-channel", "dequantize"),
    ("quantize", "int8-per-channel-asym", "dequantize"),
    ("quantize", "palette1", "lut_to_dense"),
    ("quantize", "palette2", "lut_to_dense"),
    ("quantize", "palette4", "lut_to_dense"),
    ("quantize", "palette6", "lut_to_dense"),
    ("quantize", "palette8", "lut_to_dense"),
    ("prune", "0.5", "sparse_to_dense"),
    ("prune", "2:4", "sparse_to_dense"),
]


@pytest.mark.parametrize("target", ["iOS16", "iOS18"])
@pytest.mark.parametrize("option,value,op", MODES, ids=[m[1] for m in MODES])
def test_package_decodes_to_what_the_ir_computes(option, value, op, target):
    model = _model()
    compiled = coreml_compile.compile(
        model,
        (X,),
        precision="fp32",
        minimum_deployment_target=target,
        compress_min_elements=64,
        **{option: value},
    )
    assert compiled.graph.op_counts()[op] == 4  # every weight (the linear ones too)
    ir = run_graph(compiled.graph, [X])[0]
    package = compiled(X)
    assert_close(package, ir, "fp32", f"{value} {target}: package vs IR")


@pytest.mark.parametrize("mode", ["int8-per-block", "int8-per-block-asym"])
def test_per_block_int8_on_ios18(mode):
    compiled = coreml_compile.compile(
        _model(),
        (X,),
        precision="fp32",
        minimum_deployment_target="iOS18",
        compress_min_elements=64,
        quantize=mode,
    )
    ops = {op.op_type for op in compiled.program.functions["main"].operations}
    assert "constexpr_blockwise_shift_scale" in ops
    assert_close(compiled(X), run_graph(compiled.graph, [X])[0], "fp32", f"{mode} package vs IR")
    with torch.no_grad():
        reference = _model()(X)
    assert (
        torch.nn.functional.cosine_similarity(compiled(X).flatten(), reference.flatten(), 0) > 0.999
    )


@pytest.mark.parametrize("mode", ["palette2-grouped", "palette4-grouped"])
def test_grouped_palettes_on_ios18(mode):
    options = {"minimum_deployment_target": "iOS18", "compress_min_elements": 64}
    grouped = coreml_compile.compile(_model(), (X,), precision="fp32", quantize=mode, **options)
    tables = [n.inputs[1].type.shape for n in grouped.graph.nodes if n.op == "lut_to_dense"]
    assert (2, 2 ** int(mode[7])) in tables  # the 32-channel conv: 2 groups of 16
    assert_close(grouped(X), run_graph(grouped.graph, [X])[0], "fp32", f"{mode} package vs IR")


def _decoded_weight(compiled) -> torch.Tensor:
    (node,) = [n for n in compiled.graph.nodes if n.op == "lut_to_dense"]
    inputs = [torch.from_numpy(v.data) for v in node.inputs]
    return get_record("lut_to_dense").run(inputs, node.attrs)[0]


def test_grouped_palettes_fit_channels_of_different_scales_better():
    layer = nn.Linear(64, 32)
    with torch.no_grad():  # two groups of 16 output channels, 100x apart in scale
        layer.weight.copy_(torch.randn(32, 64) * torch.tensor([1.0] * 16 + [100.0] * 16)[:, None])
    x = torch.randn(2, 64)
    errors = {}
    for mode in ("palette4", "palette4-grouped"):
        compiled = coreml_compile.compile(
            layer, (x,), quantize=mode, minimum_deployment_target="iOS18", compress_min_elements=64
        )
        # The error on the small-scale channels: one shared table spends its entries on
        # the large ones, a table per group fits each group's own scale.
        error = (_decoded_weight(compiled) - layer.weight.detach())[:16]
        errors[mode] = error.pow(2).mean().item()
    assert errors["palette4-grouped"] < 0.5 * errors["palette4"]


def test_per_block_int8_needs_ios18():
    with pytest.raises(
        CoreMLCompileError, match="int8-per-block cannot be stored for iOS16: .*iOS18 or later"
    ):
        coreml_compile.compile(_model(), (X,), quantize="int8-per-block", compress_min_elements=64)


def test_only_chosen_op_types_are_compressed():
    compiled = coreml_compile.compile(
        _model(), (X,), quantize="int8", compress_min_elements=64, compress_op_types=["linear"]
    )
    dequantized = {n.output.users[0].op for n in compiled.graph.nodes if n.op == "dequantize"}
    assert dequantized == {"linear"}


def test_skip_first_last_and_min_size():
    compiled = coreml_compile.compile(
        _model(), (X,), quantize="int8", compress_min_elements=64, compress_skip_first_last=True
    )
    assert compiled.graph.op_counts()["dequantize"] == 2
    compiled = coreml_compile.compile(_model(), (X,), quantize="int8", compress_min_elements=1000)
    assert compiled.graph.op_counts()["dequantize"] == 2  # only 16*3*9=432 and 32*10 are small


def test_compression_needs_ios16():
    with pytest.raises(CoreMLCompileError, match="cannot be stored for iOS15: .*iOS16 or later"):
        coreml_compile.compile(_model(), (X,), quantize="int8", minimum_deployment_target="iOS15")


def test_pruning_combined_with_compression_needs_ios18():
    with pytest.raises(CoreMLCompileError, match="int8 and --prune 0.5 .*iOS18 or later"):
        coreml_compile.compile(_model(), (X,), quantize="int8", prune=0.5)


@pytest.mark.parametrize(
    "quantize,op,mil_op",
    [
        ("int8-per-channel", "sparse_dequantize", "constexpr_sparse_blockwise_shift_scale"),
        ("int8-per-block-asym", "sparse_dequantize", "constexpr_sparse_blockwise_shift_scale"),
        ("palette4", "sparse_lut_to_dense", "constexpr_lut_to_sparse"),
    ],
)
def test_pruning_combined_with_compression_on_ios18(quantize, op, mil_op):
    compiled = coreml_compile.compile(
        _model(),
        (X,),
        precision="fp32",
        minimum_deployment_target="iOS18",
        compress_min_elements=64,
        prune="0.5",
        quantize=quantize,
    )
    assert (
        compiled.graph.op_counts()[op] == 4 and "sparse_to_dense" not in compiled.graph.op_counts()
    )
    ops = {o.op_type for o in compiled.program.functions["main"].operations}
    assert mil_op in ops and "constexpr_sparse_to_dense" in ops
    assert_close(compiled(X), run_graph(compiled.graph, [X])[0], "fp32", f"prune+{quantize}")
    # Pruned entries stay exactly zero after quantisation.
    node = next(n for n in compiled.graph.nodes if n.op == op)
    dense = get_record(op).run([torch.from_numpy(v.data) for v in node.inputs], node.attrs)[0]
    assert (dense == 0).float().mean().item() >= 0.5


def test_weight_bytes_shrink_in_the_report():
    compiled = coreml_compile.compile(
        _model(), (X,), quantize="int8-per-channel", compress_min_elements=64
    )
    record = next(r for r in compiled.report.passes if r.name == "quantize_weights")
    assert record.weight_bytes_after < 0.3 * record.weight_bytes_before
    assert "constexpr_affine_dequantize" not in compiled.report.mil_ops


def test_quantize_round_trip_error_is_bounded():
    w = np.random.default_rng(0).standard_normal((8, 50)).astype(np.float32)
    for per_channel in (False, True):
        for symmetric in (False, True):
            data, scale, zero = quantize(w, per_channel, symmetric)
            shape = (-1, 1) if per_channel else ()
            back = (data.astype(np.float64) - zero.reshape(shape)) * scale.reshape(shape)
            step = np.max(scale)
            assert np.abs(back - w).max() <= step / 2 + 1e-6


@pytest.mark.parametrize(
    "mode,scales", [("int8", [16, 32, 64, 10]), ("int8-per-tensor", [1, 1, 1, 1])]
)
def test_int8_is_per_channel_unless_asked_per_tensor(mode, scales):
    compiled = coreml_compile.compile(_model(), (X,), quantize=mode, compress_min_elements=64)
    found = [n.inputs[1].data.size for n in compiled.graph.nodes if n.op == "dequantize"]
    assert found == scales


def _optimal_sse(values: np.ndarray, clusters: int) -> float:
    """The least squared error of any ``clusters`` centroids (exact 1-d DP, O(k n^2))."""
    x = np.sort(values.astype(np.float64))
    n = len(x)
    s1 = np.concatenate([[0.0], np.cumsum(x)])
    s2 = np.concatenate([[0.0], np.cumsum(x * x)])
    i, j = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    count = np.maximum(j - i, 1)
    # cost[i, j]: squared error of x[i:j] around its mean
    cost = np.where(j > i, s2[j] - s2[i] - (s1[j] - s1[i]) ** 2 / count, np.inf)
    best = cost[0].copy()
    for _ in range(clusters - 1):
        best = np.min(best[:, None] + cost, axis=0)
    return float(best[n])


@pytest.mark.parametrize("clusters", [4, 16])
@pytest.mark.parametrize("dist", ["normal", "laplace", "bimodal"])
def test_kmeans_is_near_the_optimum_and_beats_the_old_quantile_lloyd(dist, clusters):
    rng = np.random.default_rng(3)
    values = {
        "normal": rng.standard_normal(600),
        "laplace": rng.laplace(size=600),
        "bimodal": np.concatenate([rng.normal(-2, 0.3, 500), rng.normal(3, 1.0, 100)]),
    }[dist]
    table, labels = kmeans_1d(values, clusters)
    assert np.all(np.diff(table) > 0)  # sorted, distinct
    error = float(np.sum((table[labels] - values) ** 2))
    optimum = _optimal_sse(values, clusters)
    assert error <= optimum * 1.01, (error, optimum)
    # The previous method: quantile starts and 12 Lloyd iterations.
    c = np.quantile(values, (np.arange(clusters) + 0.5) / clusters)
    for _ in range(12):
        lab = np.searchsorted((c[:-1] + c[1:]) / 2, values)
        c = np.array([values[lab == k].mean() for k in range(clusters)])
    old = float(np.sum((c[np.searchsorted((c[:-1] + c[1:]) / 2, values)] - values) ** 2))
    assert error <= old * (1 + 1e-9)


def test_kmeans_of_few_distinct_values_is_exact():
    values = np.array([[0.5, -1.0, 0.5], [2.0, 2.0, -1.0]], np.float32)
    table, labels = kmeans_1d(values, 16)
    assert np.array_equal(table[labels], values) and labels.shape == values.shape
    constant = np.full((4, 4), 0.25, np.float32)
    table, labels = kmeans_1d(constant, 4)
    assert np.array_equal(table[labels], constant)


def test_kmeans_uses_every_level_and_beats_uniform():
    values = np.random.default_rng(0).standard_normal(10000)
    table, labels = kmeans_1d(values, 16)
    assert labels.max() == 15 and len(np.unique(labels)) == 16
    kmeans_error = np.mean((table[labels] - values) ** 2)
    uniform = np.linspace(values.min(), values.max(), 16)
    nearest = uniform[np.abs(values[:, None] - uniform[None]).argmin(1)]
    assert kmeans_error < np.mean((nearest - values) ** 2)


def test_pruning_masks():
    w = np.random.default_rng(0).standard_normal((4, 8, 3, 3))
    mask = magnitude_mask(w, 0.5, None)
    assert mask.sum() == w.size // 2
    assert np.abs(w[mask]).min() >= np.abs(w[~mask]).max()
    mask = magnitude_mask(w, *parse("2:4"))
    groups = np.moveaxis(mask, 1, -1).reshape(-1, 4)
    assert (groups.sum(1) == 2).all()
    with pytest.raises(CoreMLCompileError, match="malformed prune setting"):
        parse("4:2")


@pytest.mark.parametrize("mode", ["int4-per-block", "int4-per-block-asym"])
def test_per_block_int4_is_stored_in_four_bits(mode):
    options = {"minimum_deployment_target": "iOS18", "compress_min_elements": 64}
    int4 = coreml_compile.compile(_model(), (X,), precision="fp32", quantize=mode, **options)
    int8 = coreml_compile.compile(
        _model(), (X,), precision="fp32", quantize=mode.replace("int4", "int8"), **options
    )
    ops = [op for op in int4.program.functions["main"].operations]
    shifts = [op for op in ops if op.op_type == "constexpr_blockwise_shift_scale"]
    assert shifts
    # The weights are 4-bit integers in the program, not 8-bit ones holding small values.
    for op in shifts:
        from coremltools.converters.mil.mil import types

        assert types.builtin_to_string(op.data.dtype) in ("int4", "uint4")
    for node in int4.graph.nodes:
        if node.op == "dequantize":
            data = node.inputs[0].data.astype(np.int16)
            assert data.min() >= (-7 if mode == "int4-per-block" else 0)
            assert data.max() <= (7 if mode == "int4-per-block" else 15)
    assert_close(int4(X), run_graph(int4.graph, [X])[0], "fp32", f"{mode} package vs IR")
    with torch.no_grad():
        reference = _model()(X).flatten()
    cos4 = torch.nn.functional.cosine_similarity(int4(X).flatten(), reference, 0)
    cos8 = torch.nn.functional.cosine_similarity(int8(X).flatten(), reference, 0)
    assert 0.98 < cos4 < cos8  # coarser than int8, still the same function
