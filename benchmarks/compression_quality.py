"""Weight compression, ours against coremltools', on the same BN-calibrated model.

Both start from the same torch.export program of models/resnet.py's ResNet (batch-norm
statistics filled from data first: train mode, momentum=None, a few random batches,
then eval; random-init statistics make outputs meaningless). Ours: coreml_compile.compile
with --quantize MODE. coremltools: coremltools.convert to an fp32 (or fp16) ML Program,
then coremltools.optimize.coreml.linear_quantize_weights (int8 symmetric per channel, its
default) or palettize_weights (k-means, scikit-learn). Both packages are saved and run
by this project's reference executor on the same inputs; prints each one's output
cosine against fp32 torch and the compression time (ours: the pass; coremltools: the
optimize call), side by side with ratios.

    pip install scikit-learn     # coremltools' k-means needs it (benchmark only)
    python benchmarks/compression_quality.py                      # resnet50, fp32
    python benchmarks/compression_quality.py --model resnet18 --modes int8 palette4
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
MODES = ("int8", "int8-per-tensor", "palette4", "palette6")


def calibrated(name: str, batches: int = 4, batch: int = 8) -> torch.nn.Module:
    """The model with batch-norm statistics filled from random data (then eval)."""
    sys.path.insert(0, str(ROOT / "models"))
    import resnet

    model = getattr(resnet, name)()
    generator = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(batch, 3, 224, 224, generator=generator))
    return model.eval()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _theirs(ct, fp_model, mode: str):
    """coremltools' compressed model and the seconds its optimize call took."""
    import coremltools.optimize.coreml as cto

    if mode.startswith("int8"):
        granularity = "per_tensor" if mode == "int8-per-tensor" else "per_channel"
        config = cto.OptimizationConfig(
            global_config=cto.OpLinearQuantizerConfig(
                mode="linear_symmetric", granularity=granularity
            )
        )
        fn = cto.linear_quantize_weights
    else:
        config = cto.OptimizationConfig(
            global_config=cto.OpPalettizerConfig(mode="kmeans", nbits=int(mode[7:]))
        )
        fn = cto.palettize_weights
    start = time.perf_counter()
    compressed = fn(fp_model, config)
    return compressed, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50", help="a factory in models/resnet.py")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16"])
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")

    import coreml_compile
    from coreml_compile.compiler.mil import import_coremltools, quiet_coremltools

    ct = import_coremltools()
    model = calibrated(args.model)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model(x).numpy()
        ep = torch.export.export(model, (x,))
    workdir = Path(tempfile.mkdtemp(prefix="cc-compress-"))
    try:
        with quiet_coremltools():
            fp_model = ct.convert(
                ep.run_decompositions({}),
                convert_to="mlprogram",
                minimum_deployment_target=ct.target.iOS16,
                compute_precision=getattr(
                    ct.precision, "FLOAT32" if args.precision == "fp32" else "FLOAT16"
                ),
            )

        def run(mlmodel_or_compiled, label: str) -> float:
            path = workdir / f"{label}.mlpackage"
            with quiet_coremltools():
                mlmodel_or_compiled.save(str(path))
            loaded = coreml_compile.load(path, backend="reference")
            (out,) = loaded.predict({loaded.input_names[0]: x.numpy()}).values()
            return cosine(out, reference)

        print(
            f"{args.model}, BN-calibrated, {args.precision}, batch 2: output cosine against "
            "fp32 torch; compression seconds (ours: the pass; coremltools: the optimize call)"
        )
        print(
            f"  {'mode':<16}{'ours cos':>10}{'ct cos':>10}{'ours s':>9}{'ct s':>9}"
            f"{'time ratio':>12}"
        )
        print(f"  {'uncompressed':<16}{run(fp_model, 'ct-fp'):>20.6f}")
        for mode in args.modes:
            compiled = coreml_compile.compile(ep, precision=args.precision, quantize=mode)
            ours_s = sum(
                r.seconds
                for r in compiled.report.passes
                if r.name in ("quantize_weights", "palettize_weights")
            )
            ours = run(compiled, f"ours-{mode}")
            with quiet_coremltools():
                compressed, theirs_s = _theirs(ct, fp_model, mode)
            theirs = run(compressed, f"ct-{mode}")
            print(
                f"  {mode:<16}{ours:>10.6f}{theirs:>10.6f}{ours_s:>9.2f}{theirs_s:>9.2f}"
                f"{ours_s / theirs_s:>11.2f}x   {'ours >= ct' if ours >= theirs else 'ct better'}"
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
