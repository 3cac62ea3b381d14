"""What dynamic shapes cost at compile time, beside coremltools, in one run.

For each model, compiles once with static shapes and once with dynamic ones (best of
``--repeat`` warm runs each) and prints the ratio dynamic / static, with the time per
stage; for ResNet-18 it also times coremltools converting the same model (traced with
torch.jit) with a fixed shape and with ``RangeDim`` height and width, so the two ratios
sit side by side.

    python benchmarks/dynamic_shapes.py                       # resnet18, bert, llama, llama_kv
    python benchmarks/dynamic_shapes.py --models resnet18 --repeat 3

Target (issue 12): a dynamic compile within 1.2x of the static one. The second ratio
leaves out torch.export, whose own time is about 2.4x with dynamic shapes.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "models"))

import torch  # noqa: E402
from torch.export import Dim  # noqa: E402

import coreml_compile  # noqa: E402


def _cases() -> dict:
    import bert
    import llama
    import llama_kv
    import resnet

    return {
        "resnet18": (
            resnet.resnet18,
            lambda: resnet.example_inputs(),
            lambda: ({2: Dim("h", min=64, max=512), 3: Dim("w", min=64, max=512)},),
            {},
        ),
        "bert": (
            bert.model,
            bert.example_inputs,
            lambda: (lambda s: ({1: s}, {1: s}))(Dim("seq", min=2, max=bert.MAX_POSITIONS)),
            {},
        ),
        "llama": (
            llama.model,
            llama.example_inputs,
            lambda: ({1: Dim("seq", min=2, max=llama.MAX_SEQUENCE)},),
            {},
        ),
        # Its caches make a static compile a different model too: both keep states.
        "llama_kv": (
            llama_kv.model,
            llama_kv.example_inputs,
            llama_kv.dynamic_shapes,
            {"minimum_deployment_target": "iOS18"},
        ),
    }


def _best(fn, repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def _best_after_export(fn, repeat: int) -> tuple[float, float, object]:
    """Best wall time and best time after torch.export (each over ``repeat`` runs)."""
    best, after, result = float("inf"), float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
        stages = result.report.stages
        after = min(after, sum(stages.values()) - stages.get("export", 0.0))
    return best, after, result


def _stages(compiled) -> str:
    return " ".join(f"{k} {v:.2f}" for k, v in compiled.report.stages.items())


def _coremltools_resnet(repeat: int) -> None:
    import coremltools as ct
    import resnet

    from coreml_compile.compiler.mil import quiet_coremltools

    model = resnet.resnet18().eval()
    (x,) = resnet.example_inputs()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, x)
    shapes = {
        "static": ct.Shape(list(x.shape)),
        "dynamic": ct.Shape([1, 3, ct.RangeDim(64, 512, 224), ct.RangeDim(64, 512, 224)]),
    }
    times = {}
    for name, shape in shapes.items():
        with quiet_coremltools():
            times[name], _ = _best(
                lambda shape=shape: ct.convert(
                    traced,
                    inputs=[ct.TensorType(name="x", shape=shape)],
                    convert_to="mlprogram",
                    skip_model_load=True,
                ),
                repeat,
            )
    ratio = times["dynamic"] / times["static"]
    print(
        f"{'coremltools resnet18':22s} static {times['static']:6.2f}s  "
        f"dynamic {times['dynamic']:6.2f}s  ratio {ratio:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cases = _cases()
    parser.add_argument("--models", nargs="+", default=list(cases), choices=list(cases))
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--skip-coremltools", action="store_true")
    args = parser.parse_args()
    for name in args.models:
        factory, inputs, dynamic, options = cases[name]
        model = factory().eval()
        compile_static = functools.partial(coreml_compile.compile, model, inputs(), **options)
        compile_dynamic = functools.partial(
            coreml_compile.compile, model, inputs(), dynamic_shapes=dynamic(), **options
        )
        compile_static()  # warm: imports and torch's caches
        static, static_after, a = _best_after_export(compile_static, args.repeat)
        dyn, dyn_after, b = _best_after_export(compile_dynamic, args.repeat)
        # torch.export alone (not ours) costs about 2.4x as much with dynamic shapes.
        ours = dyn_after / static_after
        print(
            f"{name:22s} static {static:6.2f}s  dynamic {dyn:6.2f}s  ratio {dyn / static:.2f}x"
            f"  (after torch.export: {ours:.2f}x)"
        )
        print(f"{'':22s}   static:  {_stages(a)}")
        print(f"{'':22s}   dynamic: {_stages(b)}")
    if not args.skip_coremltools and "resnet18" in args.models:
        _coremltools_resnet(args.repeat)


if __name__ == "__main__":
    main()
