"""Symbolic dimensions: shape rules on symbols, sizes as attributes, verify, passes."""

from __future__ import annotations

import pytest
import torch
from torch.export import Dim

from coreml_compile.compiler import symbolic
from coreml_compile.compiler.frontends.torch_export import trace
from coreml_compile.compiler.ir import Graph, TensorType
from coreml_compile.compiler.ops import get_record, unsupported_reason
from coreml_compile.errors import IRVerificationError
from coreml_compile.passes import run_pipeline


def test_records_infer_shapes_on_symbols():
    g = Graph()
    x = g.add_input("x", TensorType("float32", (1, "s0", 32)))
    y = g.add_input("y", TensorType("float32", (1, "2*s0", 32)))
    cat = g.add_node("cat", [x, y], {"dim": 1})
    assert cat.output.type.shape[1] in ("3*s0", "s0*3")
    pooled = g.add_node("transpose", [cat.output], {"dim0": 1, "dim1": 2})
    assert symbolic.equal(pooled.output.type.shape[2], "3*s0")


def test_a_rule_that_fixes_a_dynamic_size_is_refused():
    g = Graph()
    x = g.add_input("x", TensorType("float32", (1, 3, "s0", "s1")))
    record = get_record("upsample_nearest2d")
    with pytest.raises(symbolic.Specialised, match="fixed size"):
        record.infer([x], record.bind_attrs({"scale_factors": [2.0, 2.0]}))


def test_bind_and_evaluate():
    values: dict[str, int] = {}
    assert symbolic.bind((1, "s0", "2*s0"), (1, 7, 14), values) is None
    assert values == {"s0": 7}
    assert "ties it to dimension 1 and needs 14" in symbolic.bind((1, "s0", "2*s0"), (1, 7, 15), {})
    assert "dimension 0 is 2, expected 1" in symbolic.bind((1, "s0"), (2, 7), {})
    assert symbolic.evaluate("((s0 - 1)//2) + 1", {"s0": 9}) == 5


def test_bind_shapes_relates_inputs_and_solves_derived_sizes():
    dims = {"x": [1, "s0", "8*s1"], "y": ["s0", "8*s1 + 2"]}
    values: dict[str, int] = {}
    assert symbolic.bind_shapes(dims, {"x": (1, 5, 24), "y": (5, 26)}, values) is None
    assert values == {"s0": 5, "s1": 3}  # s1 only in derived sizes: solved from 24
    tied = symbolic.bind_shapes(dims, {"x": (1, 5, 24), "y": (6, 26)})
    assert tied == (
        "input y: dimension 0 is 6, but the model ties it to input x dimension 1 and needs 5 here"
    )
    odd = symbolic.bind_shapes(dims, {"x": (1, 5, 20), "y": (5, 22)})
    assert (
        odd == "input x: dimension 2 is 20, but the model takes only sizes 8*s1 (a multiple of 8)"
    )


class _Encoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(16, 48)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.proj(x).view(b, n, 3, 2, c // 2).permute(2, 0, 3, 1, 4)
        positions = torch.arange(n)
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return out.transpose(1, 2).reshape(b, n, c) + positions[None, :, None]


def _graph():
    return trace(
        _Encoder().eval(), (torch.randn(1, 8, 16),), dynamic_shapes=({1: Dim("n", min=2, max=99)},)
    )


def test_sizes_computed_from_dynamic_dims_are_expr_attributes():
    g = _graph()
    (symbol,) = g.symbols.values()
    assert (symbol.min, symbol.max, symbol.example) == (2, 99, 8)
    view = next(n for n in g.nodes if n.op == "reshape")
    assert isinstance(view.attrs["shape"][1], symbolic.Expr)
    arange = next(n for n in g.nodes if n.op == "arange")
    assert isinstance(arange.attrs["end"], symbolic.Expr)
    for node in g.nodes:
        assert unsupported_reason(node, 18) is None, node


def test_verify_checks_symbolic_types_at_the_traced_sizes():
    g = _graph()
    g.verify()
    node = next(n for n in g.nodes if n.op == "reshape")
    name = g.symbols and next(iter(g.symbols))
    node.outputs[0].type = TensorType("float32", (1, f"{name} + 1", 3, 2, 8))
    with pytest.raises(IRVerificationError, match="at the traced sizes"):
        g.verify()


def test_passes_keep_dynamic_factories():
    g = _graph()
    run_pipeline(g, ["fold_constants", "eliminate_dead_code"])
    # arange(n) has a run-time length: it must not be folded into a constant.
    assert any(n.op == "arange" for n in g.nodes)
    g.verify()


@pytest.mark.parametrize("target", ["iOS17", "iOS18"])
def test_causal_attention_over_a_dynamic_length_runs(target):
    import numpy as np

    import coreml_compile

    model = _Encoder().eval()
    compiled = coreml_compile.compile(
        model,
        (torch.randn(1, 8, 16),),
        dynamic_shapes=({1: Dim("n", min=2, max=99)},),
        precision="fp32",
        minimum_deployment_target=target,
        allow_fallback=False,
    )
    for n in (2, 8, 99):
        x = torch.randn(1, n, 16)
        (got,) = compiled.predict({"x": x.numpy()}).values()
        with torch.no_grad():
            np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-4, atol=1e-4)


def test_splits_along_a_static_dim_of_a_dynamic_tensor_run():
    import numpy as np

    import coreml_compile

    class Chunks(torch.nn.Module):
        def forward(self, x):
            q, k, v = x.chunk(3, dim=-1)
            a, b = torch.split(x, [4, 8], dim=-1)
            return torch.stack([q * k + v, a[..., :4] + b[..., :4]], dim=1)

    model = Chunks()
    compiled = coreml_compile.compile(
        model,
        (torch.randn(1, 8, 12),),
        dynamic_shapes=({1: Dim("n", min=2, max=64)},),
        precision="fp32",
        allow_fallback=False,
    )
    for n in (2, 31):
        x = torch.randn(1, n, 12)
        (got,) = compiled.predict({"x": x.numpy()}).values()
        np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-5, atol=1e-6)


def test_minimum_of_a_dimension():
    symbolic.declare({"m0": symbolic.Symbol("m0", 3, 40)})
    assert symbolic.minimum(7) == 7
    assert symbolic.minimum("m0") == 3
    assert symbolic.minimum("2*m0 + 1") == 7
    assert symbolic.minimum("undeclared_m9") is None
