"""Quality of the two transformers trained here after pruning, without training, against onnxsim 0.8.1.

models/transformers/lm_llama.onnx (byte-level Llama: 4 layers, hidden 96, GQA 4/2 heads, RoPE,
SwiGLU, RMSNorm; held-out perplexity on the first 64 windows of lm_heldout.npz) at 0.8 / 0.7 / 0.5
of its parameters, and models/transformers/vit_digits.onnx (hybrid ViT: conv stem, 4 layers, LayerNorm; accuracy on
models/digits/test.npz) at 0.8 / 0.7 / 0.5 of its MACs and of its parameters, and gpt2_ts (the zoo's
tiny GPT-2, random weights: the cosine of its logits to the dense ones on 16 held-out random token
sequences) at 0.7 of its parameters. Recipes (all `--round-to 1`, calibration on 64 samples:
lm_calib.npz / models/digits/calib.npz / random token sequences for gpt2_ts):

- width: heads, head_dim and FFN channels (`--heads auto`, exact, oracle-verified), l2 and wanda,
  without and with re-fit;
- + rotate: the hidden width too, by `--approximate rotate` (SliceGPT; the LayerNorm models' streams
  first made centred RMSNorm streams, passes/centre.py);
- + depth: `--drop-blocks auto` (the budget may drop residual blocks, re-fitted);
- quality: the CLI's default recipe with calibration and a budget (obs order, allocation by
  sensitivity curves, weighted re-fit, two steps below 0.6), as is, with `--heads dim`, with
  `--criterion l2`, and with `--approximate rotate`;
- onnxsim's `apply_structured_pruning` and `apply_attention_head_pruning` at sparsity 1 − target.

Needs no torch.

    python benchmarks/transformer_quality.py            # writes the table into benchmarks/README.md
    python benchmarks/transformer_quality.py --models vit_digits   # re-measures vit_digits, keeps the others' rows
    python benchmarks/transformer_quality.py --quick    # lm_llama at 0.8, wanda with re-fit; prints only
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "models" / "transformers"))
sys.path.append(str(ROOT / "benchmarks"))

from _readme import replace_block  # noqa: E402
from zookit import digits_accuracy, heldout_perplexity  # type: ignore[import-not-found]  # noqa: E402

from onnxprune.api import prune  # noqa: E402
from onnxprune.calib.source import CalibConfig  # noqa: E402
from onnxprune.io.runtime import session  # noqa: E402
from onnxprune.io.types import Feed  # noqa: E402
from onnxprune.measure.model_stats import model_stats  # noqa: E402
from onnxprune.measure.validate import validate  # noqa: E402

TRANSFORMERS = ROOT / "models" / "transformers"
DIGITS = ROOT / "models" / "digits"
README = ROOT / "benchmarks" / "README.md"
BEGIN, END = "<!-- transformer-quality:begin -->", "<!-- transformer-quality:end -->"
# Recipe name -> prune() options beyond the budget, criterion, calibration and re-fit.
RECIPES: dict[str, dict[str, Any]] = {
    "width": {},
    "width + rotate": {"approximate": ("rotate",)},
    "width + depth": {"drop_blocks": "auto"},
}
# The default (quality) recipe chooses its own criterion, allocation, steps and re-fit: one run per target.
QUALITY_RECIPES: dict[str, dict[str, Any]] = {
    "quality": {},
    "quality, heads dim": {"heads": "dim"},
    "quality, l2": {"criterion": "l2"},
    "quality + rotate": {"approximate": ("rotate",)},
}


def lm_quality(model: onnx.ModelProto) -> float:
    return heldout_perplexity(session(model))


def vit_quality(model: onnx.ModelProto) -> float:
    return digits_accuracy(session(model), "pixel_values")


MODELS: dict[str, tuple[tuple[str, ...], Callable[[onnx.ModelProto], float], str, Path]] = {
    # name -> (budget metrics, quality, its unit, calibration file)
    "lm_llama": (("params",), lm_quality, "perplexity", TRANSFORMERS / "lm_calib.npz"),
    "vit_digits": (("macs", "params"), vit_quality, "accuracy %", DIGITS / "calib.npz"),
}
GPT2_TOKENS = (1, 32)  # one sequence of 32 tokens per feed


def token_feeds(model: onnx.ModelProto, n: int, seed: int) -> list[Feed]:
    """Random token sequences below gpt2_ts's vocabulary (its token table's rows)."""
    vocab = next(t.dims[0] for t in model.graph.initializer if t.name.endswith("wte.weight"))
    rng = np.random.default_rng(seed)
    return [{"input_ids": rng.integers(0, vocab, GPT2_TOKENS).astype(np.int64),
             "attention_mask": np.ones(GPT2_TOKENS, np.int64)} for _ in range(n)]


def rows(name: str, metric: str, targets: tuple[float, ...], criteria: tuple[str, ...], refits: tuple[bool, ...],
         recipes: tuple[str, ...], *, first: bool = True, onnxsim: bool = True,
         quality_recipes: tuple[str, ...] = ()) -> list[str]:
    """`first`: the model's first budget metric (its dense row, and onnxsim, whose sparsity is the same for both)."""
    _, quality, _, calib_file = MODELS[name]
    calib = CalibConfig(path=calib_file, samples=64)
    return _measure(name, TRANSFORMERS / f"{name}.onnx", metric, quality, calib, targets, criteria, refits, recipes,
                    first=first, onnxsim=onnxsim, quality_recipes=quality_recipes)


