"""Build tiny random-init Hugging Face transformer exports as a new user would make them.

Run with the torch venv (torch 2.13.0 CPU, transformers, onnx, onnxscript, onnxruntime,
onnxruntime-genai 0.12.2), NOT the project venv:

    /work/torchvenv/bin/python models/transformers/build.py

For each of bert (3 inputs), gpt2, llama (GQA, RoPE, SwiGLU, RMSNorm) and vit it writes
``<arch>_ts.onnx`` (TorchScript exporter, opset 17), ``<arch>_dynamo.onnx`` (dynamo exporter,
opset 18), ORT-fused versions of the TorchScript export (``onnxruntime.transformers.optimizer``)
and, for llama, ORT GenAI model-builder exports. Every file is run in onnxruntime and compared with
the Hugging Face model in torch (rtol 1e-3, atol 1e-4; the int4 GenAI export only to a looser bound).
A variant that fails is recorded under ``skipped`` in ``manifest.json`` with the reason. The
entries are described in README.md next to this file.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.numpy_helper
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from build_zoo import normalise_onnx, randomise_norms, seed_everything  # noqa: E402
from transformers import (  # noqa: E402
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    ViTConfig,
    ViTForImageClassification,
)
from zookit import HERE, assert_close, describe, session, update_manifest  # noqa: E402

SEED = 0
TS_OPSET = 17
DYNAMO_OPSET = 18
HIDDEN, HEADS = 64, 4
MAX_POSITIONS = 64  # max_position_embeddings of every config
EXAMPLE = {"batch": 2, "sequence": 16}  # traced shape; also checked at batch 1, sequence 7
OTHER = {"batch": 1, "sequence": 7}
TEXT_AXES = {0: "batch", 1: "sequence"}


def randomise_rms_norms(model: nn.Module, gen: torch.Generator) -> None:
    """RMSNorm has only a scale: make it non-trivial too (randomise_norms covers nn.LayerNorm)."""
    with torch.no_grad():
        for mod in model.modules():
            if type(mod).__name__.endswith("RMSNorm"):
                mod.weight.copy_(torch.rand(mod.weight.shape, generator=gen) * 1.5 + 0.5)


@dataclass(frozen=True)
class Fusion:
    """One run of onnxruntime.transformers.optimizer on the TorchScript export."""

    model_type: str
    options: dict[str, bool] = field(default_factory=dict)  # FusionOptions attributes to set
    batch: int | None = None  # set when the fused graph only runs at this batch size
    note: str = ""


@dataclass(frozen=True)
class Arch:
    name: str
    factory: Callable[[str], PreTrainedModel]  # attention implementation -> model
    feeds: dict[str, dict[str, Any]]  # input name -> manifest feed recipe
    axes: dict[str, dict[int, str]]  # input/output name -> dynamic axes
    outputs: tuple[str, ...]
    causal: bool = False  # decoder: the TorchScript wrapper builds the 4-D additive mask itself
    image: tuple[int, int, int] = (3, 32, 32)  # per-sample shape of a pixel_values input
    ort_fusions: dict[str, Fusion] = field(default_factory=dict)  # file suffix -> optimizer run
    description: str = ""


def _ids(high: int) -> dict[str, Any]:
    return {"fill": "token_ids", "high": high}


ARCHS: tuple[Arch, ...] = (
    Arch(
        "bert",
        lambda attn: BertModel(BertConfig(attn_implementation=attn, vocab_size=512, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=HEADS,
                                     intermediate_size=128, max_position_embeddings=MAX_POSITIONS, type_vocab_size=2)),
        {"input_ids": _ids(512), "attention_mask": {"fill": "ones"}, "token_type_ids": {"fill": "zeros"}},
        {"input_ids": TEXT_AXES, "attention_mask": TEXT_AXES, "token_type_ids": TEXT_AXES,
         "last_hidden_state": TEXT_AXES, "pooler_output": {0: "batch"}},
        ("last_hidden_state", "pooler_output"),
        ort_fusions={"ort_fused": Fusion("bert"), "ort_fused_mha": Fusion("bert", {"use_multi_head_attention": True})},
        description="transformers BertModel: word+position+token-type embeddings, 2 post-LN encoder layers, tanh pooler",
    ),
    Arch(
        "gpt2",
        lambda attn: GPT2LMHeadModel(GPT2Config(attn_implementation=attn, vocab_size=512, n_embd=HIDDEN, n_layer=2, n_head=HEADS, n_positions=MAX_POSITIONS,
                                           use_cache=False)),
        {"input_ids": _ids(512), "attention_mask": {"fill": "ones"}},
        {"input_ids": TEXT_AXES, "attention_mask": TEXT_AXES, "logits": TEXT_AXES},
        ("logits",),
        causal=True,
        ort_fusions={"ort_fused": Fusion("gpt2")},
        description="transformers GPT2LMHeadModel: Conv1D (addmm) projections, fused c_attn split into q/k/v, gelu_new, tied LM head",
    ),
    Arch(
        "llama",
        lambda attn: LlamaForCausalLM(LlamaConfig(attn_implementation=attn, vocab_size=256, hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=2,
                                             num_attention_heads=HEADS, num_key_value_heads=2, max_position_embeddings=MAX_POSITIONS,
                                             tie_word_embeddings=False, use_cache=False, bos_token_id=1, eos_token_id=2,
                                             pad_token_id=0)),
        {"input_ids": _ids(256)},
        {"input_ids": TEXT_AXES, "logits": TEXT_AXES},
        ("logits",),
        causal=True,
        ort_fusions={"ort_fused": Fusion(
            "qwen3", batch=1,
            note="batch 1 only: the fused RotaryEmbedding nodes take the export's [1, sequence] position_ids, and ORT "
                 "rejects them at batch > 1 ('position_ids dimension 0 should be of size batch_size'); "
                 "cos_cache/sin_cache cut from the 131072 rows the fusion writes to 64")},
        description="transformers LlamaForCausalLM: RMSNorm, RoPE, GQA (4 query / 2 KV heads, repeat_kv), SwiGLU MLP; no KV cache",
    ),
    Arch(
        "vit",
        lambda attn: ViTForImageClassification(ViTConfig(attn_implementation=attn, image_size=32, patch_size=8, num_channels=3, hidden_size=HIDDEN,
                                                    num_hidden_layers=2, num_attention_heads=HEADS, intermediate_size=128,
                                                    num_labels=10)),
        {"pixel_values": {"fill": "normal"}},
        {"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
        ("logits",),
        ort_fusions={"ort_fused": Fusion("vit")},
        description="transformers ViTForImageClassification: 8x8 patch conv on 3x32x32, CLS token, 2 pre-LN layers, head on CLS",
    ),
)  # fmt: skip


def build_model(arch: Arch, attn_implementation: str = "sdpa") -> PreTrainedModel:
    """Seeded: the weights do not depend on the attention implementation."""
    seed_everything(SEED)
    model = arch.factory(attn_implementation)
    gen = torch.Generator().manual_seed(SEED + 1)
    randomise_norms(model, gen)
    randomise_rms_norms(model, gen)
    return model.eval()


def additive_causal_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """[batch, 1, seq, seq] float mask: 0 where a query may attend, the dtype minimum elsewhere."""
    n = input_ids.shape[1]
    keep = torch.ones(n, n, dtype=torch.bool).tril()[None, None]
    if attention_mask is None:
        keep = keep.expand(input_ids.shape[0], 1, n, n)
    else:
        keep = keep & attention_mask[:, None, None, :].bool()
    return torch.zeros(keep.shape).masked_fill(~keep, torch.finfo(torch.float32).min)


class Exportable(nn.Module):
    """Positional inputs in manifest order -> the HF model's keyword call -> a tuple of tensors.

    With ``prebuilt_mask`` a decoder gets its 4-D additive mask from here: TorchScript tracing fails
    inside transformers' vmap-based mask builder ("RuntimeError: unordered_map::at")."""

    def __init__(self, model: PreTrainedModel, arch: Arch, *, prebuilt_mask: bool) -> None:
        super().__init__()
        self.model, self.names, self.n_outputs = model, tuple(arch.feeds), len(arch.outputs)
        self.causal, self.prebuilt_mask = arch.causal, prebuilt_mask
        self.eval()  # the TorchScript exporter restores this mode afterwards: train mode would enable dropout

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        kw: dict[str, Any] = dict(zip(self.names, args, strict=True))
        if self.causal:
            kw["use_cache"] = False
        if self.prebuilt_mask:
            kw["attention_mask"] = additive_causal_mask(kw["input_ids"], kw.get("attention_mask"))
        out = self.model(**kw, return_dict=False)
        return tuple(out[: self.n_outputs])


