"""``coreml-compile``: compile a model file into a Core ML package.

Only click is imported at start-up; torch and coremltools load when a command runs,
so ``--help`` answers at once.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

# The choices below come from the tables the API checks against, so they cannot drift.
from coreml_compile.compiler import targets
from coreml_compile.compiler.mil import PRECISIONS
from coreml_compile.compiler.strategy import FALLBACK_DEVICES, STRATEGIES
from coreml_compile.passes import PIPELINES
from coreml_compile.passes.quantize_weights import MODES as QUANTIZE_MODES
from coreml_compile.runtime.devices import BACKENDS, COMPUTE_UNITS, TORCH_DEVICES
from coreml_compile.version import __version__


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} GB"


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """One clear line and a non-zero exit for any failure; the traceback only with --debug."""

    @functools.wraps(fn)
    def wrapper(*args: Any, debug: bool = False, **kwargs: Any) -> Any:
        from coreml_compile.errors import CoreMLCompileError

        try:
            return fn(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("error: interrupted; nothing was written", err=True)
            sys.exit(130)
        except CoreMLCompileError as exc:
            if debug:
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except Exception as exc:
            if debug:
                raise
            from coreml_compile.errors import with_type

            click.echo(
                f"error: internal error: {with_type(exc)} "
                "(rerun with --debug for the traceback, and please report it)",
                err=True,
            )
            sys.exit(2)

    return click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")(wrapper)


class DefaultCommandGroup(click.Group):
    """A group whose first argument may be a model file: it then runs ``compile``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["compile", *args]
        return super().parse_args(ctx, args)


@click.group(
    cls=DefaultCommandGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="""\b
Examples:
  coreml-compile models/resnet.py -o resnet.mlpackage
  coreml-compile models/vgg.py:vgg11_bn -o vgg11bn.mlpackage --precision fp32
  coreml-compile my_model.py --input-shape 1,3,256,256 -o mine.mlpackage --target iOS17
  coreml-compile my_model.py --input-shape 1,3,64..512,64..512 -o any_size.mlpackage
  coreml-compile models/resnet.py -o small.mlpackage --quantize palette4
  coreml-compile models/resnet.py:resnet18_with_fallback -o r18f.mlpackage  # partitioned
  coreml-compile verify resnet.mlpackage --against models/resnet.py
  coreml-compile model.onnx -o model.mlpackage  # an ONNX model (--input-shape fills symbolic dims)

A model file is a Python file: FILE[:NAME] calls NAME (default: model) to get an
nn.Module, and example_inputs() for the inputs to trace with (or give --input-shape).
Ops Core ML cannot run are run on torch from the same package; the compile summary
says which and why (--no-fallback makes them an error instead).""",
)
@click.version_option(__version__, prog_name="coreml-compile")
def cli() -> None:
    """Compile PyTorch models into Core ML packages (.mlpackage).

    Run `coreml-compile COMMAND --help` for a command's options; a model file
    as the first argument runs `compile`.
    """