def gpt2_rows() -> list[str]:
    """gpt2_ts at 0.7 of its parameters, wanda, without and with re-fit, with and without rotate."""
    path = TRANSFORMERS / "gpt2_ts.onnx"
    dense = onnx.load(str(path))
    held = token_feeds(dense, 16, seed=1)

    def cosine(model: onnx.ModelProto) -> float:
        return validate(dense, model, feeds=held).min_cosine

    return _measure("gpt2_ts", path, "params", cosine, token_feeds(dense, 64, seed=0), (0.7,), ("wanda",),
                    (False, True), ("width", "width + rotate"), first=True, onnxsim=False)


def _measure(name: str, path: Path, metric: str, quality: Callable[[onnx.ModelProto], float], calib: Any,
             targets: tuple[float, ...], criteria: tuple[str, ...], refits: tuple[bool, ...],
             recipes: tuple[str, ...], *, first: bool, onnxsim: bool = True,
             quality_recipes: tuple[str, ...] = ()) -> list[str]:
    dense = onnx.load(str(path))
    base = model_stats(dense)
    out = [f"| {name} | dense | 1.0 | | | {quality(dense):.3f} | 1.000 | 1.000 | | |"] if first else []
    print(*out[-1:], flush=True)

    def add(recipe: str, target: float, criterion: str, refit: str, model: onnx.ModelProto, verdict: str,
            seconds: float) -> None:
        st = model_stats(model)
        out.append(f"| {name} | {recipe} | {target} {metric} | {criterion} | {refit} | {quality(model):.3f} | "
                   f"{st.params / base.params:.3f} | {st.macs / base.macs:.3f} | {verdict} | {seconds:.0f} |")
        print(out[-1], flush=True)

    def run(label: str, target: float, **options: Any) -> None:
        start = time.perf_counter()
        r = prune(str(path), calibration=calib, verify=True, round_to=1, **{f"target_{metric}": target}, **options)
        verdict = "PASS" if r.verify is not None and r.verify.ok else "FAIL"
        approx = [k for k in ("rotate",) if k in options.get("approximate", ())]
        if r.depth is not None and r.depth.plan.blocks:
            approx.append(f"{len(r.depth.plan.blocks)} blocks dropped")
        verdict += f" (exact part; approximate: {', '.join(approx)})" if approx else ""
        add(label, target, r.config.scoring.criterion, "yes" if r.config.reconstructs else "no", r.model, verdict,
            time.perf_counter() - start)

    for target in targets:
        for recipe in recipes:
            for criterion in criteria:
                for refit in refits:
                    run(recipe, target, recipe="fast", criterion=criterion, reconstruct=refit, **RECIPES[recipe])
        for recipe in quality_recipes:
            run(recipe, target, **QUALITY_RECIPES[recipe])
        if onnxsim and first:
            import onnxsim.pruning as sim  # a dev dependency

            for fn in ("apply_structured_pruning", "apply_attention_head_pruning"):
                start = time.perf_counter()
                model = getattr(sim, fn)(onnx.load(str(path)), sparsity=round(1 - target, 6))
                add(f"onnxsim {fn.removeprefix('apply_')}", target, "", "no", model, "",
                    time.perf_counter() - start)
    return out


def kept_rows(names: tuple[str, ...]) -> tuple[str, list[str]]:
    """The first line of the README block as last written ("Measured DATE with") and the rows of the
    models `names`: --models re-measures only its own."""
    body = README.read_text()
    if BEGIN not in body or END not in body:
        return "", []
    block = body[body.index(BEGIN) + len(BEGIN):body.index(END)].strip().splitlines()
    return block[0], [line for line in block if line.startswith("| ") and line.split("|")[1].strip() in names]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="lm_llama at 0.8, wanda with re-fit, width only; prints only")
    every = (*MODELS, "gpt2_ts")
    ap.add_argument("--models", default=",".join(every),
                    help=f"comma-separated, of {','.join(every)}: re-measure these; the others' rows stay as written")
    args = ap.parse_args(argv)
    chosen = tuple(m for m in args.models.split(",") if m)
    if not chosen or set(chosen) - set(every):
        ap.error(f"--models: choose from {', '.join(every)}")
    warnings.simplefilter("ignore")
    lines = ["| model | recipe | target | criterion | re-fit | quality | params kept | MACs kept | verify | s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    if args.quick:
        lines += rows("lm_llama", "params", (0.8,), ("wanda",), (True,), ("width",), onnxsim=False)
        return
    first, kept = kept_rows(tuple(m for m in every if m not in chosen))
    for name in every:
        if name not in chosen:
            lines += [line for line in kept if line.split("|")[1].strip() == name]
        elif name == "gpt2_ts":
            lines += gpt2_rows()
        else:
            for i, metric in enumerate(MODELS[name][0]):
                lines += rows(name, metric, (0.8, 0.7, 0.5), ("l2", "wanda"), (False, True), tuple(RECIPES),
                              first=i == 0, quality_recipes=tuple(QUALITY_RECIPES))
    command = "    .venv/bin/python benchmarks/transformer_quality.py"
    head = (f"Measured {time.strftime('%Y-%m-%d')} with\n\n{command}\n\n" if set(chosen) == set(every) else
            f"{first or 'Measured with'}\n\n{command}\n\n(the {', '.join(chosen)} rows re-measured "
            f"{time.strftime('%Y-%m-%d')} with `--models {','.join(chosen)}`)\n\n")
    head += ("quality: lm_llama held-out perplexity (lower is better), vit_digits test accuracy %, gpt2_ts (random "
             "weights) the lowest cosine of its logits to the dense ones on 16 held-out random token sequences; "
             "target: the fraction of the params or MACs kept.\n")
    replace_block(README, BEGIN, END, head + "\n" + "\n".join(lines),
                  "Transformer quality without training (`benchmarks/transformer_quality.py`)")


if __name__ == "__main__":
    main()
