"""Depth: dropping residual blocks (`--drop-blocks`), on the models trained here.

1. models/transformers/lm_llama.onnx (byte-level Llama, 4 decoder layers, each two blocks: attention
   and MLP): held-out perplexity on the first 64 windows of lm_heldout.npz after dropping whole
   decoder layers (both blocks; layers ranked by ShortGPT's layer influence 1 − cos(layer input,
   layer output) on the calibration data, replayed as a plan) and after `--drop-blocks N` (the N
   lowest-influence blocks, attention and MLP alike), with identity and mean fill, with and without
   the re-fit, on 64 calibration samples (lm_calib.npz). Width stays dense (--ratio 0).
2. lm_llama under a parameter budget (--target-params 0.8 and 0.7, re-fit on, l2 criterion): the width
   part alone (`--drop-blocks 0`) against `--drop-blocks auto` (the budget split between depth and
   width by the output error on 32 held calibration samples after the re-fit).
3. models/digits/digits_resnet.onnx (residual CNN, 8x8 digits): test accuracy (models/digits/test.npz),
   MACs kept and the ONNX Runtime speedup at batch 1 (runs interleaved with the dense model's, one
   thread; median of the pair ratios) after `--drop-blocks N` (mean fill, re-fit), alone and on top
   of --ratio 0.5, calibration on models/digits/calib.npz (256 images).

Depth is approximate: no row is verified by the oracle (the width rows' width part is). Needs no torch.

    python benchmarks/depth.py [--quick] [--only llama|budget|digits]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "models" / "transformers"))

from zookit import digits_accuracy, heldout_perplexity  # type: ignore[import-not-found]  # noqa: E402

from onnxprune.api import analyse, prune  # noqa: E402
from onnxprune.calib.collect import stream_tensors  # noqa: E402
from onnxprune.calib.source import CalibConfig, CalibrationSource  # noqa: E402
from onnxprune.graph.blocks import Block, find_blocks  # noqa: E402
from onnxprune.io.runtime import session  # noqa: E402
from onnxprune.measure.bench import interleaved_latency  # noqa: E402
from onnxprune.measure.model_stats import model_stats  # noqa: E402
from onnxprune.planning.depth import DepthPlan  # noqa: E402
from onnxprune.planning.plan import Plan  # noqa: E402

TRANSFORMERS = ROOT / "models" / "transformers"
DIGITS = ROOT / "models" / "digits"


def perplexity(model: onnx.ModelProto) -> float:
    return heldout_perplexity(session(model))


def accuracy(model: onnx.ModelProto) -> float:
    return digits_accuracy(session(model), "input")


def decoder_layers(blocks: list[Block]) -> list[tuple[Block, Block]]:
    """Pre-norm decoder layers: an attention block followed by the MLP block reading its output."""
    return [(a, b) for a, b in zip(blocks, blocks[1:], strict=False) if "self_attn" in " ".join(a.layers)
            and "mlp" in " ".join(b.layers)]


def layer_influence(model: onnx.ModelProto, layers: list[tuple[Block, Block]], calib: CalibConfig) -> list[float]:
    """ShortGPT's BI of each layer: 1 − mean over tokens of cos(layer input, layer output)."""
    names = [t for a, b in layers for t in (a.fork, b.output)]
    cos = np.zeros(len(layers))
    n = 0
    for vals in stream_tensors(model, names, CalibrationSource.of(calib, model).batches()):
        for i, (a, b) in enumerate(layers):
            x, y = (vals[t].reshape(-1, vals[t].shape[-1]).astype(np.float64) for t in (a.fork, b.output))
            cos[i] += float(((x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))).sum())
        n += x.shape[0]
    return (1.0 - cos / n).tolist()