@cli.command("compile")
@click.argument("model_spec", metavar="FILE[:NAME]")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    metavar="PATH",
    help="Package to write (must end in .mlpackage). Written beside, then renamed: "
    "a failed compile leaves nothing behind.",
)
@click.option(
    "--input-shape",
    "input_shapes",
    multiple=True,
    metavar="D0,D1,...",
    help="Trace with a random float input of this shape instead of the file's "
    "example_inputs(). Repeat once per input, in forward() order; the package's "
    "inputs are named after forward()'s parameters. A fixed shape: 1,3,224,224. "
    "LO..HI lets an axis take any size in that range (an upper bound is required): "
    "1,3,64..512,64..512. Whole shapes separated by / make the package take exactly "
    "those: 1,3,224,224/1,3,320,320.",
)
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="fp16",
    show_default=True,
    help="Compute precision inside the model; inputs and outputs stay fp32.",
)
@click.option(
    "--target",
    type=click.Choice(list(targets.GENERATIONS), case_sensitive=False),
    default=None,
    help="Minimum deployment target: the oldest OS the package must run on. Default: the "
    f"model file's MINIMUM_TARGET if it names one (a model with state needs iOS18), else "
    f"{targets.DEFAULT}.",
)
@click.option(
    "-O",
    "level",
    type=click.Choice([level[1:] for level in PIPELINES]),
    default="2",
    show_default=True,
    help="Optimisation level: 0 none, 1 clean-up (constant folding, dead code, no-ops, "
    "transposes, CSE), 2 clean-up and fusion (batch norm, bias, pad, activations).",
)
@click.option(
    "--skip-pass",
    "skip_passes",
    multiple=True,
    metavar="NAME",
    help="Leave a pass out of the pipeline (repeatable); --list-passes names them.",
)
@click.option(
    "--quantize",
    type=click.Choice(
        list(QUANTIZE_MODES)
        + [f"palette{b}" for b in (1, 2, 4, 6, 8)]
        + [f"palette{b}-grouped" for b in (1, 2, 4, 6, 8)]
    ),
    help="Compress weights: int8 (one scale per output channel; int8-per-tensor: one per "
    "tensor; int8-per-block: per block of 32 input channels, iOS18; int4-per-block: 4-bit, "
    "iOS18; -asym adds a zero point) or n-bit k-means palettes (-grouped: one per 16 "
    "output channels, iOS18). "
    "Needs --target iOS16 or later.",
)
@click.option(
    "--prune",
    metavar="SPARSITY|N:M",
    help="Zero the smallest weights: a fraction (0.5) or n of every m (2:4); stored sparse.",
)
@click.option(
    "--compress-min-size",
    type=int,
    default=2048,
    show_default=True,
    help="Only compress weights with at least this many elements.",
)
@click.option(
    "--compress-ops",
    metavar="OP,OP",
    help="Only compress the weights of these ops (default: conv,conv_transpose,linear,"
    "matmul,embedding).",
)
@click.option(
    "--compress-skip-first-last",
    is_flag=True,
    help="Leave the first and last layer's weights uncompressed (often the most sensitive).",
)
@click.option(
    "--ane-layout",
    is_flag=True,
    help="Run linear layers on (batch, sequence, channels) data as 1x1 convolutions in the "
    "Neural Engine's (B, C, 1, S) layout; inputs and outputs keep their layout.",
)
@click.option(
    "--list-passes",
    is_flag=True,
    is_eager=True,
    expose_value=False,
    callback=lambda ctx, _param, value: _list_passes(ctx) if value else None,
    help="Print each -O level's pipeline and exit.",
)
@click.option(
    "--no-fallback",
    is_flag=True,
    help="Fail, listing every op Core ML cannot run, instead of running those ops on torch.",
)
@click.option(
    "--fallback",
    type=click.Choice(FALLBACK_DEVICES),
    default="auto",
    show_default=True,
    help="Torch device for ops Core ML cannot run; auto takes a GPU (mps, cuda) for "
    "partitions big enough to be worth the copy, else the CPU. run/verify can override.",
)
@click.option(
    "--strategy",
    type=click.Choice(STRATEGIES),
    default="auto",
    show_default=True,
    help="battery keeps all supported work on Core ML (Neural Engine) and fallbacks on "
    "the CPU; auto also moves small Core ML partitions between fallbacks to torch.",
)
@click.option(
    "--min-coreml-nodes",
    type=click.IntRange(min=1),
    help="Smallest Core ML partition worth its hand-offs, unless it holds a convolution or "
    "a large matmul.  [default: 3]",
)
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Also print the pass table, the partitions and where each runs on this machine.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the whole compile report as JSON on stdout instead of the summary.",
)
@handle_errors
def compile_command(
    model_spec: str,
    output: str,
    input_shapes: tuple[str, ...],
    precision: str,
    target: str | None,
    level: str,
    skip_passes: tuple[str, ...],
    quantize: str | None,
    prune: str | None,
    compress_min_size: int,
    compress_skip_first_last: bool,
    compress_ops: str | None,
    ane_layout: bool,
    no_fallback: bool,
    fallback: str,
    strategy: str,
    min_coreml_nodes: int | None,
    quiet: bool,
    verbose: bool,
    as_json: bool,
) -> None:
    """Compile the model in FILE[:NAME] into a Core ML package.

    Prints a short summary (package, ops, time, and a line if some ops run outside
    Core ML); -v adds the details, --json gives everything machine-readably.
    """
    from coreml_compile.artifact import check_writable, package_size

    start = time.perf_counter()
    out_path = check_writable(output)
    progress = _Progress(enabled=not quiet)
    progress(f"loading {model_spec}")

    from coreml_compile.model_file import compile_source

    source = compile_source(model_spec, list(input_shapes) or None)

    import coreml_compile

    compiled = coreml_compile.compile(
        source.model,
        source.example_inputs,
        dynamic_shapes=source.dynamic_shapes,
        enumerated_shapes=source.enumerated_shapes,
        precision=precision,
        minimum_deployment_target=target or source.minimum_target or targets.DEFAULT,
        optimize=int(level),
        skip_passes=skip_passes,
        quantize=quantize,
        prune=prune,
        compress_min_elements=compress_min_size,
        compress_skip_first_last=compress_skip_first_last,
        compress_op_types=compress_ops.split(",") if compress_ops else None,
        ane_layout=ane_layout,
        allow_fallback=not no_fallback,
        strategy=strategy,
        fallback=fallback,
        min_coreml_nodes=min_coreml_nodes,
        progress=lambda stage: progress(f"compiling {model_spec}: {stage}"),
    )
    progress(f"compiling {model_spec}: save")
    compiled.save(out_path)
    elapsed = time.perf_counter() - start
    progress.done()
    report = compiled.report
    size = package_size(out_path)
    if as_json:
        doc = {
            "output": str(out_path),
            "package_bytes": size,
            "precision": precision,
            "target": compiled.target,
            "seconds": elapsed,
            **report.to_dict(),
            "placements": [str(p) for p in compiled.placements()],
        }
        click.echo(json.dumps(doc, indent=2))
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    if compiled.plan is not None and not quiet:
        click.echo(f"warning: {_partition_warning(compiled.plan)}", err=True)
    if quiet or as_json:
        return
    stages = ", ".join(f"{k} {v:.2f}s" for k, v in report.stages.items())
    top = ", ".join(f"{k} {v}" for k, v in list(report.mil_ops.items())[:6])
    if report.passes and verbose:
        from coreml_compile.passes import format_records

        click.echo(f"passes (-O{level}):\n{format_records(report.passes)}")
    click.echo(
        f"wrote {out_path}  ({_human_bytes(size)}, {precision}, {compiled.target})\n"
        f"  ops:  {sum(report.ir_ops.values())} IR nodes -> {report.mil_op_count} Core ML ops "
        f"({top})\n"
        f"  time: {elapsed:.2f}s total ({stages})"
    )
    if compiled.plan is not None and verbose:
        _print_partitions(compiled)


