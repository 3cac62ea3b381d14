"""Compile .onnx files with coreml-compile and with onnx2coreml, side by side, in one run.

onnx2coreml (1.1.0, on PyPI) is the other ONNX -> Core ML converter built on coremltools.
It needs its own environment so that it never touches this project's:

    python3 -m venv /tmp/o2c && /tmp/o2c/bin/pip install "onnx2coreml[verify]==1.1.0"

The ``verify`` extra brings onnxruntime, which onnx2coreml's constant folding runs on;
without it every graph with a ``Constant`` node (all torch.onnx.export output) fails.

The files are the nine "light" model-zoo graphs shipped inside the installed ``onnx``
package (onnx/backend/test/data/light/*.onnx; their weights are ConstantOfShape fills,
so they are full-size models) and models/ files exported with ``torch.onnx.export``
(TorchScript exporter, in a child process of this environment).

Every measurement runs in a fresh subprocess: ours with this environment's python
(``coreml_compile.compile(path).save(out)``: fp16 ML Program, iOS16), theirs with the
venv's python (``onnx2coreml.convert(path, format="mlpackage",
minimum_deployment_target="iOS16").save(out)``: fp16 ML Program, iOS16). Before the clock
starts, each child imports its tool and converts a two-node Conv + Relu graph once, so
that imports and lazy module loading ("startup") are counted apart from the conversion.
Timed: load + convert + save of the file. Peak RSS is the child's high-water mark
(``VmHWM``), also shown as the part added after startup. Core ML ops are counted in
both saved packages by the same reader. A tool that fails shows the first line of its
error; ratios (ours / onnx2coreml) are over the files both convert.

    python benchmarks/onnx_compare.py                          # light graphs + models/
    python benchmarks/onnx_compare.py --torch-models           # light graphs only
    python benchmarks/onnx_compare.py --light --torch-models resnet   # one exported model
    python benchmarks/onnx_compare.py --torch-models resnet vgg --onnx2coreml-python PATH
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ("ours", "onnx2coreml")
DEFAULT_VENV_PYTHON = Path("/tmp/o2c/bin/python")
# models/ files that torch.onnx.export (TorchScript exporter) handles; bert and vit use
# torch's fused transformer-encoder kernel and llama rms_norm, which it cannot export.
TORCH_MODELS = (
    "resnet",
    "mobilenetv2",
    "shufflenet",
    "vgg",
    "deeplab",
    "unet",
    "mobilevit",
    "swin",
    "text_rnn",
)
CHILD_TIMEOUT_S = 1800


def _peak_mib() -> float:
    """This process's peak RSS in MiB.

    Linux's ``ru_maxrss`` carries the parent's peak across fork + exec, so a child of a
    large parent would report the parent's figure; ``VmHWM`` belongs to the process's own
    address space, which exec replaces.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _error_line(exc: BaseException) -> str:
    """``Type: first line`` of the message, with the next line if the first ends in ':'."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if text.endswith(":") and len(lines) > 1:
        text = f"{text} {lines[1]}"
    return f"{type(exc).__name__}: {text}"[:160]


def _converter(tool: str):
    """Import ``tool`` and return ``convert(onnx_path, out_path)``; runs in the child."""
    import warnings

    warnings.filterwarnings("ignore")
    if tool == "ours":
        import coreml_compile

        def convert(path: Path, out: Path) -> None:
            coreml_compile.compile(str(path)).save(out)

    else:
        import onnx2coreml

        def convert(path: Path, out: Path) -> None:
            model = onnx2coreml.convert(
                str(path), format="mlpackage", minimum_deployment_target="iOS16"
            )
            model.save(str(out))

    return convert


def measure(tool: str, path: Path, out: Path, warmup: Path) -> dict:
    """Runs in the child: start up (import + tiny conversion), then time ``path``."""
    start = time.perf_counter()
    convert = _converter(tool)
    warm_out = out.with_name(out.name + ".warmup.mlpackage")
    convert(warmup, warm_out)
    shutil.rmtree(warm_out, ignore_errors=True)
    result: dict = {"startup_s": time.perf_counter() - start, "base_mib": _peak_mib()}
    start = time.perf_counter()
    try:
        convert(path, out)
    except Exception as exc:  # converters raise many types
        result["error"] = _error_line(exc)
    result["seconds"] = time.perf_counter() - start
    result["peak_mib"] = _peak_mib()
    return result


def _run_json(cmd: list[str], timeout: float = CHILD_TIMEOUT_S) -> dict:
    """Run a child that prints one JSON line last; a crash becomes ``{"crash": line}``."""
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore"}
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"crash": f"timed out after {timeout:.0f} s"}
    lines = run.stdout.strip().splitlines()
    if run.returncode != 0 or not lines:
        tail = (run.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"crash": tail[:200]}
    return json.loads(lines[-1])


def export_torch_models(names: list[str], workdir: Path) -> dict[str, dict]:
    """Runs in the child: ``torch.onnx.export`` each models/ file; path or error per name."""
    import warnings

    import torch

    sys.path.insert(0, str(ROOT / "models"))
    results: dict[str, dict] = {}
    for name in names:
        out = workdir / f"{name}.onnx"
        try:
            module = __import__(name)
            model, inputs = module.model().eval(), module.example_inputs()
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, inputs, str(out), dynamo=False)
            results[name] = {"path": str(out)}
        except Exception as exc:  # an op the exporter does not know, among others
            results[name] = {"error": _error_line(exc)}
    return results


def write_warmup_graph(path: Path) -> None:
    """A 1x3x8x8 -> Conv 3x3 -> Relu graph (opset 13) that both converters handle."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.full((4, 3, 3, 3), 0.1, np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["y"]),
        ],
        "warmup",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [weight],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


