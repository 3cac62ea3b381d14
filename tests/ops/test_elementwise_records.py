"""The ``elementwise`` mark on op records: passes move layout changes past those ops
(sink_transposes) and merge axes through them (lower_rank), so a mark on an op that
reads an axis would miscompile. Checked on the op table's samples: an element-wise op
commutes with reversing the axes of all its (same-rank) operands."""

from __future__ import annotations

import pytest
import torch

from coreml_compile.compiler.ops import all_records, get_record
from tests.ops.samples import SAMPLES


def _layout_free(sample) -> bool:
    return all(get_record(op).elementwise for op in (sample.op, *sample.also))


def _swappable(sample) -> bool:
    ranks = {t.dim() for t in sample.inputs if isinstance(t, torch.Tensor)}
    return len(ranks) == 1 and ranks.pop() >= 2


CASES = [s for s in SAMPLES if _layout_free(s) and _swappable(s)]


def _swap(t):
    """All axes reversed: any op that reads an axis sees a different one."""
    return t.permute(*reversed(range(t.dim()))) if isinstance(t, torch.Tensor) else t


@pytest.mark.parametrize("sample", CASES, ids=lambda s: f"{s.op}-{s.id}")
def test_an_elementwise_record_gives_the_same_values_on_any_layout(sample):
    with torch.no_grad():
        direct = sample.module(*sample.inputs)
        swapped = sample.module(*[_swap(t) for t in sample.inputs])
    torch.testing.assert_close(swapped, _swap(direct), equal_nan=True)


def _kernel_check(name: str) -> bool:
    """Run a marked record's kernel (default attributes) on same-shape operands, float
    then bool, and compare with the swapped layout; False if it takes neither."""
    record = get_record(name)
    tensors = [n for n in record.inputs if not n.startswith("*")]
    gen = torch.Generator().manual_seed(0)
    for make in (lambda: torch.rand(2, 3, 4, generator=gen) + 0.5,
                 lambda: torch.rand(2, 3, 4, generator=gen) > 0.5):  # fmt: skip
        args = [make() for _ in tensors]
        try:
            direct = record.kernel(*args, **dict(record.attrs))
        except (TypeError, RuntimeError):
            continue
        swapped = record.kernel(*[_swap(a) for a in args], **dict(record.attrs))
        torch.testing.assert_close(swapped, _swap(direct), equal_nan=True)
        return True
    return False


@pytest.mark.parametrize("name", sorted(n for n, r in all_records().items() if r.elementwise))
def test_an_elementwise_kernel_commutes_with_a_layout_change(name):
    if not _kernel_check(name) and name not in {s.op for s in CASES}:
        pytest.fail(f"{name} is marked elementwise but nothing checks it")


def test_ops_that_read_an_axis_are_not_marked():
    for op in ("softmax", "cumsum", "sum", "all", "any", "prelu", "layer_norm", "permute"):
        assert not get_record(op).elementwise, op