class _Progress:
    """One status line on stderr, rewritten in place; only when stderr is a terminal."""

    def __init__(self, enabled: bool = True):
        self.stream = sys.stderr
        self.enabled = enabled and self.stream.isatty()
        self.width = 0

    def __call__(self, message: str) -> None:
        if not self.enabled:
            return
        line = message[:100]
        self.stream.write("\r" + line.ljust(self.width))
        self.stream.flush()
        self.width = len(line)

    def done(self) -> None:
        if self.enabled and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0


def _partition_warning(plan: Any) -> str:
    """One line: how much runs outside Core ML, and what that means for the package."""
    total = sum(s.node_count for s in plan.steps)
    ops: dict[str, int] = {}
    for step in plan.steps:
        if step.kind != "coreml":
            for op, n in step.ops.items():
                ops[op] = ops.get(op, 0) + n
    on_torch = sum(ops.values())
    names = ", ".join(list(ops)[:3]) + (f" and {len(ops) - 3} more" if len(ops) > 3 else "")
    verb = "runs" if on_torch == 1 else "run"
    return (
        f"{on_torch} of {total} ops {verb} on torch outside Core ML ({names}), so this "
        "package needs coreml-compile's runtime (coreml_compile.load, with torch) to run; "
        "--no-fallback lists what blocks a plain Core ML model (-v for details)"
    )


def _print_partitions(compiled: Any) -> None:
    """What runs where and why: partitions, fallback reasons, this machine's placements."""
    report = compiled.report
    click.echo(
        f"  partitions: {len(report.partitions)}, {report.coreml_share:.1%} of IR nodes on Core ML"
    )
    for line in report.partitions:
        click.echo(f"    {line}")
    by_reason: dict[str, list[str]] = {}
    for node, reason in report.fallback_reasons.items():
        by_reason.setdefault(reason, []).append(node)
    if by_reason:
        click.echo("  fell back to torch:")
    for reason, nodes in by_reason.items():
        shown = ", ".join(nodes[:4]) + (f" and {len(nodes) - 4} more" if len(nodes) > 4 else "")
        click.echo(f"    {reason}  ({shown})")
    click.echo("  on this machine:")
    for placement in compiled.placements():
        click.echo(f"    {placement}")


