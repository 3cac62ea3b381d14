"""Public architectures nobody here wrote: torchvision, Hugging Face and timm models, both tools.

Each model is built from its library's own definition with random weights (nothing is
downloaded; torchvision's batch-norm statistics are filled by two training-mode
passes so outputs are not ~0), exported once with torch.export, and then compiled by
this project (fp32, iOS16, fallback allowed, so the partitions say what did not lower)
and converted by ``coremltools.convert`` (fp32 ML Program, iOS16) from that program,
each model in its own process. Ours is then run by the reference executor and
compared with torch (cosine; a model whose torch output is all zeros, as torchvision's
zero-initialised ViT heads, shows "zero").

    pip install "torchvision==0.28.*" "transformers==4.57.*" "timm==1.0.*"  # as measured;
                                  # torchvision must be the build made for your torch
    python benchmarks/public_models.py                   # every model listed below
    python benchmarks/public_models.py --models resnet50 hf:llama
    python benchmarks/public_models.py --jsonl public.jsonl
    python benchmarks/public_models.py --dynamic          # token models, dynamic length

Prints one line per model (plain Core ML program or partitions, cosine, what fell back,
whether coremltools converts it and its first error line, seconds for each tool to
compile and save the package, not counting the export), then the counts. Hugging Face
models are small configurations (2 layers, hidden size 64) of each architecture, with a
16-token input (images 64x64); torchvision models take 224x224 (inception_v3 299, video
16x112x112 or 16x224x224); timm models their own size (at most 256) and are judged on
their features. None of these libraries is a dependency of the project or its tests.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHILD_TIMEOUT_S = 900

TORCHVISION = {
    "cls": "alexnet convnext_tiny densenet121 efficientnet_b0 efficientnet_v2_s googlenet "
    "inception_v3 maxvit_t mnasnet1_0 mobilenet_v2 mobilenet_v3_large regnet_y_400mf "
    "resnet50 resnext50_32x4d shufflenet_v2_x1_0 squeezenet1_1 swin_t swin_v2_t vgg16 "
    "vit_b_16 wide_resnet50_2",
    "seg": "fcn_resnet50 deeplabv3_mobilenet_v3_large lraspp_mobilenet_v3_large",
    "video": "r3d_18 r2plus1d_18 s3d mvit_v1_b mvit_v2_s swin3d_t",
    "flow": "raft_small",
}
# timm 1.0: one or two of each family, the feature extractor (forward_features), so
# heads timm initialises to zero (MLP-Mixer, ResMLP, Sequencer) do not hide the result.
TIMM = (
    "efficientformer_l1 levit_128 repvgg_a0 coat_lite_tiny coatnet_0_rw_224 convnextv2_atto "
    "eva02_tiny_patch14_224 fastvit_t8 ghostnet_100 hrnet_w18_small mobileone_s0 "
    "mobilevitv2_050 poolformer_s12 pvt_v2_b0 regnetz_b16 rexnet_100 tinynet_a "
    "xcit_nano_12_p16_224 edgenext_xx_small efficientvit_b0 nfnet_l0 dla34 dpn68 cspresnet50 "
    "res2net50_26w_4s resnest14d selecsls42b tresnet_m crossvit_tiny_240 "
    "deit_tiny_patch16_224 beit_base_patch16_224 cait_xxs24_224 gcvit_xxtiny "
    "maxvit_nano_rw_256 mixer_b16_224 resmlp_12_224 vit_small_patch16_224 sequencer2d_s "
    "inception_next_tiny hgnetv2_b0 tiny_vit_5m_224 vovnet39a lcnet_050"
)
HUGGING_FACE = (
    "bert distilbert roberta albert electra mobilebert deberta-v2 gpt2 gpt_neo gptj opt "
    "bloom falcon llama mistral qwen2 gemma phi t5 bart whisper clip_text_model vit deit "
    "beit dinov2 swin convnext resnet mobilevit segformer wav2vec2"
)
_IMAGES = {"vit", "deit", "beit", "dinov2", "swin", "convnext", "resnet", "mobilevit", "segformer"}
_SMALL = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "vocab_size": 1000,
}
_VISION = {k: v for k, v in _SMALL.items() if k != "vocab_size"}
_SEQ2SEQ = {
    "d_model": 64,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "encoder_attention_heads": 4,
    "decoder_attention_heads": 4,
    "encoder_ffn_dim": 128,
    "decoder_ffn_dim": 128,
    "vocab_size": 1000,
}
# Each architecture's own names for a small configuration.
_HF_CONFIGS = {
    "gpt2": {"n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 1000},
    "gptj": {"n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 1000, "rotary_dim": 8},
    "gpt_neo": {
        "hidden_size": 64,
        "num_layers": 2,
        "num_heads": 4,
        "vocab_size": 1000,
        "attention_types": [[["global", "local"], 1]],
        "max_position_embeddings": 128,
    },
    "t5": {
        "d_model": 64,
        "num_layers": 2,
        "num_heads": 4,
        "d_ff": 128,
        "d_kv": 16,
        "vocab_size": 1000,
    },
    "bart": _SEQ2SEQ,
    "whisper": {
        **_SEQ2SEQ,
        "num_mel_bins": 80,
        "max_source_positions": 50,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "decoder_start_token_id": 1,
    },
    "bloom": {"hidden_size": 64, "n_layer": 2, "n_head": 4, "vocab_size": 1000},
    "falcon": {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "vocab_size": 1000,
    },
    "opt": {**_SMALL, "ffn_dim": 128, "word_embed_proj_dim": 64},
    "distilbert": {"dim": 64, "n_layers": 2, "n_heads": 4, "hidden_dim": 128, "vocab_size": 1000},
    "vit": {**_VISION, "image_size": 64, "patch_size": 16},
    "deit": {**_VISION, "image_size": 64, "patch_size": 16},
    "beit": {**_VISION, "image_size": 64, "patch_size": 16},
    "dinov2": {**_VISION, "image_size": 64, "patch_size": 16},
    "swin": {
        "embed_dim": 32,
        "depths": [2, 2],
        "num_heads": [2, 4],
        "image_size": 64,
        "patch_size": 4,
        "window_size": 4,
    },
    "convnext": {"hidden_sizes": [16, 32], "depths": [1, 1], "num_stages": 2, "image_size": 64},
    "resnet": {"hidden_sizes": [16, 32], "depths": [1, 1], "embedding_size": 16},
    "mobilevit": {
        "image_size": 64,
        "hidden_sizes": [32, 48, 64],
        "neck_hidden_sizes": [8, 8, 16, 16, 24, 32, 64],
    },
    "segformer": {
        "hidden_sizes": [16, 32, 40, 64],
        "depths": [1, 1, 1, 1],
        "num_attention_heads": [1, 2, 2, 4],
        "decoder_hidden_size": 64,
    },
    "wav2vec2": {
        **_SMALL,
        "conv_dim": [32, 32],
        "conv_stride": [5, 2],
        "conv_kernel": [10, 3],
        "num_feat_extract_layers": 2,
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 4,
    },
    "mobilebert": {
        **_SMALL,
        "embedding_size": 32,
        "intra_bottleneck_size": 32,
        "true_hidden_size": 32,
    },
    "albert": {**_SMALL, "embedding_size": 32},
    "llama": {**_SMALL, "num_key_value_heads": 2},
    "mistral": {**_SMALL, "num_key_value_heads": 2},
    "qwen2": {**_SMALL, "num_key_value_heads": 2},
    "gemma": {**_SMALL, "num_key_value_heads": 2, "head_dim": 16},
}


def _torchvision_model(name: str, family: str):
    import torch
    from torchvision import models

    module = {
        "cls": models,
        "seg": models.segmentation,
        "video": models.video,
        "flow": models.optical_flow,
    }[family]
    options = {"weights": None}
    if name in ("googlenet", "inception_v3"):
        options |= {"aux_logits": False, "init_weights": False}
    if family == "seg":
        options["weights_backbone"] = None
    model = getattr(module, name)(**options)
    if family == "video":
        big = name.startswith(("mvit", "swin3d")) or name == "s3d"
        inputs = (torch.randn(1, 3, 16, *((224, 224) if big else (112, 112))),)
    elif family == "flow":
        inputs = (torch.randn(1, 3, 128, 128), torch.randn(1, 3, 128, 128))
    else:
        size = 299 if name == "inception_v3" else 224
        inputs = (torch.randn(1, 3, size, size),)
    _fill_batch_norm(model, inputs)
    return model, inputs


def _timm_model(name: str):
    import timm
    import torch

    model = timm.create_model(name, pretrained=False, num_classes=10)
    _, height, width = model.pretrained_cfg.get("input_size", (3, 224, 224))
    inputs = (torch.randn(1, 3, min(height, 256), min(width, 256)),)
    _fill_batch_norm(model, inputs)

    class Features(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner.forward_features(x)

    return Features(model).eval(), inputs


def _fill_batch_norm(model, inputs) -> None:
    """Batch-norm statistics from two training-mode passes (random init leaves them at
    0 and 1, which shrinks deep nets' outputs to nothing)."""
    import torch

    with torch.no_grad():
        model.train()
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.momentum = None  # a running average of the passes below
        with contextlib.suppress(ValueError):  # batch-1 batch norm over 1x1 (ASPP pooling)
            for _ in range(2):
                model(*inputs)
    model.eval()


def _hugging_face_model(kind: str):
    import torch
    import transformers
    from transformers import AutoConfig, AutoModel

    transformers.logging.set_verbosity_error()
    config = AutoConfig.for_model(kind, **_HF_CONFIGS.get(kind, _SMALL))
    if hasattr(config, "use_cache"):
        config.use_cache = False
    config._attn_implementation = "sdpa"
    try:
        model = AutoModel.from_config(config)
    except ValueError:  # no sdpa attention for this architecture
        config._attn_implementation = "eager"
        model = AutoModel.from_config(config)
    if kind == "whisper":
        model, inputs = model.encoder, (torch.randn(1, 80, 100),)
    elif kind in ("t5", "bart"):
        model, inputs = model.get_encoder(), (torch.randint(0, 1000, (1, 16)),)
    elif kind in _IMAGES:
        inputs = (torch.randn(1, 3, 64, 64),)
    elif kind == "wav2vec2":
        inputs = (torch.randn(1, 4000),)
    else:
        inputs = (torch.randint(0, 1000, (1, 16)),)

    class FirstOutput(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            return self.inner(*args, return_dict=False)[0]

    return FirstOutput(model).eval(), inputs


def _first(result):
    import torch

    if isinstance(result, dict):
        result = result.get("out", next(iter(result.values())))
    while isinstance(result, list | tuple):
        result = (
            result[-1] if len(result) > 1 and isinstance(result[-1], torch.Tensor) else result[0]
        )
    return result


# --dynamic: token models' sequence length, and the lengths each package is checked at.
DYNAMIC_RANGE = (4, 64)
DYNAMIC_LENGTHS = (5, 16, 33)


def _token_model(spec: str) -> bool:
    kind = spec.removeprefix("hf:")
    return spec.startswith("hf:") and kind not in _IMAGES | {"wav2vec2", "whisper"}


def _one(spec: str, dynamic: bool = False) -> dict:
    """Build, export, compile and convert one model (runs in the child process); with
    ``dynamic``, a token model's sequence length is a torch.export Dim."""
    import coremltools as ct
    import torch

    import coreml_compile
    from coreml_compile.compiler.mil import quiet_coremltools

    torch.manual_seed(0)
    record: dict = {"model": spec}
    if spec.startswith("hf:"):
        model, inputs = _hugging_face_model(spec[3:])
    elif spec.startswith("timm:"):
        model, inputs = _timm_model(spec[5:])
    else:
        name, family = spec.split("@") if "@" in spec else (spec, "cls")
        model, inputs = _torchvision_model(name, family)
    checks = [inputs]
    shapes = None
    if dynamic:
        if not _token_model(spec):
            return {"model": spec, "ours_error": "--dynamic measures token models only"}
        low, high = DYNAMIC_RANGE
        shapes = (({1: torch.export.Dim("seq", min=low, max=high)},),)
        checks = [(torch.randint(0, 1000, (1, n)),) for n in DYNAMIC_LENGTHS]
    with torch.no_grad():
        wants = [_first(model(*feeds)) for feeds in checks]
        with contextlib.redirect_stderr(io.StringIO()):
            ep = torch.export.export(model, inputs, dynamic_shapes=shapes)
    scratch = Path(tempfile.mkdtemp(prefix="public_models_"))
    start = time.perf_counter()
    try:
        with quiet_coremltools():
            compiled = coreml_compile.compile(ep, precision="fp32")
            compiled.save(scratch / "ours.mlpackage")
        record["ours_s"] = round(time.perf_counter() - start, 2)
        record["partitions"] = len(compiled.report.partitions)
        record["fallback"] = sorted(set(compiled.report.fallback_reasons.values()))[:5]
        cosines = []
        for feeds, want in zip(checks, wants, strict=True):
            got = torch.as_tensor(_first(compiled(*feeds))).double().flatten()
            expected = want.double().flatten()
            if not expected.abs().max() > 0:
                cosines.append("zero")
                continue
            cosine = torch.nn.functional.cosine_similarity(got, expected, 0).item()
            cosines.append(round(cosine, 6))
        # The worst over the checked lengths (one input when static).
        record["cosine"] = "zero" if "zero" in cosines else min(cosines)
    except Exception as exc:
        record["ours_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    start = time.perf_counter()
    try:
        with quiet_coremltools(), contextlib.redirect_stderr(io.StringIO()):
            ct.convert(
                ep.run_decompositions({}),
                convert_to="mlprogram",
                compute_precision=ct.precision.FLOAT32,
                minimum_deployment_target=ct.target.iOS16,
                skip_model_load=True,
            ).save(str(scratch / "coremltools.mlpackage"))
        record["coremltools_s"] = round(time.perf_counter() - start, 2)
    except BaseException as exc:  # coremltools raises assertion errors too
        text = str(exc).splitlines()[0][:160] if str(exc) else ""
        record["coremltools_error"] = f"{type(exc).__name__}: {text}"
    shutil.rmtree(scratch, ignore_errors=True)
    return record


def _run_child(spec: str, dynamic: bool) -> dict:
    command = [sys.executable, __file__, "--child", spec, *(["--dynamic"] if dynamic else [])]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"model": spec, "ours_error": f"over {CHILD_TIMEOUT_S} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1][:200]
        return {"model": spec, "ours_error": f"child failed: {tail}"}
    return json.loads(lines[-1])


def _line(r: dict) -> str:
    if "ours_error" in r:
        ours = f"error: {r['ours_error']}"
    elif r["partitions"]:
        ours = f"{r['partitions']} partitions ({'; '.join(r['fallback'])[:120]})"
    else:
        ours = "plain Core ML program"
    theirs = "converts" if "coremltools_s" in r else r.get("coremltools_error", "")[:70]
    seconds = f"{r.get('ours_s', '-')} / {r.get('coremltools_s', '-')} s"
    cosine = f"cosine {r.get('cosine', '-')!s:9s}"
    return f"{r['model']:30s} {ours:40s} {cosine} {seconds:16s} coremltools: {theirs}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        nargs="+",
        help="torchvision names (name@family for seg/video/flow), hf:<model type> or "
        "timm:<model name>",
    )
    parser.add_argument("--jsonl", type=Path, help="also write one JSON line per model here")
    parser.add_argument(
        "--dynamic",
        action="store_true",
        help="Hugging Face token models with a dynamic sequence length (4..64), each package "
        "checked at lengths 5, 16 and 33",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        warnings.simplefilter("ignore")
        sys.path.insert(0, str(ROOT))
        print(json.dumps(_one(args.child, args.dynamic)))
        return
    if args.dynamic and not args.models:
        args.models = [f"hf:{kind}" for kind in HUGGING_FACE.split() if _token_model(f"hf:{kind}")]
    specs = args.models or [
        *(
            f"{n}@{family}" if family != "cls" else n
            for family, names in TORCHVISION.items()
            for n in names.split()
        ),
        *(f"hf:{kind}" for kind in HUGGING_FACE.split()),
        *(f"timm:{name}" for name in TIMM.split()),
    ]
    sink = args.jsonl.open("w") if args.jsonl else None
    records = []
    for spec in specs:
        record = _run_child(spec, args.dynamic)
        records.append(record)
        print(_line(record), flush=True)
        if sink:
            print(json.dumps(record), file=sink, flush=True)
    plain = sum(1 for r in records if r.get("partitions") == 0)
    theirs = sum(1 for r in records if "coremltools_s" in r)
    print(
        f"\n{len(records)} models: {plain} plain Core ML programs (ours), "
        f"{theirs} converted by coremltools"
    )


if __name__ == "__main__":
    main()
