"""How the -O2 pipeline's time grows with graph size: it should grow linearly.

Builds chain IR graphs whose blocks give every clean-up and fusion pass work (a foldable
constant, a no-op, a permute pair that cancels, a hand-written silu, a repeated
expression, a dead node), times ``run_pipeline(graph, pipeline("O2"))`` on 1.5k, 6k and
24k nodes and on a 100,000-node graph, and prints the 4x ratios (linear: 4.0). Then it
traces a 6,000-op chain model with torch.export and times -O2 on its graph.

    python benchmarks/pass_scaling.py                  # everything
    python benchmarks/pass_scaling.py --skip-model     # IR graphs only (no torch.export)
    python benchmarks/pass_scaling.py --sizes 1500 6000 --skip-large

Targets: a 6,000-op chain model optimises in <= 1 s, 4x the nodes cost <= 6x the time,
and a 100,000-node graph runs the whole pipeline in <= 10 s.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from coreml_compile.compiler.ir import Graph, TensorType  # noqa: E402
from coreml_compile.passes import pipeline, run_pipeline  # noqa: E402

_BLOCK = 10  # nodes per block of chain_graph


def chain_graph(nodes: int) -> Graph:
    """A chain of ``nodes // 10`` blocks of ten nodes on a (16, 16) tensor:

    %k = mul(%c_i, 2)                  # constant: folded
    %a = add(%x, %k)   %b = mul(%a, 1) # the mul is a no-op
    %p = permute(%b)   %q = permute(%p)  # cancel
    %s = sigmoid(%q)   %y = mul(%q, %s)  # silu
    %r = relu(%y)      %r2 = relu(%y)  %x' = add(%r, %r2)  # one relu is a duplicate

    (and every 10th block an unused tanh, which dead-code removal drops).
    """
    g = Graph("chain")
    t = TensorType("float32", (16, 16))
    x = g.add_input("x", t)
    one = g.add_constant("one", np.ones((), np.float32))
    two = g.add_constant("two", np.full((), 2.0, np.float32))
    rng = np.random.default_rng(0)
    vector = [TensorType("float32", (16,))]

    def node(op, inputs, attrs=None, types=(t,)):
        # Types given: inferring them runs each op's kernel, slower than the passes.
        return g.add_node(op, inputs, attrs, list(types)).output

    for i in range(max(1, nodes // _BLOCK)):
        c = g.add_constant(f"c{i}", rng.standard_normal(16).astype(np.float32))
        k = node("mul", [c, two], types=vector)
        a = node("add", [x, k], {"alpha": 1})
        b = node("mul", [a, one])
        p = node("permute", [b], {"dims": [1, 0]})
        q = node("permute", [p], {"dims": [1, 0]})
        s = node("sigmoid", [q])
        y = node("mul", [q, s])
        r1 = node("relu", [y])
        r2 = node("relu", [y])
        if i % 10 == 9:
            node("tanh", [r2])
        x = node("add", [r1, r2], {"alpha": 1})
    g.outputs.append(x)
    return g


def time_o2(graph: Graph) -> tuple[float, int, int]:
    before = len(graph.nodes)
    start = time.perf_counter()
    run_pipeline(graph, pipeline("O2"))
    return time.perf_counter() - start, before, len(graph.nodes)


def chain_model_graph(ops: int) -> Graph:
    """The IR of a torch model whose forward is a chain of ``ops`` ATen ops, in blocks of
    six: a no-op ``* 1``, a transpose pair, a hand-written silu and an add."""
    import torch

    from coreml_compile.compiler.frontends.torch_export import trace

    class Chain(torch.nn.Module):
        def forward(self, x):
            for _ in range(ops // 6):
                y = (x * 1.0).t().t()
                x = y * torch.sigmoid(y) + 0.001
            return x

    return trace(Chain(), (torch.randn(16, 16),))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1500, 6000, 24000])
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--skip-model", action="store_true")
    parser.add_argument("--model-ops", type=int, default=6000)
    args = parser.parse_args()

    print("-O2 (run_pipeline) on chain IR graphs")
    previous: tuple[float, int] | None = None
    for size in args.sizes:
        seconds, before, after = time_o2(chain_graph(size))
        ratio = ""
        if previous is not None:
            ratio = f"  x{seconds / previous[0]:.1f} time for x{before / previous[1]:.1f} nodes"
        previous = (seconds, before)
        print(f"  {before:>7} nodes -> {after:>6}: {seconds:8.3f} s{ratio}")
    if not args.skip_large:
        seconds, before, after = time_o2(chain_graph(args.large))
        print(f"  {before:>7} nodes -> {after:>6}: {seconds:8.3f} s  (target <= 10 s)")
    if not args.skip_model:
        start = time.perf_counter()
        graph = chain_model_graph(args.model_ops)
        traced = time.perf_counter() - start
        seconds, before, after = time_o2(graph)
        print(
            f"-O2 on a {args.model_ops}-op chain model ({before} IR nodes -> {after}, "
            f"traced in {traced:.1f} s): {seconds:.3f} s  (target <= 1 s)"
        )


if __name__ == "__main__":
    main()
