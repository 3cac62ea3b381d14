"""The torch.export frontend: names, constants, in-place ops, decomposition, fallback."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import coreml_compile
from coreml_compile.compiler.frontends.torch_export import trace
from coreml_compile.compiler.interpreter import run_graph
from coreml_compile.errors import InputSpecError, TraceError, UnsupportedOpError
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