def light_graphs() -> dict[str, Path]:
    import onnx

    folder = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
    return {p.stem.removeprefix("light_"): p for p in sorted(folder.glob("light_*.onnx"))}


def core_ml_ops(package: Path) -> int | None:
    """Non-const operations in the package's main function (same reader for both tools)."""
    from coreml_compile.runtime.package import read_program

    try:
        _, program = read_program(package)
    except Exception:  # a package this reader does not handle
        return None
    return sum(1 for op in program.functions["main"].operations if op.op_type != "const")


def _pythons(option: str | None) -> dict[str, str | None]:
    theirs = option or (str(DEFAULT_VENV_PYTHON) if DEFAULT_VENV_PYTHON.exists() else None)
    if theirs is not None:
        try:
            probe = subprocess.run(
                [theirs, "-c", "import onnx2coreml; print(onnx2coreml.__version__)"],
                capture_output=True,
                text=True,
            )
        except OSError:  # no such interpreter
            theirs = None
        if theirs is None or probe.returncode != 0:
            theirs = None
        else:
            print(f"onnx2coreml {probe.stdout.strip()} from {option or DEFAULT_VENV_PYTHON}")
    if theirs is None:
        print(
            "onnx2coreml is not available (see this file's docstring for the venv; "
            "--onnx2coreml-python PATH): showing coreml-compile only"
        )
    return {"ours": sys.executable, "onnx2coreml": theirs}


def _cell(r: dict | None, key: str, fmt: str) -> str:
    if r is None or "crash" in r or "error" in r or r.get(key) is None:
        return "–"
    return format(r[key], fmt)


def _status(r: dict | None) -> str:
    if r is None:
        return "not run"
    if "crash" in r:
        return f"crashed: {r['crash']}"
    if "error" in r:
        return f"fails: {r['error']}"
    return "yes"


def _ratio(ours: dict, theirs: dict | None, key: str) -> float | None:
    if theirs is None or any("crash" in r or "error" in r for r in (ours, theirs)):
        return None
    a, b = ours.get(key), theirs.get(key)
    return a / b if a is not None and b else None


