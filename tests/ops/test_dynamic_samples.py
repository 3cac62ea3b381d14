"""Every record that says ``dynamic = True`` lowers with symbolic dimensions.

Each sample of such a record is exported with every dimension of every input dynamic
(``Dim.AUTO``: torch keeps static what the model fixes, and relates the rest), given a
bound, run through the default (-O2) passes, lowered with flexible inputs, and run by
the reference executor at the sample's shapes; the result must match torch. A lowering
that read a static size from a value's type would fail to build or compute the wrong
thing here. A sample whose graph needs a record that is not dynamic is skipped with that
reason (the op's own samples test it).
"""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest
import torch
from torch.export import Dim

from coreml_compile.compiler import targets
from coreml_compile.compiler.frontends.torch_export import export, to_ir
from coreml_compile.compiler.lower import build_program, flexible_inputs, to_mlmodel
from coreml_compile.compiler.ops import get_record, unsupported_reason
from coreml_compile.passes import pipeline, run_pipeline
from coreml_compile.runtime.input_shapes import description_shapes
from coreml_compile.runtime.reference import ReferenceExecutor
from tests.ops.samples import SAMPLES

DYNAMIC = [s for s in SAMPLES if get_record(s.op).dynamic]
# What an unbounded dimension gets here: the compile API refuses unbounded ones.
BOUND = 4096


def _auto(sample) -> tuple:
    specs = [
        {i: Dim.AUTO for i in range(t.dim())} if isinstance(t, torch.Tensor) and t.dim() else None
        for t in sample.inputs
    ]
    # torch.export takes a forward's *args as one more argument: a tuple of their specs.
    params = inspect.signature(sample.module.forward).parameters.values()
    named = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    rest = tuple(specs[len(named) :])
    if any(p.kind == p.VAR_POSITIONAL for p in params) and (rest or not named):
        return (*specs[: len(named)], rest)
    return tuple(specs)


def test_most_records_lower_dynamic_shapes():
    assert len({s.op for s in DYNAMIC}) >= 145


@pytest.mark.parametrize("sample", DYNAMIC, ids=lambda s: f"{s.op}-{s.id}")
def test_dynamic_lowering_matches_torch(sample):
    graph = to_ir(export(sample.module, sample.inputs, _auto(sample)))
    if not graph.symbols or all(v.type.is_static for v in graph.inputs):
        pytest.skip("torch.export kept every dimension static")
    for name, symbol in graph.symbols.items():
        if symbol.max is None:
            graph.symbols[name] = dataclasses.replace(symbol, max=BOUND)
    # The default pipeline too: passes must keep symbolic graphs correct.
    run_pipeline(graph, pipeline("O2"))
    graph.verify()
    target = sample.target or targets.DEFAULT
    generation = targets.generation(target)
    blocked = [r for n in graph.nodes if (r := unsupported_reason(n, generation))]
    if blocked:
        pytest.skip(blocked[0])
    program = build_program(graph, "fp32", target)
    model = to_mlmodel(program, target, inputs=flexible_inputs(graph))
    executor = ReferenceExecutor(program, input_shapes=description_shapes(model._spec.description))
    feeds = {v.name: t.numpy() for v, t in zip(graph.inputs, sample.inputs, strict=True)}
    got = executor.predict(feeds)
    with torch.no_grad():
        want = sample.module(*sample.inputs)
    want = list(want) if isinstance(want, tuple | list) else [want]
    for out, expected in zip(got.values(), want, strict=True):
        expected = expected.numpy()
        assert out.shape == expected.shape
        np.testing.assert_allclose(
            out.astype(np.float64), expected.astype(np.float64), rtol=1e-4, atol=1e-4
        )
