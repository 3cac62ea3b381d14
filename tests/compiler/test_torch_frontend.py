"""The torch.export frontend: names, constants, in-place ops, decomposition, fallback."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import coreml_compile
from coreml_compile.compiler.frontends.torch_export import trace
from coreml_compile.compiler.interpreter import run_graph
from coreml_compile.compiler.ir import Graph, TensorType
from coreml_compile.compiler.ops.fallback import Aten, FallbackOpRefused, NoFakeRun
from coreml_compile.errors import InputSpecError, TraceError, UnsupportedOpError
from tests.conftest import assert_close
from tests.ops.samples import Fn


class TwoInTwoOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.register_buffer("offset", torch.arange(4.0))

    def forward(self, image, mask):
        h = self.fc(image) + self.offset
        return {"logits": h, "masked": h * mask}


def test_names_of_inputs_outputs_and_constants():
    model = TwoInTwoOut().eval()
    g = trace(model, (torch.randn(2, 4), torch.ones(2, 4)))
    assert [v.name for v in g.inputs] == ["image", "mask"]
    assert [v.name for v in g.outputs] == ["logits", "masked"]
    assert set(g.constants) == {"fc_weight", "fc_bias", "offset"}
    # Parameters are shared with the model, not copied.
    assert np.shares_memory(g.constants["fc_weight"].data, model.fc.weight.detach().numpy())


def test_tuple_outputs_and_output_that_is_an_input():
    g = trace(nn.Identity(), (torch.randn(2),))
    assert [v.name for v in g.outputs] == ["output"]
    g = trace(Fn(lambda a: (a, a * 2)), (torch.randn(2),))
    assert [v.name for v in g.outputs] == ["output_0", "output_1"]
    g.verify()


def test_in_place_ops_rebind_later_readers():
    def f(a):
        b = a * 2
        b += 1  # later readers of b must see the update
        b.relu_()
        return b * 3

    x = torch.randn(3, 4)
    g = trace(Fn(f), (x,))
    assert "relu" in g.op_counts()
    assert torch.allclose(run_graph(g, [x])[0], f(x.clone()))


def test_in_place_through_a_view_is_functionalised():
    def f(a):
        b = a * 1
        b[:, 0].mul_(10)  # writes through a view into b
        return b + 1

    x = torch.randn(3, 4)
    g = trace(Fn(f), (x,))
    assert torch.allclose(run_graph(g, [x])[0], f(x.clone()))


def test_writes_through_a_chunk_or_a_diagonal_are_functionalised():
    # Views torch's schemas mark (Tensor(a)), mapped or not: split pieces, diagonals.
    def through_a_chunk(a):
        b = a * 1
        first, _ = b.chunk(2, 1)
        first.mul_(10)
        return b + 1

    def through_a_diagonal(a):
        b = a * 1
        b.diagonal(0, 1, 2).mul_(0)
        return b + 1

    x = torch.randn(3, 4, 4)
    for f in (through_a_chunk, through_a_diagonal):
        g = trace(Fn(f), (x,))
        assert torch.allclose(run_graph(g, [x])[0], f(x.clone())), f.__name__


def test_a_write_into_a_view_nothing_else_reads_later_is_only_rebound():
    # EfficientNet's eval dropout_ on a flatten: the view's readers take the result, so
    # torch's re-trace (functionalisation) is not needed; it is where the base is read on.
    from coreml_compile.compiler.frontends.torch_export import _buffer_writes, export

    def on_a_flatten(a):
        v = (a * 2).flatten(1)
        v.relu_()
        return v + 1

    def base_read_later(a):
        b = a * 2
        v = b.flatten(1)
        v.relu_()
        return b + v.sum()

    def view_taken_before_read_later(a):
        b = a * 2
        v, w = b.flatten(1), b.view(-1)
        v.relu_()
        return w + 1

    x = torch.randn(3, 4, 4)
    for f, rebound in (
        (on_a_flatten, True),
        (base_read_later, False),
        (view_taken_before_read_later, False),
    ):
        assert (_buffer_writes(export(Fn(f), (x,))) is not None) == rebound, f.__name__
        g = trace(Fn(f), (x,))
        assert torch.allclose(run_graph(g, [x])[0], f(x.clone())), f.__name__


def test_an_unread_op_without_a_record_costs_no_decomposition():
    # Hugging Face's layer drop draws torch.rand([]) even in eval mode, and reads it only
    # when training: the node is dropped, not decomposed by a re-trace, nor a fallback.
    from coreml_compile.compiler.frontends.torch_export import _unmapped, export

    class LayerDrop(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 4)

        def forward(self, x):
            draw = torch.rand([])
            if self.training and draw < 0.1:
                return x
            return self.linear(x)

    model, x = LayerDrop().eval(), torch.randn(2, 4)
    assert _unmapped(export(model, (x,))) == set()
    compiled = coreml_compile.compile(model, (x,), allow_fallback=False, precision="fp32")
    assert compiled.report.ir_ops == {"linear": 1}


class _Unpool(nn.Module):
    def __init__(self):
        super().__init__()
        self.pool = nn.MaxPool3d(2, return_indices=True)
        self.unpool = nn.MaxUnpool3d(2)

    def forward(self, x):
        return self.unpool(*self.pool(x))


def test_a_record_is_not_used_when_the_graph_reads_an_output_it_does_not_compute():
    # max_pool3d's record computes the values only; the unpooling reads the indices.
    x = torch.randn(1, 2, 4, 4, 4)
    compiled = coreml_compile.compile(_Unpool().eval(), (x,), precision="fp32")
    assert "max_pool3d_with_indices" in compiled.report.fallback_reasons
    (got,) = compiled.predict({"x": x.numpy()}).values()
    assert torch.equal(torch.from_numpy(got), _Unpool()(x))


def test_unmapped_op_with_a_decomposition_is_decomposed():
    # aten.addcmul has no record; torch's decomposition turns it into mul and add.
    x = torch.randn(3, 4)
    g = trace(Fn(lambda a: torch.addcmul(a, a, a, value=0.5)), (x,))
    assert "aten" not in g.op_counts()
    assert torch.allclose(run_graph(g, [x])[0], torch.addcmul(x, x, x, value=0.5))


def test_op_without_record_or_decomposition_becomes_fallback_node():
    x = torch.randn(3, 3) + 3 * torch.eye(3)
    g = trace(Fn(lambda a: torch.linalg.inv(a) + 1), (x,))
    fallback = [n for n in g.nodes if n.op == "aten"]
    assert len(fallback) == 1 and fallback[0].attrs["target"].startswith("aten::linalg_inv")
    g.verify()
    assert torch.allclose(run_graph(g, [x])[0], torch.linalg.inv(x) + 1, atol=1e-5)
    with pytest.raises(UnsupportedOpError, match="linalg_inv.*no Core ML lowering"):
        coreml_compile.compile(Fn(lambda a: torch.linalg.inv(a) + 1), (x,), allow_fallback=False)


def test_composite_ops_export_keeps_whole_are_decomposed():
    # torch.export keeps composite ops such as view_as or .to(device) in the graph; each
    # has no record of its own and must not stop the compile.
    def composite(a, b):
        pieces = torch.hsplit(a.view_as(b).ravel().reshape_as(a), 2)
        wide = torch.broadcast_to(pieces[1].positive(), (2, 3, 2))
        return torch.atleast_2d(wide.sum()) + a.to(a.device).flatten()[:1]

    a, b = torch.randn(3, 4), torch.randn(4, 3)
    compiled = coreml_compile.compile(Fn(composite), (a, b), allow_fallback=False, precision="fp32")
    assert_close(compiled(a, b), composite(a, b), "fp32")


def test_a_dtype_argument_is_a_cast_only_where_that_gives_torchs_result():
    x = torch.randn(3, 4) > 0
    g = trace(Fn(lambda m: m.sum(1, dtype=torch.float16)), (x,))
    assert g.op_counts() == {"cast": 1, "sum": 1}
    # torch sums int32 into int64 unless told: a cast to int32 first would not be it.
    with pytest.raises(UnsupportedOpError, match="sum"):
        narrow = Fn(lambda m: m.sum(1, dtype=torch.int32))
        coreml_compile.compile(narrow, (x,), allow_fallback=False)


def test_as_strided_is_a_reshape_only_when_it_reads_in_order():
    x = torch.randn(2, 3, 4)
    in_order = trace(Fn(lambda a: torch.as_strided(a + 1, (6, 4), (4, 1))), (x,))
    assert set(in_order.op_counts()) == {"add", "reshape"}
    # A transposing stride, or an offset, reads storage out of order: torch runs it.
    for size, stride, offset in (((4, 6), (1, 4), 0), ((5, 4), (4, 1), 4)):

        def strided(a, size=size, stride=stride, offset=offset):
            return torch.as_strided(a + 1, size, stride, offset)

        graph = trace(Fn(strided), (x,))
        assert "aten" in graph.op_counts()


def test_non_tensor_example_input_is_rejected():
    with pytest.raises(InputSpecError, match="only tensors"):
        trace(Fn(lambda a: a), (3,))


def test_export_failure_is_a_trace_error():
    def data_dependent(a):
        if a.sum() > 0:
            return a
        return -a

    with pytest.raises(TraceError, match="--input-shape"):
        trace(Fn(data_dependent), (torch.randn(3),))


def test_dynamic_export_leaves_torchs_fake_tensor_cache_setting_as_it_was():
    # A dynamic export turns the cache off (it costs more than it saves with symbolic
    # shapes); the user's own torch.compile runs must find the setting untouched.
    before = torch._dynamo.config.fake_tensor_cache_enabled
    dim = torch.export.Dim("n", min=2, max=64)
    g = trace(Fn(lambda a: a.sum(0) * 2), (torch.randn(8),), dynamic_shapes=(({0: dim},),))
    assert any(not isinstance(d, int) for d in g.inputs[0].type.shape)
    assert torch._dynamo.config.fake_tensor_cache_enabled == before
    with pytest.raises(TraceError):
        trace(Fn(lambda a: a.view(3, -1)), (torch.randn(8),), dynamic_shapes=(({0: dim},),))
    assert torch._dynamo.config.fake_tensor_cache_enabled == before


# -- aten fallback ops fake tensors cannot run (issue 11) ---------------------------------


def test_fallback_op_fake_tensors_cannot_run_keeps_the_exports_types():
    # bincount's output shape depends on its input's values: torch.export ran it on the
    # constant, but verification runs it on fake tensors, which cannot (it used to crash).
    def f(a):
        return a + torch.bincount(torch.tensor([0, 1, 1, 3])).float()

    x = torch.randn(4)
    g = trace(Fn(f), (x,))
    (node,) = [n for n in g.nodes if n.op == "aten"]
    with pytest.raises(NoFakeRun, match="bincount"):
        Aten.infer(node.inputs, node.attrs)
    g.verify()  # the recorded i64[4] stands
    assert torch.equal(run_graph(g, [x])[0], f(x))
    compiled = coreml_compile.compile(Fn(f), (x,))  # folded to a constant at -O2
    assert_close(compiled(x), f(x), "fp16")


def test_verify_takes_the_recorded_types_of_an_op_without_fake_kernel():
    # aten::_to_dense has no fake or meta kernel for a strided tensor: fake tensors raise
    # NotImplementedError, as "Cannot copy out of meta tensor; no data!" is raised.
    g = Graph()
    x = g.add_input("x", TensorType("float32", (3,)))
    attrs = {"target": "aten::_to_dense.default", "args": [{"input": 0}], "kwargs": {}}
    node = g.add_node("aten", [x], attrs, output_types=[TensorType("float32", (3,))])
    g.outputs.append(node.output)
    with pytest.raises(NoFakeRun, match="_to_dense"):
        Aten.infer(node.inputs, node.attrs)
    g.verify()
    # A refused op is still refused, not excused.
    node.attrs["target"] = "aten::add_.Tensor"
    with pytest.raises(FallbackOpRefused):
        g.verify()


# -- torch.autocast regions (issue 11) ------------------------------------------------


class Autocast(nn.Module):
    """A bfloat16 region, an fp16 one nested in a disabled one, and a region's result
    returned as it is."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, a):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h = torch.relu(self.fc(a))
        with torch.autocast("cpu", enabled=False):
            g = h.float() * 2
            with torch.autocast("cpu", dtype=torch.float16):
                g = self.fc(g)
        return {"out": g + 1, "hidden": h}

    def without_autocast(self, a):
        h = torch.relu(self.fc(a))
        return {"out": self.fc(h * 2) + 1, "hidden": h}