def row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def llama(*, quick: bool) -> None:
    path = TRANSFORMERS / "lm_llama.onnx"
    calib = CalibConfig(path=TRANSFORMERS / "lm_calib.npz", samples=64)
    shapes = {"input_ids": (1, 128)}
    dg = analyse(str(path), calibration=calib, shapes=shapes)
    dense = dg.model
    base = model_stats(dense, shapes=shapes)
    ppl0 = perplexity(dense)
    layers = decoder_layers(find_blocks(dense, shape=dg.analysis.view.shape, view=dg.analysis.view))
    order = np.argsort(layer_influence(dense, layers, calib), kind="stable")
    print(f"lm_llama: dense held-out perplexity {ppl0:.4f}; layer influence order (lowest first): "
          f"{[int(i) for i in order]}\n")
    print(row(["unit", "dropped", "blocks", "fill", "re-fit", "perplexity", "× dense", "params kept", "MACs kept"]))
    print(row(["---"] * 9))
    fills, refits = (("mean",), (False,)) if quick else (("identity", "mean"), (False, True))
    cases: list[tuple[str, int]] = [("layers", 1), ("layers", 2), ("blocks", 2), ("blocks", 4)]
    for unit, n in cases[:2] if quick else cases:
        for fill in fills:
            for refit in refits:
                if unit == "layers":
                    chosen = [b.name for i in sorted(order[:n].tolist()) for b in layers[i]]
                    r = prune(dense, recipe="fast", dg=dg, plan=Plan(depth=DepthPlan(chosen, fill)), calibration=calib,
                              reconstruct=refit, shapes=shapes)
                else:
                    r = prune(dense, recipe="fast", dg=dg, ratio=0.0, drop_blocks=n, block_fill=fill, calibration=calib,
                              reconstruct=refit, shapes=shapes)
                assert r.plan.depth is not None
                short = [b.split("/")[-2] + "/" + b.split("/")[-1].replace("Add_1", "mlp").replace("Add", "attn")
                         for b in r.plan.depth.blocks]
                after = model_stats(r.model, shapes=shapes)
                ppl = perplexity(r.model)
                print(row([unit, n, " ".join(short), fill, "yes" if refit else "no", f"{ppl:.4f}",
                           f"{ppl / ppl0:.2f}", f"{after.params / base.params:.3f}",
                           f"{after.macs / base.macs:.3f}"]), flush=True)


def llama_budget(*, quick: bool) -> None:
    path = TRANSFORMERS / "lm_llama.onnx"
    calib = CalibConfig(path=TRANSFORMERS / "lm_calib.npz", samples=64)
    shapes = {"input_ids": (1, 128)}
    dg = analyse(str(path), calibration=calib, shapes=shapes)
    base = model_stats(dg.model, shapes=shapes)
    ppl0 = perplexity(dg.model)
    print("\n" + row(["params budget", "depth", "blocks dropped", "perplexity", "× dense", "params kept", "MACs kept"]))
    print(row(["---"] * 7))
    for value in (0.8,) if quick else (0.8, 0.7):
        for blocks in (0, "auto"):
            r = prune(dg.model, recipe="fast", dg=dg, target_params=value, drop_blocks=blocks, calibration=calib, reconstruct=True,
                      shapes=shapes, verify=True)
            assert r.verify is not None and r.verify.ok
            after = model_stats(r.model, shapes=shapes)
            ppl = perplexity(r.model)
            dropped = len(r.plan.depth.blocks) if r.plan.depth is not None else 0
            print(row([value, "width only" if blocks == 0 else "auto", dropped, f"{ppl:.4f}", f"{ppl / ppl0:.2f}",
                       f"{after.params / base.params:.3f}", f"{after.macs / base.macs:.3f}"]), flush=True)


def digits(*, quick: bool) -> None:
    path = str(DIGITS / "digits_resnet.onnx")
    calib = CalibConfig(path=DIGITS / "calib.npz")
    shapes = {"input": (1, 1, 8, 8)}
    dense = onnx.load(path)
    base = model_stats(dense, shapes=shapes)
    print(f"\ndigits_resnet: dense test accuracy {accuracy(dense):.2f} %, {base.macs / 1e6:.3f} M MACs at batch 1\n")
    print(row(["width ratio", "blocks dropped", "accuracy %", "MACs kept", "nodes kept", "speedup (batch 1)"]))
    print(row(["---"] * 6))
    for ratio in (0.0, 0.5):
        for n in ((0, 1, 3) if not quick else (1,)):
            if ratio == 0 and n == 0:
                continue
            r = prune(path, recipe="fast", ratio=ratio, drop_blocks=n, block_fill="mean", calibration=calib, shapes=shapes,
                      reconstruct=True, verify=True)
            assert r.verify is None or r.verify.ok
            after = model_stats(r.model, shapes=shapes)
            ab = interleaved_latency(dense, r.model, shapes=shapes, threads=1, repeat=50 if quick else 400)
            print(row([ratio, n, f"{accuracy(r.model):.2f}", f"{after.macs / base.macs:.3f}",
                       f"{len(r.model.graph.node) / len(dense.graph.node):.3f}", f"{ab.speedup:.2f}"]), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="A few rows only (the smoke test).")
    ap.add_argument("--only", choices=("llama", "budget", "digits"), help="One table only.")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    for name, table in (("llama", llama), ("budget", llama_budget), ("digits", digits)):
        if args.only in (None, name):
            table(quick=args.quick)


if __name__ == "__main__":
    main()
