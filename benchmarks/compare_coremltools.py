"""Compile models/ with coreml-compile and with coremltools.convert, side by side, in one run.

For each model both tools start from the same torch.export program and end with a saved
package; each measurement runs in a fresh subprocess so peak RSS is its own. Prints
seconds, peak RSS (MiB), package size (MB) and Core ML op count, and our/coremltools ratios.
Then ResNet-50's package size and output cosine per compression mode, and the time of
the -O2 pipeline; the time to partition a 1,000-node graph; then the reference executor
against torch eager (ResNet-50, batch 1), the time to load a package, and the cost of
a fallback op in the middle of ResNet-18 (partitioned package vs plain, same backend).

    python benchmarks/compare_coremltools.py                 # resnet50 vgg16 mobilenetv2
    python benchmarks/compare_coremltools.py --models resnet50 --skip-runtime
    python benchmarks/compare_coremltools.py --runtime-only --repeats 50
"""

from __future__ import annotations

import argparse
import json
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
MODELS = {
    "resnet50": ("resnet.py", "resnet50"),
    "vgg16": ("vgg.py", "vgg16"),
    "mobilenetv2": ("mobilenetv2.py", "model"),
}


def _load(name: str):
    sys.path.insert(0, str(ROOT / "models"))
    file, factory = MODELS[name]
    module = __import__(file.removesuffix(".py"))
    return getattr(module, factory)(), module.example_inputs()


def _package_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _mil_ops(path: Path) -> int:
    from coreml_compile.runtime.package import read_program

    _, program = read_program(path)
    return sum(1 for op in program.functions["main"].operations if op.op_type != "const")


def measure(tool: str, name: str, out: Path) -> dict:
    """Runs in the child process: export, compile with ``tool``, save; report figures."""
    import torch

    from coreml_compile.compiler.mil import import_coremltools, quiet_coremltools

    ct = import_coremltools()
    model, inputs = _load(name)
    start = time.perf_counter()
    with torch.no_grad():
        ep = torch.export.export(model.eval(), inputs)
    export_s = time.perf_counter() - start
    start = time.perf_counter()
    if tool == "ours":
        import coreml_compile

        coreml_compile.compile(ep).save(out)
    else:
        with quiet_coremltools():
            mlmodel = ct.convert(
                ep.run_decompositions({}),
                convert_to="mlprogram",
                minimum_deployment_target=ct.target.iOS16,
            )
            mlmodel.save(str(out))
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "export_s": export_s,
        "seconds": seconds,
        "peak_rss_mb": peak_kb / 1024,
        "package_mb": _package_bytes(out) / 1e6,
        "ops": _mil_ops(out),
    }


def _child(tool: str, name: str, workdir: Path) -> dict:
    out = workdir / f"{name}-{tool}.mlpackage"
    cmd = [sys.executable, __file__, "--child", tool, name, str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"error": tail}
    return json.loads(result.stdout.strip().splitlines()[-1])


