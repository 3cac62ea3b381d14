"""Op coverage beside coremltools: every op in torch's own OpInfo database, both tools.

For each OpInfo op that takes float32 on CPU, the first of its sample inputs that
torch.export takes becomes a one-op model: the sample's first tensor is the model's
input, its other tensors are the model's own (buffers), as weights, indices and masks
are in real models. Both tools start from that exported program:

- ours: ``coreml_compile.compile(ep, allow_fallback=False, precision="fp32")``, then the
  package run by the reference executor and compared with torch (max abs difference
  within 1e-3 of the output's scale; integer and bool outputs exactly);
- coremltools: ``ct.convert(ep.run_decompositions({}))``, fp32 ML Program, iOS16 (it
  cannot run here, so only whether it converts).

Prints the four counts (both, ours only, coremltools only, neither), the ops only
coremltools converts (with our reason), and any op whose package disagrees with torch.

    pip install expecttest        # torch's OpInfo database imports it
    python benchmarks/op_coverage.py                     # every op: about 8 minutes
    python benchmarks/op_coverage.py --ops cumprod max   # some ops (OpInfo names)
    python benchmarks/op_coverage.py --jsonl ops.jsonl   # one JSON line per op, too

OpInfo is torch's test-suite module (``torch.testing._internal``), not a public API:
this script is a measurement, and nothing in the package or the tests imports it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import signal
import sys
import warnings
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils import _pytree as pytree  # noqa: E402

import coreml_compile  # noqa: E402
from coreml_compile.compiler.mil import quiet_coremltools  # noqa: E402

PER_OP_TIMEOUT_S = 60
SAMPLES_TRIED = 6


class _Timeout(Exception):
    pass


def _on_alarm(*_):
    raise _Timeout()


class OneOp(nn.Module):
    """An op applied to one input, its other tensor arguments held as buffers."""

    def __init__(self, fn, spec, leaves: list, tensor_at: list[int]):
        super().__init__()
        self.fn, self.spec, self.leaves, self.tensor_at = fn, spec, leaves, tensor_at
        for k, i in enumerate(tensor_at[1:]):
            self.register_buffer(f"arg{k}", leaves[i])

    def forward(self, x):
        leaves = list(self.leaves)
        leaves[self.tensor_at[0]] = x
        for k, i in enumerate(self.tensor_at[1:]):
            leaves[i] = getattr(self, f"arg{k}")
        args, kwargs = pytree.tree_unflatten(leaves, self.spec)
        return self.fn(*args, **kwargs)


def _first_line(exc: BaseException) -> str:
    lines = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


def _tensors(result) -> list[torch.Tensor]:
    return [t for t in pytree.tree_leaves(result) if isinstance(t, torch.Tensor)]


def _usable(leaves: list, tensor_at: list[int]) -> bool:
    tensors = [leaves[i] for i in tensor_at]
    return (
        bool(tensors)
        and tensors[0].dim() > 0
        and not any(t.numel() == 0 or t.dtype.is_complex for t in tensors)
    )


def _export(op):
    """(exported program, model, input, torch's result) for the op's first usable sample."""
    for sample in list(op.sample_inputs("cpu", torch.float32, requires_grad=False))[:SAMPLES_TRIED]:
        leaves, spec = pytree.tree_flatten(((sample.input, *sample.args), sample.kwargs))
        tensor_at = [i for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor)]
        if not _usable(leaves, tensor_at):
            continue
        model = OneOp(op.op, spec, leaves, tensor_at).eval()
        x = leaves[tensor_at[0]]
        try:
            with torch.no_grad():
                want = model(x)
            outs = _tensors(want)
            if not outs or any(t.dtype.is_complex or t.numel() == 0 for t in outs):
                continue
            with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
                return torch.export.export(model, (x,)), x, want
        except _Timeout:
            raise
        except Exception:
            continue
    return None


def _mismatch(got, want) -> str | None:
    got, want = _tensors(got), _tensors(want)
    if len(got) != len(want):
        return f"{len(got)} outputs, torch has {len(want)}"
    for g, e in zip(got, want, strict=True):
        g = torch.as_tensor(g)
        if g.shape != e.shape:
            return f"shape {list(g.shape)}, torch {list(e.shape)}"
        if not e.dtype.is_floating_point:
            if not torch.equal(g.to(e.dtype), e):
                return f"{e.dtype} values differ"
            continue
        e, g = e.double(), g.double()
        finite = torch.isfinite(e)
        if not torch.equal(torch.isnan(e), torch.isnan(g)):
            return "nan at other places"
        if finite.any():
            scale = e[finite].abs().max().item()
            diff = (e[finite] - g[finite]).abs().max().item()
            if diff > 1e-3 + 1e-3 * scale:
                return f"max abs difference {diff:.3g}"
    return None


def probe(op) -> dict:
    record = {"op": op.name + (f".{op.variant_test_name}" if op.variant_test_name else "")}
    signal.alarm(PER_OP_TIMEOUT_S)
    try:
        exported = _export(op)
        if exported is None:
            record["skipped"] = "no sample torch.export takes"
            return record
        ep, x, want = exported
        try:
            with quiet_coremltools():
                compiled = coreml_compile.compile(ep, allow_fallback=False, precision="fp32")
            got = compiled(x)
            if "empty" in op.name:  # torch leaves the values undefined: shapes only
                got, want = _tensors(got), [torch.zeros_like(t) for t in _tensors(want)]
                got = [torch.zeros_like(torch.as_tensor(t)) for t in got]
            wrong = _mismatch(got, want)
            record["ours"] = "ok" if wrong is None else "wrong"
            if wrong:
                record["ours_error"] = wrong
        except _Timeout:
            raise
        except Exception as exc:
            record["ours"], record["ours_error"] = "fail", _first_line(exc)
        try:
            import coremltools as ct

            with quiet_coremltools(), contextlib.redirect_stderr(io.StringIO()):
                ct.convert(
                    ep.run_decompositions({}),
                    convert_to="mlprogram",
                    compute_precision=ct.precision.FLOAT32,
                    minimum_deployment_target=ct.target.iOS16,
                    skip_model_load=True,
                )
            record["coremltools"] = "ok"
        except _Timeout:
            raise
        except BaseException as exc:  # coremltools raises assertion errors too
            record["coremltools"], record["coremltools_error"] = "fail", _first_line(exc)
    except _Timeout:
        record["skipped"] = f"over {PER_OP_TIMEOUT_S} s"
    finally:
        signal.alarm(0)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", nargs="+", help="OpInfo names (default: every op)")
    parser.add_argument("--jsonl", type=Path, help="also write one JSON line per op here")
    args = parser.parse_args()
    try:
        from torch.testing._internal.common_methods_invocations import op_db
    except ModuleNotFoundError as exc:
        sys.exit(f"error: torch's OpInfo database needs {exc.name}: pip install {exc.name}")
    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    signal.signal(signal.SIGALRM, _on_alarm)
    chosen = [
        op
        for op in op_db
        if torch.float32 in op.supported_dtypes("cpu") and (not args.ops or op.name in args.ops)
    ]
    sink = args.jsonl.open("w") if args.jsonl else None
    records = []
    for i, op in enumerate(chosen, 1):
        record = probe(op)
        records.append(record)
        if sink:
            print(json.dumps(record), file=sink, flush=True)
        print(f"\r{i}/{len(chosen)} {record['op'][:40]:40s}", end="", file=sys.stderr)
    print(file=sys.stderr)
    counts = Counter((r["ours"] == "ok", r["coremltools"] == "ok") for r in records if "ours" in r)
    print(f"ops probed: {len(records)} ({sum('skipped' in r for r in records)} skipped)")
    print(f"  both convert:          {counts[True, True]}")
    print(f"  only coreml-compile:   {counts[True, False]}")
    print(f"  only coremltools:      {counts[False, True]}")
    print(f"  neither:               {counts[False, False]}")
    only_theirs = [r for r in records if r.get("coremltools") == "ok" and r.get("ours") != "ok"]
    if only_theirs:
        print("\nonly coremltools converts:")
        for r in only_theirs:
            print(f"  {r['op']:36s} {r.get('ours_error', '')[:110]}")
    wrong = [r for r in records if r.get("ours") == "wrong"]
    if wrong:
        print("\npackage disagrees with torch:")
        for r in wrong:
            print(f"  {r['op']:36s} {r['ours_error']}")


if __name__ == "__main__":
    main()