def _list_passes(ctx: click.Context) -> None:
    from coreml_compile.passes import ANE_LAYOUT, COMPRESSION, LEGALIZE, PIPELINES, all_passes

    click.echo(f"every level first runs (Core ML needs them): {' '.join(LEGALIZE)}")
    for level, names in PIPELINES.items():
        click.echo(f"-{level}: {' '.join(names) or '(no passes)'}")
    click.echo(f"--ane-layout adds: {' '.join(ANE_LAYOUT)}")
    click.echo(f"--prune/--quantize add: {' '.join(COMPRESSION)} (as asked)")
    click.echo("passes:")
    for name, fn in sorted(all_passes().items()):
        doc = sys.modules[fn.__module__].__doc__ or ""
        click.echo(f"  {name:<34}{doc.strip().splitlines()[0] if doc else ''}")
    ctx.exit()


def _read_inputs(pairs: tuple[str, ...], specs: dict[str, Any] | None = None) -> dict[str, Any]:
    """--input values as {name: array}: NAME=file.npy, NAME=file.npz (its array NAME, or
    its only array) or a bare file.npz (every array, by name). Arrays must hold numbers;
    big-endian ones are made native, and float64 ones fed to a float input become float32
    (with a note), as Core ML has no float64."""
    import numpy as np

    from coreml_compile.errors import InputSpecError

    feeds: dict[str, Any] = {}
    for pair in pairs:
        name, sep, file = pair.partition("=")
        if not sep and pair.endswith(".npz"):
            name, file = "", pair
        elif not sep or not name or not file:
            raise InputSpecError(
                f"malformed --input {pair!r}: expected NAME=file.npy, NAME=file.npz or file.npz"
            )
        loaded = _load_array_file(name or file, file)
        if isinstance(loaded, dict):
            if not name:
                feeds.update(loaded)
            elif name in loaded or len(loaded) == 1:
                feeds[name] = loaded.get(name, next(iter(loaded.values()), None))
            else:
                raise InputSpecError(
                    f"--input {name}: {file} holds no array named {name} "
                    f"(it holds {', '.join(loaded) or 'none'})"
                )
        else:
            feeds[name] = loaded
    for name, array in feeds.items():
        if array.dtype.kind not in "biuf":
            kind = {"U": "strings", "S": "bytes", "O": "Python objects"}.get(
                array.dtype.kind, "no numbers"
            )
            raise InputSpecError(
                f"--input {name}: the array holds {kind} ({array.dtype}); inputs must be numbers"
            )
        if not array.dtype.isnative:
            array = array.astype(array.dtype.newbyteorder("="))
        spec = (specs or {}).get(name)
        if array.dtype == np.float64 and spec is not None and spec[1]:
            click.echo(f"note: --input {name}: float64 data converted to float32", err=True)
            array = array.astype(np.float32)
        feeds[name] = array
    return feeds