def compare(names: list[str]) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="cc-bench-"))
    try:
        print(
            f"{'model':<12} {'':<12} {'export s':>8} {'compile s':>9} "
            f"{'peak RSS MB':>11} {'package MB':>10} {'ops':>5}"
        )
        for name in names:
            rows = {tool: _child(tool, name, workdir) for tool in ("ours", "coremltools")}
            for tool, r in rows.items():
                if "error" in r:
                    print(f"{name:<12} {tool:<12} failed: {r['error']}")
                    continue
                print(
                    f"{name:<12} {tool:<12} {r['export_s']:>8.2f} {r['seconds']:>9.2f} "
                    f"{r['peak_rss_mb']:>11.0f} {r['package_mb']:>10.1f} {r['ops']:>5}"
                )
            ours, theirs = rows["ours"], rows["coremltools"]
            if "error" not in ours and "error" not in theirs:
                print(
                    f"{name:<12} {'ratio':<12} {'':>8} {ours['seconds'] / theirs['seconds']:>9.2f} "
                    f"{ours['peak_rss_mb'] / theirs['peak_rss_mb']:>11.2f} "
                    f"{ours['package_mb'] / theirs['package_mb']:>10.3f} "
                    f"{ours['ops'] / theirs['ops']:>5.2f}"
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def runtime(repeats: int = 20) -> None:
    """Reference executor vs torch eager on ResNet-50, batch 1.

    The three are timed in interleaved rounds (eager, fp32, fp16, eager, ...) so that the
    machine's drift (other load, clock changes) falls on all of them alike.
    """
    import torch

    import coreml_compile

    model, inputs = _load("resnet50")
    workdir = Path(tempfile.mkdtemp(prefix="cc-bench-"))
    try:
        runners = {}
        load_s = {}
        for precision in ("fp32", "fp16"):
            path = workdir / f"resnet50-{precision}.mlpackage"
            coreml_compile.compile(model, inputs, precision=precision).save(path)
            start = time.perf_counter()
            loaded = coreml_compile.load(path, backend="reference")
            load_s[precision] = time.perf_counter() - start
            runners[f"reference executor {precision}"] = loaded
        runners = {"torch eager fp32": model, **runners}
        times: dict[str, list[float]] = {name: [] for name in runners}
        with torch.no_grad():
            for fn in runners.values():
                fn(*inputs)  # warm-up
            for _ in range(repeats):
                for name, fn in runners.items():
                    start = time.perf_counter()
                    fn(*inputs)
                    times[name].append(time.perf_counter() - start)
        eager_s = statistics.median(times["torch eager fp32"])
        print(
            f"\nResNet-50, batch 1, median of {repeats} interleaved runs, "
            f"torch threads {torch.get_num_threads()}"
        )
        print(f"  {'torch eager fp32':<26}{eager_s * 1000:8.1f} ms")
        for precision in ("fp32", "fp16"):
            name = f"reference executor {precision}"
            run_s = statistics.median(times[name])
            print(
                f"  {name:<26}{run_s * 1000:8.1f} ms  ({run_s / eager_s:.2f}x eager)   "
                f"load {load_s[precision]:.2f} s"
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def compression(name: str = "resnet50") -> None:
    """Package size and output cosine (vs fp32 torch) per compression mode, and -O2 time."""
    import numpy as np
    import torch

    import coreml_compile
    from coreml_compile.compiler.frontends.torch_export import trace
    from coreml_compile.passes import pipeline, run_pipeline

    model, inputs = _load(name)
    with torch.no_grad():
        reference = model(*inputs).numpy().ravel().astype(np.float64)
    graph = trace(model, inputs)
    start = time.perf_counter()
    run_pipeline(graph, pipeline("O2"))
    o2_s = time.perf_counter() - start
    workdir = Path(tempfile.mkdtemp(prefix="cc-bench-"))
    modes = {
        "fp16": {},
        "int8": {"quantize": "int8"},
        "int8-per-channel": {"quantize": "int8-per-channel"},
        "palette4": {"quantize": "palette4"},
        "palette6": {"quantize": "palette6"},
        "prune 0.5": {"prune": "0.5"},
        "prune 2:4": {"prune": "2:4"},
        "prune 0.5 + palette4 (iOS18)": {
            "prune": "0.5",
            "quantize": "palette4",
            "minimum_deployment_target": "iOS18",
        },
    }
    try:
        print(f"\n{name}: compression (sizes relative to fp16; cosine against fp32 torch)")
        print(f"  -O2 pipeline: {o2_s * 1000:.0f} ms")
        base = None
        for label, options in modes.items():
            path = workdir / f"{label.replace(' ', '_').replace(':', '-')}.mlpackage"
            compiled = coreml_compile.compile(model, inputs, **options)
            compiled.save(path)
            size = _package_bytes(path)
            base = base or size
            out = compiled(*inputs).numpy().ravel().astype(np.float64)
            cosine = out @ reference / (np.linalg.norm(out) * np.linalg.norm(reference))
            print(f"  {label:<18}{size / 1e6:8.1f} MB  {size / base:6.3f}x   cosine {cosine:.4f}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def fallback_overhead(repeats: int = 20) -> None:
    """ResNet-18 with one fallback op in the middle vs without it, same backend.

    Both packages are saved, loaded and run on the reference executor (Core ML where it
    exists would be the backend on a Mac), in interleaved rounds.
    """
    import torch

    import coreml_compile

    sys.path.insert(0, str(ROOT / "models"))
    import resnet

    (x,) = resnet.example_inputs()
    workdir = Path(tempfile.mkdtemp(prefix="cc-bench-"))
    try:
        runners = {}
        for label, model in (
            ("ResNet-18", resnet.resnet18()),
            ("ResNet-18 + fallback op", resnet.resnet18_with_fallback()),
        ):
            path = workdir / f"{label.replace(' ', '_')}.mlpackage"
            coreml_compile.compile(model, (x,)).save(path)
            runners[label] = coreml_compile.load(path, backend="reference")
        partitions = len(runners["ResNet-18 + fallback op"].plan.steps)
        times: dict[str, list[float]] = {name: [] for name in runners}
        for fn in runners.values():
            fn(x)  # warm-up
        for _ in range(repeats):
            for name, fn in runners.items():
                start = time.perf_counter()
                fn(x)
                times[name].append(time.perf_counter() - start)
        base = statistics.median(times["ResNet-18"])
        hybrid = statistics.median(times["ResNet-18 + fallback op"])
        print(
            f"\nPartition overhead, ResNet-18 fp16 batch 1, reference backend, median of "
            f"{repeats} interleaved runs, torch threads {torch.get_num_threads()}"
        )
        print(f"  {'ResNet-18':<34}{base * 1000:8.1f} ms")
        print(
            f"  {f'+ one fallback op ({partitions} partitions)':<34}{hybrid * 1000:8.1f} ms  "
            f"({hybrid / base:.3f}x)"
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def partitioning(nodes: int = 1000) -> None:
    """Time partitioning a graph of ``nodes`` nodes with an unsupported op every 50."""
    import torch

    from coreml_compile.compiler.frontends.torch_export import trace
    from coreml_compile.compiler.partition import partition

    class Chain(torch.nn.Module):
        def forward(self, x):
            for i in range(nodes // 2):
                x = torch.relu(x) * 1.5 if i % 25 else torch.linalg.inv(x) + 1
            return x

    graph = trace(Chain(), (torch.eye(4) * 2,))
    partition(graph, 16)  # the first call also imports the op table's lowerings
    start = time.perf_counter()
    plan = partition(graph, 16)
    seconds = time.perf_counter() - start
    print(
        f"\npartitioning {len(graph.nodes)} nodes into {len(plan.partitions)} partitions: "
        f"{seconds * 1000:.0f} ms"
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _, _, tool, name, out = sys.argv
        os.environ.setdefault("TQDM_DISABLE", "1")
        print(json.dumps(measure(tool, name, Path(out))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--skip-runtime", action="store_true")
    parser.add_argument("--runtime-only", action="store_true")
    parser.add_argument("--skip-compression", action="store_true")
    parser.add_argument("--repeats", type=int, default=20, help="runs timed per executor")
    args = parser.parse_args()
    if not args.runtime_only:
        compare(args.models)
        if not args.skip_compression:
            compression()
        partitioning()
    if not args.skip_runtime:
        runtime(args.repeats)
        fallback_overhead(args.repeats)


if __name__ == "__main__":
    main()
