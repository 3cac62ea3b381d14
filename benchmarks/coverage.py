"""Coverage: every model file in models/ through coreml-compile and coremltools.convert.

For each model file (its default ``model``; files without ``model`` and
``example_inputs``, such as seeded.py, are skipped) both tools start from the same
torch.export program in a fresh subprocess: ours is ``coreml_compile.compile`` with the
default options (fp16, iOS16, fallback allowed), coremltools' is ``ct.convert`` of
``ep.run_decompositions({})`` (fp16 ML Program, iOS16), as benchmarks/compare_coremltools.py
runs it. Each package is saved, then run by this project's reference executor on the
model's example inputs and compared with torch (cosine of the first output).

Prints, per model: whether it runs entirely on Core ML (else its partitions and the ops
that fell back, with reasons), whether coremltools converts it (else the first line of
its error), Core ML op counts, and compile + save seconds (libraries imported before the
clock) with our/coremltools ratios;
then a markdown table of the same.

    python benchmarks/coverage.py                        # every model file
    python benchmarks/coverage.py --models llama swin    # some of them (file stems)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = ROOT / "models"
TOOLS = ("ours", "coremltools")
CHILD_TIMEOUT_S = 1200


def model_files() -> list[str]:
    """Stems of the files in models/ that follow the model-file convention."""
    names = []
    for path in sorted(MODELS_DIR.glob("*.py")):
        text = path.read_text()
        has_model = re.search(r"^(def model\(|model = )", text, re.M)
        has_inputs = re.search(r"^def example_inputs\(", text, re.M)
        if has_model and has_inputs:
            names.append(path.stem)
    return names


def _cosine(actual, expected) -> float:
    import torch

    a = torch.as_tensor(actual).double().flatten()
    e = torch.as_tensor(expected).double().flatten()
    if not (torch.isfinite(a).all() and torch.isfinite(e).all()):
        return float("nan")
    return torch.nn.functional.cosine_similarity(a, e, 0).item()


def _first_output(value):
    return value[0] if isinstance(value, (tuple, list)) else value


def measure(tool: str, name: str, out: Path) -> dict:
    """Runs in the child process: export, compile with ``tool``, save, run; report figures."""
    import torch

    import coreml_compile
    from coreml_compile.compiler.mil import import_coremltools, quiet_coremltools
    from coreml_compile.runtime.package import read_program

    sys.path.insert(0, str(MODELS_DIR))
    module = __import__(name)
    model = module.model().eval()
    inputs = module.example_inputs()
    with torch.no_grad():
        expected = _first_output(model(*inputs))
        ep = torch.export.export(model, inputs)
    result: dict = {}
    # Library imports are a process's start-up, not compile time: coremltools (which
    # imports scikit-learn and scipy where they are installed) loads before the clock,
    # for both tools.
    ct = import_coremltools()
    start = time.perf_counter()
    # A model with state (models/llama_kv.py's KV cache) needs iOS18 and names it.
    target = getattr(module, "MINIMUM_TARGET", "iOS16")
    if tool == "ours":
        compiled = coreml_compile.compile(ep, minimum_deployment_target=target)
        compiled.save(out)
        result["seconds"] = time.perf_counter() - start
        report = compiled.report
        result["whole"] = compiled.plan is None
        result["partitions"] = 1 if compiled.plan is None else len(compiled.plan.steps)
        result["coreml_share"] = report.coreml_share
        result["fallback"] = dict(report.fallback_reasons)
        result["ops"] = report.mil_op_count
    else:
        try:
            with quiet_coremltools():
                mlmodel = ct.convert(
                    ep.run_decompositions({}),
                    convert_to="mlprogram",
                    compute_precision=ct.precision.FLOAT16,
                    minimum_deployment_target=getattr(ct.target, target),
                )
                mlmodel.save(str(out))
        except Exception as exc:  # coremltools raises many types
            text = str(exc).strip()
            first = text.splitlines()[0] if text else ""
            result["error"] = f"{type(exc).__name__}: {first}"[:300]
            result["seconds"] = time.perf_counter() - start
            return result
        result["seconds"] = time.perf_counter() - start
        _, program = read_program(out)
        result["ops"] = sum(
            1 for op in program.functions["main"].operations if op.op_type != "const"
        )
    try:
        loaded = coreml_compile.load(out, backend="reference")
        # One call from a fresh state, as torch's first call ran from zeroed buffers.
        state = loaded.make_state() if loaded.state_names else None
        result["cosine"] = _cosine(_first_output(loaded(*inputs, state=state)), expected)
    except Exception as exc:  # a package the reference executor cannot run
        result["run_error"] = f"{type(exc).__name__}: {str(exc).strip()[:200]}"
    return result


def _child(tool: str, name: str, workdir: Path) -> dict:
    out = workdir / f"{name}-{tool}.mlpackage"
    cmd = [sys.executable, __file__, "--child", tool, name, str(out)]
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"crash": f"timed out after {CHILD_TIMEOUT_S} s"}
    finally:
        shutil.rmtree(out, ignore_errors=True)
    lines = run.stdout.strip().splitlines()
    if run.returncode != 0 or not lines:
        tail = (run.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"crash": tail[:300]}
    return json.loads(lines[-1])


def _fallback_text(r: dict) -> str:
    if not r.get("fallback"):
        return ""
    return "; ".join(f"`{op}`: {why}" for op, why in sorted(r["fallback"].items()))


def _ours_cell(r: dict) -> str:
    if "crash" in r:
        return f"fails: {r['crash']}"
    if r["whole"]:
        return "yes"
    return f"no: {r['partitions']} partitions, {r['coreml_share']:.0%} of nodes on Core ML"


def _theirs_cell(r: dict) -> str:
    if "crash" in r:
        return f"fails: {r['crash']}"
    if "error" in r:
        return f"no: {r['error']}"
    return "yes"


def _pair(a, b, fmt: str) -> str:
    def one(v):
        if v is None:
            return "–"
        return "non-finite" if v != v else format(v, fmt)

    return f"{one(a)} / {one(b)}"


def _ratio(a, b) -> str:
    return f" ({a / b:.2f}×)" if a is not None and b else ""


def print_table(rows: dict[str, dict[str, dict]]) -> None:
    print(
        "\n| model | all on Core ML (ours) | fallback ops (ours) | coremltools converts "
        "| Core ML ops (ours / ct) | compile s (ours / ct) | cosine fp16 (ours / ct) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        ours, theirs = r["ours"], r["coremltools"]
        ops_o, ops_t = ours.get("ops"), theirs.get("ops")
        s_o = ours.get("seconds") if "crash" not in ours else None
        s_t = theirs.get("seconds") if "ops" in theirs else None
        cos_o, cos_t = ours.get("cosine"), theirs.get("cosine")
        print(
            f"| {name} | {_ours_cell(ours)} | {_fallback_text(ours) or '–'} "
            f"| {_theirs_cell(theirs)} | {_pair(ops_o, ops_t, 'd')}{_ratio(ops_o, ops_t)} "
            f"| {_pair(s_o, s_t, '.2f')}{_ratio(s_o, s_t)} | {_pair(cos_o, cos_t, '.6f')} |"
        )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _, _, tool, name, out = sys.argv
        os.environ.setdefault("TQDM_DISABLE", "1")
        print(json.dumps(measure(tool, name, Path(out))))
        return
    available = model_files()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=available, choices=available)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="cc-coverage-"))
    rows: dict[str, dict[str, dict]] = {}
    try:
        for name in args.models:
            rows[name] = {tool: _child(tool, name, workdir) for tool in TOOLS}
            ours, theirs = rows[name]["ours"], rows[name]["coremltools"]
            print(f"{name}: ours {_ours_cell(ours)}; coremltools {_theirs_cell(theirs)}")
            if ours.get("fallback"):
                print(f"  fell back: {_fallback_text(ours)}")
            for tool, r in rows[name].items():
                if "run_error" in r:
                    print(f"  {tool}: the reference executor could not run it: {r['run_error']}")
            sys.stdout.flush()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(rows)


if __name__ == "__main__":
    main()