def _load_array_file(label: str, file: str) -> Any:
    """An .npy file's array, or an .npz file's arrays as a dict; never unpickles."""
    import numpy as np

    from coreml_compile.errors import InputSpecError

    try:
        loaded = np.load(file, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                return {key: loaded[key] for key in loaded.files}
        return loaded
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise InputSpecError(
                f"--input {label}: {file} holds Python objects (dtype object), not numbers; "
                "inputs must be numeric arrays"
            ) from None
        raise InputSpecError(f"cannot read --input {label}: {file}: {exc}") from exc
    except OSError as exc:
        raise InputSpecError(f"cannot read --input {label}: {file}: {exc}") from exc


def _random_inputs(compiled: Any, given: dict[str, Any], seed: int) -> dict[str, Any]:
    """The given inputs, plus seeded random ones for the package inputs not given."""
    import numpy as np

    rng = np.random.default_rng(seed)
    feeds = dict(given)
    for name, (shape, is_float) in compiled.input_specs().items():
        if name in feeds:
            continue
        if is_float:
            feeds[name] = rng.standard_normal(shape).astype(np.float32)
        else:
            feeds[name] = rng.integers(0, 2, size=shape).astype(np.int32)
    return feeds


def input_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--input NAME=FILE.npy (repeatable) and --seed, shared by run and verify."""
    fn = click.option("--seed", default=0, show_default=True, help="Seed for random inputs.")(fn)
    return click.option(
        "--input",
        "inputs",
        multiple=True,
        metavar="NAME=FILE.npy",
        help="An input array; repeat per input. NAME=FILE.npz takes the array NAME from "
        "an .npz (or its only array); a bare FILE.npz feeds all its arrays by name. "
        "Inputs are named after forward()'s parameters; those not given are seeded random.",
    )(fn)


def backend_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--backend, --compute-units, --device, --fallback, --strategy: shared by run and verify."""
    fn = click.option(
        "--strategy",
        type=click.Choice(STRATEGIES),
        help="Partitioned packages: override the compile's strategy (battery: Core ML on "
        "CPU and Neural Engine, fallbacks on the CPU).",
    )(fn)
    fn = click.option(
        "--fallback",
        type=click.Choice(FALLBACK_DEVICES),
        help="Partitioned packages: torch device for the fallback partitions "
        "(default: as compiled).",
    )(fn)
    fn = click.option(
        "--device",
        type=click.Choice(TORCH_DEVICES),
        help="Torch device for the reference backend.  [default: cpu]",
    )(fn)
    fn = click.option(
        "--compute-units",
        type=click.Choice(COMPUTE_UNITS, case_sensitive=False),
        help="Core ML compute units (coreml backend only).  [default: all]",
    )(fn)
    return click.option(
        "--backend",
        type=click.Choice(BACKENDS),
        help="Run on Core ML (macOS) or the reference executor (torch kernels, anywhere). "
        "Default: Core ML where available.",
    )(fn)


@cli.command("devices")
@handle_errors
def devices_command() -> None:
    """List what this machine can run packages on, best first."""
    from coreml_compile.runtime.devices import coreml_available, devices

    for device in devices():
        click.echo(str(device))
    ok, why = coreml_available()
    if not ok:
        click.echo(f"(no Core ML: {why})")


@cli.command("run")
@click.argument("package", type=click.Path())
@input_options
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="Write the outputs to this .npz file.",
)
@click.option(
    "-v", "--verbose", is_flag=True, help="Also print where each partition runs, and why."
)
@backend_options
@handle_errors
def run_command(
    package: str,
    inputs: tuple[str, ...],
    output: Path | None,
    seed: int,
    verbose: bool,
    **where: str | None,
) -> None:
    """Run PACKAGE (any ML Program .mlpackage) and print or save its outputs."""
    import numpy as np

    import coreml_compile

    compiled = coreml_compile.load(package, **where)
    feeds = _random_inputs(compiled, _read_inputs(inputs, compiled.input_specs()), seed)
    # A model with state (a KV cache) runs once from a fresh, zero state.
    state = {"state": compiled.make_state()} if compiled.state_names else {}
    start = time.perf_counter()
    outputs = compiled.predict(feeds, **state)
    elapsed = time.perf_counter() - start
    if output:
        np.savez(output, **outputs)
        click.echo(f"wrote {output} ({', '.join(outputs)})")
    for name, value in outputs.items():
        stats = ""
        if value.size and np.issubdtype(value.dtype, np.number):
            stats = f" min {value.min():.4g} max {value.max():.4g} mean {value.mean():.4g}"
        click.echo(f"  {name}: {value.dtype}{list(value.shape)}{stats}")
    click.echo(f"  ran in {elapsed * 1000:.1f} ms on {compiled.backend}")
    if verbose:
        for placement in compiled.placements():
            click.echo(f"    {placement}")


# Agreement needed per package precision: max abs error relative to the output's scale,
# and cosine similarity.
VERIFY_TOLERANCE = {"fp32": (1e-4, 0.99999), "fp16": (2e-2, 0.999)}