def example_inputs(arch: Arch, dims: dict[str, int], seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Like the manifest recipes, but the attention mask pads the last 3 tokens of row 0 so masking is exercised."""
    gen = torch.Generator().manual_seed(SEED + 2 + seed)
    b, s = dims["batch"], dims["sequence"]
    out = []
    for name, feed in arch.feeds.items():
        if feed["fill"] == "token_ids":
            out.append(torch.randint(0, feed["high"], (b, s), generator=gen))
        elif name == "attention_mask":
            mask = torch.ones(b, s, dtype=torch.int64)
            mask[0, -3:] = 0
            out.append(mask)
        elif feed["fill"] == "zeros":
            out.append(torch.zeros(b, s, dtype=torch.int64))
        else:
            out.append(torch.randn(b, *arch.image, generator=gen))
    return tuple(out)


def reference(model: PreTrainedModel, arch: Arch, inputs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
    """The HF model as shipped (default attention, its own mask builder)."""
    wrapper = Exportable(model, arch, prebuilt_mask=False)
    with torch.no_grad():
        return [t.numpy() for t in wrapper(*inputs)]


def export_ts(arch: Arch, model: PreTrainedModel, path: Path) -> None:
    """``model`` should use eager attention, as transformers exported before SDPA: the ORT fusions match it."""
    wrapper = Exportable(model, arch, prebuilt_mask=arch.causal)
    torch.onnx.export(wrapper, example_inputs(arch, EXAMPLE), str(path), dynamo=False, opset_version=TS_OPSET,
                      input_names=list(arch.feeds), output_names=list(arch.outputs), dynamic_axes=arch.axes,
                      do_constant_folding=True)


def export_dynamo(arch: Arch, model: PreTrainedModel, path: Path) -> None:
    wrapper = Exportable(model, arch, prebuilt_mask=False)
    dims = {"batch": torch.export.Dim("batch", min=1, max=64), "sequence": torch.export.Dim("sequence", min=2, max=64)}
    dyn = tuple({ax: dims[n] for ax, n in arch.axes[name].items()} for name in arch.feeds)
    program = torch.onnx.export(wrapper, example_inputs(arch, EXAMPLE), dynamo=True, opset_version=DYNAMO_OPSET,
                                input_names=list(arch.feeds), output_names=list(arch.outputs), dynamic_shapes=(dyn,),
                                external_data=False, optimize=True, verbose=False)
    assert program is not None
    program.save(str(path), external_data=False)


def fuse_ort(src: Path, path: Path, model_type: str, options: dict[str, bool]) -> None:
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    fusion = FusionOptions(model_type)
    for key, value in options.items():
        setattr(fusion, key, value)
    optimized = optimize_model(str(src), model_type=model_type, num_heads=HEADS, hidden_size=HIDDEN,
                               optimization_options=fusion, opt_level=0)
    optimized.save_model_to_file(str(path))
    truncate_rotary_caches(path)


def truncate_rotary_caches(path: Path) -> None:
    """The RoPE fusion writes cos/sin caches of 131072 positions (8 MB here); keep MAX_POSITIONS rows."""
    model = onnx.load(str(path))
    for init in model.graph.initializer:
        if init.name in ("cos_cache", "sin_cache") and init.dims[0] > MAX_POSITIONS:
            init.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(init)[:MAX_POSITIONS], init.name))
    onnx.save(model, str(path))


@dataclass
class Results:
    entries: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    def skip(self, arch: str, variant: str, exc: BaseException) -> None:
        text = str(exc).strip()
        reason = f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__
        print(f"  SKIP {arch} {variant}: {reason}", flush=True)
        self.skipped.append({"arch": arch, "variant": variant, "reason": reason})


def quiet(fn: Callable[[], None]) -> None:
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        fn()


def check_against_torch(path: Path, model: PreTrainedModel, arch: Arch, *, extra: dict[str, Any] | None = None,
                        atol: float | None = None, batch: int | None = None) -> float:
    """Compare at the traced shape and at OTHER; return the largest absolute difference seen."""
    sess = session(path)
    worst = 0.0
    for seed, dims in enumerate((EXAMPLE, OTHER)):
        dims = {**dims, "batch": batch or dims["batch"]}
        inputs = example_inputs(arch, dims, seed)
        want = reference(model, arch, inputs)
        feed = {n: t.numpy() for n, t in zip(arch.feeds, inputs, strict=True)}
        feed.update({k: v(dims) for k, v in (extra or {}).items()})
        got = sess.run(list(arch.outputs), feed)
        worst = max(worst, *(float(np.abs(g - w).max()) for g, w in zip(got, want, strict=True)))
        if atol is None:
            assert_close(f"{path.name} {dims}", got, want)
        else:
            assert worst <= atol, f"{path.name}: max |diff| {worst} > {atol}"
    return worst


def record(results: Results, arch: Arch, variant: str, path: Path, worst: float, *,
           feeds: dict[str, dict[str, Any]] | None = None, dims: dict[str, int] | None = None,
           description: str = "") -> None:
    info = describe(path, feeds or arch.feeds, dims or EXAMPLE)
    results.entries.append({"name": path.stem, "arch": arch.name, "variant": variant, **info,
                            "max_abs_diff_vs_torch": float(f"{worst:.3g}"),
                            "description": description or arch.description})
    custom = ", ".join(f"{d}: {'/'.join(ops)}" for d, ops in info["custom_ops"].items()) or "none"
    print(f"  ok   {path.name}: opset {info['opset']}, {info['nodes']} nodes, {info['size_bytes']} bytes, "
          f"checker {info['onnx_checker'][:40]}, custom ops {custom}", flush=True)


def build_arch(arch: Arch, results: Results) -> None:
    model = build_model(arch)
    ts_path = HERE / f"{arch.name}_ts.onnx"
    exports = (("torchscript", ts_path, export_ts, build_model(arch, "eager")),
               ("dynamo", HERE / f"{arch.name}_dynamo.onnx", export_dynamo, model))
    for variant, path, export, exported in exports:
        try:
            quiet(lambda e=export, p=path, m=exported: e(arch, m, p))
            normalise_onnx(path)
            worst = check_against_torch(path, model, arch)
        except Exception as exc:  # noqa: BLE001 - an exporter failure is recorded, not fatal
            path.unlink(missing_ok=True)
            results.skip(arch.name, variant, exc)
            continue
        record(results, arch, variant, path, worst)
    for suffix, fusion in arch.ort_fusions.items():
        path = HERE / f"{arch.name}_{suffix}.onnx"
        variant = "ort-fused" + ("-mha" if fusion.options.get("use_multi_head_attention") else "")
        try:
            assert ts_path.exists(), "no TorchScript export to optimise"
            quiet(lambda p=path, f=fusion: fuse_ort(ts_path, p, f.model_type, f.options))
            normalise_onnx(path)
            worst = check_against_torch(path, model, arch, batch=fusion.batch)
        except Exception as exc:  # noqa: BLE001
            path.unlink(missing_ok=True)
            results.skip(arch.name, variant, exc)
            continue
        opts = "".join(f", {k}=True" for k in fusion.options)
        note = f"; {fusion.note}" if fusion.note else ""
        record(results, arch, variant, path, worst, dims={**EXAMPLE, "batch": fusion.batch or EXAMPLE["batch"]},
               description=f"{arch.description}; ORT transformers optimizer (model_type={fusion.model_type!r}, "
                           f"num_heads={HEADS}, hidden_size={HIDDEN}{opts}, opt_level=0) on {ts_path.name}{note}")
    if arch.name == "llama":
        build_genai(arch, model, results)


# ORT GenAI model builder: (file suffix, variant, -p precision, -e execution provider, what it gives)
GENAI_VARIANTS = (
    ("genai", "genai", "fp32", "cpu", "GroupQueryAttention (packed QKV, rotary inside), SimplifiedLayerNormalization"),
    ("genai_mha", "genai-mha", "fp32", "cuda", "MultiHeadAttention + RotaryEmbedding + repeat_kv (GQA not offered for fp32 CUDA); runs on the CPU EP"),
    ("genai_int4", "genai-int4", "int4", "cpu", "GroupQueryAttention, MatMulNBits (int4 RTN, block 32) weights"),
)  # fmt: skip


def save_hf_checkpoint(model: PreTrainedModel, folder: Path) -> None:
    """The builder also writes tokenizer files, so the checkpoint needs a tokenizer: a trivial word-level one."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    model.save_pretrained(str(folder))
    tok = Tokenizer(models.WordLevel({f"<{i}>": i for i in range(model.config.vocab_size)}, unk_token="<0>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<0>", pad_token="<0>", bos_token="<1>",
                            eos_token="<2>").save_pretrained(str(folder))


def build_genai(arch: Arch, model: PreTrainedModel, results: Results) -> None:
    cfg = model.config
    kv_heads, head_dim = cfg.num_key_value_heads, cfg.hidden_size // cfg.num_attention_heads
    dims = {"batch_size": 2, "sequence_length": 16, "past_sequence_length": 0, "total_sequence_length": 16}
    with tempfile.TemporaryDirectory(prefix="onnxprune-genai-") as tmp:
        ckpt = Path(tmp) / "hf"
        save_hf_checkpoint(model, ckpt)
        for suffix, variant, precision, ep, what in GENAI_VARIANTS:
            path = HERE / f"{arch.name}_{suffix}.onnx"
            out = Path(tmp) / suffix
            try:
                proc = subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(ckpt), "-o", str(out),
                                       "-p", precision, "-e", ep], capture_output=True, text=True, check=False)
                if proc.returncode != 0:
                    raise RuntimeError((proc.stderr.strip().splitlines() or ["no output"])[-1])
                onnx.save(onnx.load(str(out / "model.onnx")), str(path))  # external data -> inline
                normalise_onnx(path)
                names = [i.name for i in onnx.load(str(path)).graph.input]
                feeds: dict[str, dict[str, Any]] = {"input_ids": arch.feeds["input_ids"], "attention_mask": {"fill": "ones"}}
                extra: dict[str, Any] = {}
                if "position_ids" in names:
                    feeds["position_ids"] = {"fill": "positions"}
                    extra["position_ids"] = lambda d: np.tile(np.arange(d["sequence"]), (d["batch"], 1))
                for n in names:
                    if n.startswith("past_key_values."):
                        feeds[n] = {"fill": "zeros"}
                        extra[n] = lambda d: np.zeros((d["batch"], kv_heads, 0, head_dim), np.float32)
                genai_arch = Arch(arch.name, arch.factory, {"input_ids": arch.feeds["input_ids"]}, arch.axes, ("logits",), causal=True)
                # The builder's mask input is 2-D ones here (no padding): the GQA kernel takes right padding only.
                extra["attention_mask"] = lambda d: np.ones((d["batch"], d["sequence"]), np.int64)
                worst = check_against_torch(path, model, genai_arch, extra=extra, atol=0.25 if precision == "int4" else None)
            except Exception as exc:  # noqa: BLE001
                path.unlink(missing_ok=True)
                results.skip(arch.name, variant, exc)
                continue
            record(results, arch, variant, path, worst, feeds=feeds, dims=dims,
                   description=f"{arch.description}; onnxruntime_genai.models.builder -p {precision} -e {ep} on the same "
                               f"checkpoint (save_pretrained), inlined: {what}; KV-cache inputs fed empty (past_sequence_length 0)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="", help="comma-separated architecture names (default: all)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    only = {s for s in args.only.split(",") if s}
    torch.set_num_threads(1)
    results = Results()
    for arch in ARCHS:
        if only and arch.name not in only:
            continue
        print(f"[{arch.name}]", flush=True)
        build_arch(arch, results)
    update_manifest(results.entries, results.skipped, owner="build.py", info=record_versions(), archs=only or None)
    print(f"{len(results.entries)} models, {len(results.skipped)} skipped")
    return 0


def record_versions() -> dict[str, str]:
    """Versions of the packages that shaped the exports, for the manifest."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("torch", "transformers", "onnx", "onnxscript", "onnxruntime", "onnxruntime-genai"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


if __name__ == "__main__":
    sys.exit(main())
