"""Hidden width (the residual stream) against FFN width, on the byte-level Llama trained here.

Prunes models/transformers/lm_llama.onnx (4 layers, hidden 96, FFN 256, GQA, RoPE, RMSNorm) to a
share of its parameters (`target_params`, `--round-to 1`), removing only the hidden width, only the
FFN width (exact), or both. The hidden width goes through the RMSNorms two ways: `rmsnorm` slices
channels chosen by the criterion; `rotate` first rotates the residual stream by the PCA of its
calibration activations (SliceGPT's computational invariance, passes/rotate.py) and slices the
weakest directions (the criterion then only ranks the FFN). Attention projections are kept in every
variant (whole heads are benchmarks/heads.py's). Criteria l2 and wanda, on 64 calibration windows
(lm_calib.npz), with and without re-fit. Prints held-out perplexity on the first 64 windows of
lm_heldout.npz, the parameters kept, the oracle's verdict on the exact groups and the fidelity (min
cosine of the logits to the dense model's on 16 calibration windows) the pipeline reports for the
approximate ones. Needs no torch.

    python benchmarks/hidden_width.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "models" / "transformers"))

from zookit import heldout_perplexity  # type: ignore[import-not-found]  # noqa: E402

from onnxprune.api import prune  # noqa: E402
from onnxprune.calib.source import CalibConfig  # noqa: E402
from onnxprune.io.runtime import session  # noqa: E402

TRANSFORMERS = ROOT / "models" / "transformers"
ATTENTION = ("*q_proj*", "*k_proj*", "*v_proj*")
FFN = ("*gate_proj*", "*up_proj*")
# What each variant may remove: (approximate kinds, --keep patterns, whether the criterion ranks anything).
VARIANTS: dict[str, tuple[tuple[str, ...], tuple[str, ...], bool]] = {
    "hidden (rmsnorm)": (("rmsnorm",), (*ATTENTION, *FFN), True),
    "hidden (rotate)": (("rotate",), (*ATTENTION, *FFN), False),
    "ffn": ((), ATTENTION, True),
    "both (rmsnorm)": (("rmsnorm",), ATTENTION, True),
    "both (rotate)": (("rotate",), ATTENTION, True),
}


def perplexity(model: onnx.ModelProto) -> float:
    return heldout_perplexity(session(model))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="wanda without re-fit, 0.8 only.")
    args = ap.parse_args()
    criteria, refits, targets = (("wanda",), (False,), (0.8,)) if args.quick else \
        (("l2", "wanda"), (False, True), (0.8, 0.7))
    warnings.simplefilter("ignore")
    path = TRANSFORMERS / "lm_llama.onnx"
    calib = CalibConfig(path=str(TRANSFORMERS / "lm_calib.npz"), samples=64)
    print(f"| variant | params target | criterion | re-fit | ppl | params kept | verify (exact groups) | "
          f"logit cosine (approx.) |\n|---|---|---|---|---|---|---|---|\n"
          f"| dense | 1.0 | | | {perplexity(onnx.load(str(path))):.3f} | 1.000 | | |", flush=True)
    for target in targets:
        for variant, (approximate, keep, ranked) in VARIANTS.items():
            for criterion in criteria if ranked else criteria[:1]:
                for refit in refits:
                    start = time.perf_counter()
                    r = prune(str(path), recipe="fast", target_params=target, criterion=criterion, calibration=calib,
                              approximate=approximate, keep=keep, reconstruct=refit, verify=True, round_to=1)
                    before, after = r.stats
                    fid = "" if r.fidelity is None else f"{r.fidelity.min_cosine:.4f}"
                    ok = "PASS" if r.verify is not None and r.verify.ok else "FAIL"
                    print(f"| {variant} | {target} | {criterion if ranked else 'PCA'} | {'yes' if refit else 'no'} | "
                          f"{perplexity(r.model):.3f} | {after.params / before.params:.3f} | {ok} | {fid} |"
                          f" <!-- {time.perf_counter() - start:.1f}s -->", flush=True)


if __name__ == "__main__":
    main()