def print_table(rows: dict[str, dict[str, dict | None]]) -> None:
    def pair(name: str, key: str, fmt: str) -> str:
        ours, theirs = rows[name]["ours"], rows[name]["onnx2coreml"]
        ratio = _ratio(ours, theirs, key)
        text = f"{_cell(ours, key, fmt)} / {_cell(theirs, key, fmt)}"
        return text + (f" ({ratio:.2f}×)" if ratio is not None else "")

    print(
        "\n| model | onnx2coreml converts | convert + save s (ours / o2c) "
        "| peak RSS MiB (ours / o2c) | added RSS MiB (ours / o2c) | Core ML ops (ours / o2c) |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        ours = r["ours"]
        if "crash" in ours or "error" in ours:
            print(f"| {name} | ours {_status(ours)} | | | | |")
            continue
        print(
            f"| {name} | {_status(r['onnx2coreml'])} | {pair(name, 'seconds', '.2f')} "
            f"| {pair(name, 'peak_mib', '.0f')} | {pair(name, 'added_mib', '.0f')} "
            f"| {pair(name, 'ops', 'd')} |"
        )


def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def print_summary(rows: dict[str, dict[str, dict | None]]) -> None:
    both = [name for name, r in rows.items() if _ratio(r["ours"], r["onnx2coreml"], "seconds")]
    counts = [
        f"{tool} {sum(1 for r in rows.values() if _status(r[tool]) == 'yes')}/{len(rows)}"
        for tool in TOOLS
        if any(r[tool] is not None for r in rows.values())
    ]
    print(f"\nconverted: {', '.join(counts)}")
    startups = {
        tool: [r[tool]["startup_s"] for r in rows.values() if r[tool] and "startup_s" in r[tool]]
        for tool in TOOLS
    }
    for tool, values in startups.items():
        if values:
            median = statistics.median(values)
            print(f"startup (imports + a 2-node graph), {tool}: median {median:.2f} s")
    if not both:
        return
    print(f"ours / onnx2coreml over the {len(both)} files both convert ({', '.join(both)}):")
    for key, label in (
        ("seconds", "convert + save time"),
        ("peak_mib", "peak RSS"),
        ("added_mib", "RSS added by the conversion"),
    ):
        ratios = [_ratio(rows[n]["ours"], rows[n]["onnx2coreml"], key) for n in both]
        ratios = [r for r in ratios if r]
        if ratios:
            print(
                f"  {label:<28} geometric mean {_geomean(ratios):.2f}×, "
                f"range {min(ratios):.2f}–{max(ratios):.2f}×"
            )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _, _, tool, path, out, warmup = sys.argv
        print(json.dumps(measure(tool, Path(path), Path(out), Path(warmup))))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--export":
        workdir, names = Path(sys.argv[2]), sys.argv[3:]
        print(json.dumps(export_torch_models(names, workdir)))
        return
    light = light_graphs()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--onnx2coreml-python",
        help=f"python of a venv with onnx2coreml (default {DEFAULT_VENV_PYTHON} if present)",
    )
    parser.add_argument(
        "--torch-models",
        nargs="*",
        default=list(TORCH_MODELS),
        help="models/ file stems to export with torch.onnx.export (none: light graphs only)",
    )
    parser.add_argument(
        "--light",
        nargs="*",
        default=list(light),
        choices=list(light),
        help="light model-zoo graphs to compile (none: no light graphs)",
    )
    args = parser.parse_args()
    pythons = _pythons(args.onnx2coreml_python)
    workdir = Path(tempfile.mkdtemp(prefix="cc-onnx-compare-"))
    try:
        warmup = workdir / "warmup.onnx"
        write_warmup_graph(warmup)
        files = {name: light[name] for name in args.light}
        if args.torch_models:
            exported = _run_json(
                [sys.executable, __file__, "--export", str(workdir), *args.torch_models]
            )
            if "crash" in exported:
                print(f"torch.onnx.export crashed: {exported['crash']}")
                exported = {}
            for name, r in exported.items():
                if "error" in r:
                    print(f"{name}: torch.onnx.export fails: {r['error']}")
                else:
                    files[f"{name} (torch)"] = Path(r["path"])
        rows: dict[str, dict[str, dict | None]] = {}
        for name, path in files.items():
            rows[name] = {}
            for tool in TOOLS:
                python = pythons[tool]
                if python is None:
                    rows[name][tool] = None
                    continue
                out = workdir / f"{path.stem}-{tool}.mlpackage"
                r = _run_json([python, __file__, "--child", tool, str(path), str(out), str(warmup)])
                if "peak_mib" in r:
                    r["added_mib"] = r["peak_mib"] - r["base_mib"]
                if out.exists():
                    r["ops"] = core_ml_ops(out)
                    shutil.rmtree(out, ignore_errors=True)
                rows[name][tool] = r
            progress = [
                f"{tool} {_status(r)}" + (f" ({r['seconds']:.2f} s)" if _status(r) == "yes" else "")
                for tool, r in rows[name].items()
            ]
            print(f"{name}: {'; '.join(progress)}", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(rows)
    print_summary(rows)


if __name__ == "__main__":
    main()
