"""The reference executor's own contract: dtypes honoured, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import coreml_compile
from coreml_compile.compiler.mil import import_coremltools
from coreml_compile.errors import InputSpecError
from coreml_compile.runtime.mil_kernels import UnknownMILOp
from coreml_compile.runtime.reference import ReferenceExecutor


class Amplify(nn.Module):
    def forward(self, x):
        return (x * 300.0) * 300.0


def test_fp16_overflow_shows_as_on_device():
    x = torch.tensor([[1.0, -2.0, 0.5]])
    fp32 = coreml_compile.compile(Amplify(), (x,), precision="fp32")(x)
    fp16 = coreml_compile.compile(Amplify(), (x,), precision="fp16")(x)
    assert torch.equal(fp32, torch.tensor([[90000.0, -180000.0, 45000.0]]))
    # 90000 > 65504, the largest fp16: inf, as Core ML's fp16 arithmetic gives.
    assert fp16[0, 0].item() == float("inf") and fp16[0, 1].item() == float("-inf")
    # 45000 fits, rounded to the nearest fp16 value (their spacing there is 32).
    assert fp16[0, 2].item() == float(np.float16(45000.0)) == 44992.0


class DivideByLarge(nn.Module):
    def forward(self, x):
        return x / 90000.0


def test_constant_beyond_fp16_range_is_a_warning():
    x = torch.ones(1, 2)
    compiled = coreml_compile.compile(DivideByLarge(), (x,), precision="fp16")
    (warning,) = compiled.report.warnings
    assert "holds 90000, beyond fp16's range" in warning
    assert not coreml_compile.compile(DivideByLarge(), (x,), precision="fp32").report.warnings


def test_fp16_rounding_after_each_op():
    x = torch.tensor([1.0 + 2**-12])  # not representable in fp16 (10 mantissa bits)
    compiled = coreml_compile.compile(nn.Identity(), (x,), precision="fp16")
    assert compiled(x).item() == 1.0


def test_unknown_mil_op_is_named():
    import_coremltools()
    from coremltools.converters.mil import Builder as mb

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4, 2, 2))])
    def program(x):
        return mb.depth_to_space(x=x, block_size=2)

    with pytest.raises(UnknownMILOp, match="no kernel for MIL op 'depth_to_space'"):
        ReferenceExecutor(program)


@pytest.mark.parametrize(
    "feeds,message",
    [
        ({}, "missing input(s) x"),
        ({"x": np.zeros((2, 3), np.float32), "y": np.zeros(1)}, "unknown input(s) y"),
        ({"x": np.zeros((3, 2), np.float32)}, "input x: expected shape [2, 3], got [3, 2]"),
        ({"x": np.zeros((2, 3), np.int32)}, "input x: expected fp32 data, got int32"),
    ],
)
def test_wrong_inputs_name_what_was_expected(feeds, message):
    class M(nn.Module):
        def forward(self, x):
            return x + 1

    compiled = coreml_compile.compile(M(), (torch.zeros(2, 3),))
    with pytest.raises(InputSpecError) as info:
        compiled.predict(feeds)
    assert message in str(info.value)