@cli.command("verify")
@click.argument("package", type=click.Path())
@click.option(
    "--against",
    "model_spec",
    required=True,
    metavar="FILE[:NAME]",
    help="The model file the package was compiled from.",
)
@input_options
@click.option(
    "--tolerance",
    type=float,
    help="Max abs error allowed, relative to max(1, |expected|max). "
    "Default: 1e-4 for fp32 packages, 2e-2 for fp16.",
)
@backend_options
@handle_errors
def verify_command(
    package: str,
    model_spec: str,
    inputs: tuple[str, ...],
    seed: int,
    tolerance: float | None,
    **where: str | None,
) -> None:
    """Run PACKAGE and the source model on the same inputs and compare their outputs.

    Exits with status 1 if any output differs beyond the tolerance, and 3 if the
    package cannot be checked against the file (its model is not seeded).
    """
    import numpy as np
    import torch

    import coreml_compile
    from coreml_compile.errors import CoreMLCompileError
    from coreml_compile.model_file import load_model

    compiled = coreml_compile.load(package, **where)
    # Built twice: a model file that builds a different model each time (unseeded random
    # weights) cannot be verified, and must not be reported as a mismatch.
    model, _module = load_model(model_spec)
    again, _module = load_model(model_spec)
    try:
        _check_same_model(model_spec, model, again)
    except CoreMLCompileError as exc:
        # Not a mismatch: a script must be able to tell "differs" from "cannot tell".
        click.echo(f"error: {exc}", err=True)
        sys.exit(3)
    feeds = _random_inputs(compiled, _read_inputs(inputs, compiled.input_specs()), seed)
    # Both start from zero state: the fresh model's buffers and a fresh package state.
    state = {"state": compiled.make_state()} if compiled.state_names else {}
    got = compiled.predict(feeds, **state)
    args = [torch.from_numpy(feeds[n]) for n in compiled.input_names]
    with torch.no_grad():
        expected = model.eval()(*args)
        repeat = again.eval()(*args)
    flat = torch.utils._pytree.tree_leaves(expected)
    for a, b in zip(flat, torch.utils._pytree.tree_leaves(repeat), strict=False):
        if isinstance(a, torch.Tensor) and not torch.equal(a, b):
            raise CoreMLCompileError(
                f"{model_spec} gives different outputs for the same inputs from one run to "
                "the next (random ops in forward()?), so it cannot be verified against"
            )
    if len(flat) != len(got):
        raise click.ClickException(
            f"the package has {len(got)} output(s) but the model returns {len(flat)}"
        )
    precision = compiled.precision if compiled.precision in VERIFY_TOLERANCE else "fp16"
    bound, min_cosine = VERIFY_TOLERANCE[precision]
    if tolerance is not None:
        bound = tolerance
    failed: list[str] = []
    for (name, actual), ref in zip(got.items(), flat, strict=True):
        ref = ref.numpy().astype(np.float64)
        act = actual.astype(np.float64)
        if act.shape != ref.shape:
            failed.append(name)
            click.echo(f"  {name}: shape {list(act.shape)} != model's {list(ref.shape)}")
            continue
        err = np.abs(act - ref)
        scale = max(1.0, float(np.abs(ref).max()) if ref.size else 1.0)
        rel = float((err / np.maximum(np.abs(ref), 1e-6)).max()) if ref.size else 0.0
        denom = np.linalg.norm(act) * np.linalg.norm(ref)
        cosine = float(np.dot(act.ravel(), ref.ravel()) / denom) if denom else 1.0
        ok = float(err.max(initial=0.0)) <= bound * scale and cosine >= min_cosine
        if not ok:
            failed.append(name)
        click.echo(
            f"  {name}: max abs {err.max(initial=0.0):.3g}  max rel {rel:.3g}  "
            f"cosine {cosine:.6f}  {'ok' if ok else 'FAIL'}"
        )
    if failed:
        what = (
            f"output {failed[0]} differs"
            if len(failed) == 1
            else (f"outputs {', '.join(failed)} differ")
        )
        click.echo(
            f"error: {what} from the model beyond tolerance "
            f"({bound:g} x scale, cosine >= {min_cosine}; {precision})",
            err=True,
        )
        sys.exit(1)
    click.echo(f"verified: {len(got)} output(s) agree ({precision} tolerance, {compiled.backend})")


def _check_same_model(model_spec: str, model: Any, again: Any) -> None:
    """ModelFileError unless two builds of the model file have the same weights."""
    from coreml_compile.errors import ModelFileError
    from coreml_compile.model_file import split_spec

    first, second = model.state_dict(), again.state_dict()
    same = first.keys() == second.keys() and all(
        first[k].shape == second[k].shape and bool((first[k] == second[k]).all()) for k in first
    )
    if not same:
        path, name = split_spec(model_spec)
        raise ModelFileError(
            f"{model_spec} builds a model with different weights each time it runs (random "
            "and not seeded), so the package cannot be checked against it: seed it, e.g. "
            f"torch.manual_seed(0) at the start of {name}() in {path}, then compile again"
        )


def main() -> None:
    cli(prog_name="coreml-compile")


if __name__ == "__main__":
    main()
