"""Clean-up passes: constant folding, no-ops, transposes, CSE, dead code."""

from __future__ import annotations

import torch
from torch import nn

from coreml_compile.compiler.frontends.torch_export import trace
from coreml_compile.passes import run_pipeline
from tests.ops.samples import Fn
from tests.passes.helpers import apply

x = torch.randn(2, 3, 4)


def test_fold_constants():
    w = torch.randn(3, 4)
    before, after, graph = apply(
        lambda a: a + (w * 2 + 1), (x,), "fold_constants", "eliminate_dead_code"
    )
    assert before == {"add": 2, "mul": 1} and after == {"add": 1}
    assert not any(v.data is w.numpy() for v in graph.constants.values())


def test_fold_constants_never_writes_model_weights():
    lin = nn.Linear(4, 4)
    saved = lin.weight.detach().clone()
    apply(lambda a: lin(a) * 1.0 + lin.weight.sum() * 0, (x,), "fold_constants", "remove_noops")
    assert torch.equal(lin.weight.detach(), saved)


def test_remove_noops():
    def f(a):
        a = nn.functional.dropout(a, 0.5, training=False)
        a = a.reshape(2, 3, 4) * 1.0 + 0.0
        a = a.permute(0, 1, 2).float().clone()
        return torch.relu(a)

    before, after, _ = apply(f, (x,), "remove_noops", "eliminate_dead_code")
    assert after == {"relu": 1}, (before, after)


def test_a_copy_into_a_slice_writes_its_source():
    def f(a):
        b = a * 2
        b[:, 1:3] = a[:, :2] + 1  # functionalised: copy(slice(b), src) scattered back
        c = a * 3
        c[:, 1:3] = a[:, :1]  # broadcast: torch expands src to the slice first
        return b + c

    before, after, _ = apply(f, (x,), "remove_noops", "eliminate_dead_code")
    assert before["copy"] == 2 and "copy" not in after, (before, after)
    # The slices the copies wrote into were read for their shape only.
    assert after["slice"] == before["slice"] - 2, (before, after)


def test_noop_that_broadcasts_is_kept():
    zeros = torch.zeros(5, 2, 3, 4)
    before, after, _ = apply(lambda a: a + zeros, (x,), "remove_noops")
    assert after == before == {"add": 1}


def test_small_factories_fold_and_random_ones_do_not():
    before, after, _ = apply(lambda a: a + torch.ones(3, 4), (x,), "fold_constants")
    assert before == {"add": 1, "full": 1} and after == {"add": 1}
    # full_like reads only its input's shape: it folds although that input is not constant.
    before, after, _ = apply(lambda a: a * torch.full_like(a, 2.0), (x,), "fold_constants")
    assert before == {"mul": 1, "full_like": 1} and after == {"mul": 1}
    # (not through apply: a random result differs from run to run)
    graph = trace(Fn(lambda a: a + torch.rand(3, 4)), (x,))
    run_pipeline(graph, ["fold_constants"])
    assert graph.op_counts() == {"add": 1, "aten": 1}


def test_output_keeps_its_name_when_its_producer_is_removed():
    _, after, graph = apply(lambda a: torch.relu(a).clone(), (x,), "remove_noops")
    assert after == {"relu": 1} and [v.name for v in graph.outputs] == ["output"]


def test_cancel_transposes_and_reshapes():
    def f(a):
        y = a.permute(0, 2, 1).permute(0, 2, 1)  # cancels
        z = a.transpose(1, 2).permute(2, 0, 1)  # composes into one permute
        w = a.reshape(6, 4).flatten()  # composes into one reshape
        return y + 1, z, w

    before, after, _ = apply(f, (x,), "cancel_transposes", "eliminate_dead_code")
    assert after == {"add": 1, "permute": 1, "reshape": 1}, (before, after)


def test_common_subexpressions():
    before, after, _ = apply(
        lambda a: torch.relu(a * 2) + torch.relu(a * 2), (x,), "eliminate_common_subexpressions"
    )
    assert before == {"mul": 2, "relu": 2, "add": 1} and after == {"mul": 1, "relu": 1, "add": 1}


def test_dead_code():
    def f(a):
        torch.sigmoid(a)  # unused
        return a + 1

    before, after, _ = apply(f, (x,), "eliminate_dead_code")
    assert "sigmoid" not in after