def test_autocast_regions_are_inlined_and_compute_in_the_packages_precision(tmp_path):
    model = Autocast().eval()
    x = torch.randn(3, 4)
    ep = torch.export.export(model, (x,))
    g = trace(model, (x,))
    assert g.op_counts().keys() == {"linear", "relu", "cast", "mul", "add"}
    # The autocast dtype is not the program's: every value is typed as without autocast.
    assert {v.type.dtype for v in g.values() if not v.is_constant} == {"float32"}
    assert [v.name for v in g.outputs] == ["out", "hidden"]
    with torch.no_grad():
        want = model.without_autocast(x)
        autocast = model(x)
    compiled = coreml_compile.compile(ep, precision="fp32")
    loaded = coreml_compile.load(compiled.save(tmp_path / "model.mlpackage"))
    for result in (compiled(x), loaded(x)):  # outputs in order: out, hidden
        for got, key in zip(result, ("out", "hidden"), strict=True):
            assert_close(got, want[key], "fp32", key)
            # bfloat16 keeps 8 bits: the model's own results are that far from both.
            assert torch.allclose(got, autocast[key].float(), atol=0.05, rtol=0.05)
    # The caller's program is not changed.
    assert any(n.target is torch.ops.higher_order.wrap_with_autocast for n in ep.graph.nodes)


def test_autocast_with_dynamic_shapes():
    model = Autocast().eval()
    x = torch.randn(3, 4)
    g = trace(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch", max=64)},))
    assert not g.inputs[0].type.is_static
    g.verify()
    y = torch.randn(7, 4)
    with torch.no_grad():
        want = model.without_autocast(y)
    for got, key in zip(run_graph(g, [y]), ("out", "hidden"), strict=True):
        assert torch.allclose(got, want[key], atol=1e-6), key


def test_autocast_with_a_decomposed_op_and_a_dtype_check_after_it():
    # addcmul has no record: decomposing re-traces the program, which must not meet
    # export's check that the region's result is bfloat16.
    class M(nn.Module):
        def forward(self, a):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                h = torch.mm(a, a)
            return torch.addcmul(a, h.float(), a, value=0.5)

    x = torch.randn(4, 4)
    g = trace(M(), (x,))
    assert "aten" not in g.op_counts()
    assert torch.allclose(run_graph(g, [x])[0], torch.addcmul(x, x @ x, x, value=0.5), atol=1e-5)
