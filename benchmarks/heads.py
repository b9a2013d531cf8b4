"""Attention units: `--heads whole` against `--heads dim`, on the two transformers trained here.

Prunes only the attention groups (the FFN and everything else stay dense) of
models/transformers/lm_llama.onnx (byte-level Llama, 4 layers, 4 query heads sharing 2 KV heads,
head_dim 24, RoPE; held-out perplexity on the first 64 windows of lm_heldout.npz) and
models/transformers/vit_digits.onnx (ViT, 4 layers, 4 heads of 16; test accuracy on
models/digits/test.npz), at each ratio of the attention slots, with the l2 and wanda criteria, with
and without reconstruction on 64 calibration samples (lm_calib.npz, models/digits/calib.npz), verify
on. Prints the quality, the attention parameters kept, the MACs kept at the evaluation size (the
scores q·kᵀ and their product with v included) and, with --latency, the speedup over the dense
model in ONNX Runtime at batch 1 (runs interleaved with the dense model's; median of the pair ratios).
--quick: l2 without reconstruction only. Needs no torch.

    python benchmarks/heads.py [--latency] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "models" / "transformers"))

from zookit import digits_accuracy, heldout_perplexity  # type: ignore[import-not-found]  # noqa: E402

from onnxprune.api import analyse, prune  # noqa: E402
from onnxprune.calib.source import CalibConfig  # noqa: E402
from onnxprune.graph.dependency import DependencyGraph  # noqa: E402
from onnxprune.io.runtime import session  # noqa: E402
from onnxprune.measure.bench import interleaved_latency  # noqa: E402
from onnxprune.measure.model_stats import model_stats  # noqa: E402
from onnxprune.planning.plan import Plan  # noqa: E402
from onnxprune.planning.rounding import n_keep  # noqa: E402
from onnxprune.scoring.catalog import score_groups  # noqa: E402

TRANSFORMERS = ROOT / "models" / "transformers"
DIGITS = ROOT / "models" / "digits"
RATIOS = {"lm_llama": (0.5,), "vit_digits": (0.25, 0.5)}  # lm_llama has 2 KV groups per layer


def quality(name: str, model: onnx.ModelProto) -> float:
    sess = session(model)
    return heldout_perplexity(sess) if name == "lm_llama" else digits_accuracy(sess, "pixel_values")


def attention_plan(dg: DependencyGraph, criterion: str, ratio: float, calib: CalibConfig) -> Plan:
    """The lowest-scored `ratio` of every attention group's slots (the other groups stay)."""
    scores = score_groups(dg, criterion, calibration=calib)
    plan = Plan(ratio=ratio, criterion=criterion)
    for g in dg.prunable:
        if g.kind in ("head", "head_dim"):
            plan.removals[g.id] = sorted(np.argsort(scores[g.id], kind="stable")[:g.size - n_keep(g.size, ratio, 1)]
                                         .tolist())
    return plan


def attention_params(dg: DependencyGraph, model: onnx.ModelProto) -> int:
    sources = {s for g in dg.groups if g.kind in ("head", "head_dim") for s in g.sources}
    nodes = {n.name: n for n in model.graph.node}
    inits = {t.name: t for t in model.graph.initializer}
    return sum(int(np.prod(inits[nodes[s].input[1]].dims)) for s in sources)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--latency", action="store_true", help="Also time each model against the dense one (batch 1).")
    ap.add_argument("--quick", action="store_true", help="l2 without reconstruction only.")
    args = ap.parse_args()
    criteria, refits = (("l2",), (False,)) if args.quick else (("l2", "wanda"), (False, True))
    warnings.simplefilter("ignore")
    setups = {"lm_llama": ({"input_ids": (1, 128)}, CalibConfig(path=str(TRANSFORMERS / "lm_calib.npz"), samples=64)),
              "vit_digits": ({"pixel_values": (1, 1, 8, 8)}, CalibConfig(path=str(DIGITS / "calib.npz"), samples=64))}
    print("| model | heads | ratio | criterion | re-fit | quality | attention params kept | MACs kept | speedup |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, (shapes, calib) in setups.items():
        path = TRANSFORMERS / f"{name}.onnx"
        dense = onnx.load(str(path))
        base_macs = model_stats(dense, shapes=shapes).macs
        metric = "ppl" if name == "lm_llama" else "acc %"
        print(f"| {name} | dense | 0 | | | {metric} {quality(name, dense):.3f} | 1.000 | 1.000 | 1.00 |")
        for heads in ("whole", "dim"):
            dg = analyse(str(path), heads=heads, calibration=calib)
            base_attn = attention_params(dg, dg.model)
            for ratio in RATIOS[name]:
                for criterion in criteria:
                    plan = attention_plan(dg, criterion, ratio, calib)
                    for refit in refits:
                        start = time.perf_counter()
                        r = prune(dg.model, dg=dg, plan=plan, verify=True, calibration=calib, reconstruct=refit)
                        assert r.verify is not None and r.verify.ok
                        macs = model_stats(r.model, shapes=shapes).macs / base_macs
                        speedup = interleaved_latency(dense, r.model, shapes=shapes, repeat=200).speedup \
                            if args.latency else float("nan")
                        kept = attention_params(dg, r.model) / base_attn
                        print(f"| {name} | {heads} | {ratio} | {criterion} | {'yes' if refit else 'no'} | "
                              f"{quality(name, r.model):.3f} | {kept:.3f} | {macs:.3f} | {speedup:.2f} |"
                              f" <!-- {time.perf_counter() - start:.1f}s -->", flush=True)


if __name__ == "__main__":
    main()
