"""Train a small byte-level Llama-style LM on Python source code, on CPU, and export it to ONNX.

Run with the torch venv (NOT the project venv); about 10 minutes on 2 cores:

    /work/torchvenv/bin/python models/transformers/train_lm.py

Model: transformers ``LlamaForCausalLM`` over bytes (vocab 256): hidden 96, 4 layers, 4 query heads
sharing 2 KV heads (GQA), RoPE, SwiGLU MLP (intermediate 256), RMSNorm, untied LM head.

Corpus: the ``.py`` files of the standard library of the Python running this script (3.11.7 for the
committed files), without ``site-packages`` and test folders. Split by file: a file is held out when
``crc32(relative path) % 10 == 0``; the model never sees held-out files.

Writes, next to this file:

- ``lm_llama.onnx``: TorchScript export, opset 17, ``input_ids`` [batch, sequence] int64 byte values,
  ``logits`` [batch, sequence, 256].
- ``lm_heldout.npz``: ``input_ids`` [128, 128] int64, windows of the held-out files.
- ``lm_calib.npz``: ``input_ids`` [128, 128] int64, windows of the training files.
- its ``manifest.json`` entry, with the held-out perplexity measured in torch and in onnxruntime.

Perplexity = exp(mean cross-entropy of predicting bytes 2..128 of each held-out row from the bytes before).
"""

from __future__ import annotations

import argparse
import math
import sys
import sysconfig
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from build import Arch, check_against_torch, export_ts, quiet, record_versions
from build_zoo import normalise_onnx, seed_everything
from transformers import LlamaConfig, LlamaForCausalLM
from zookit import HERE, describe, lm_perplexity, session, update_manifest

SEED = 0
SEQ = 128
BATCH = 32
STEPS = 1200
LR = 3e-3
WARMUP = 100
N_EVAL = 128  # held-out and calibration rows
SKIP_DIRS = {"site-packages", "test", "tests", "idle_test"}
ONNX_PATH = HERE / "lm_llama.onnx"


def lm_config(attn_implementation: str) -> LlamaConfig:
    return LlamaConfig(attn_implementation=attn_implementation, vocab_size=256, hidden_size=96, intermediate_size=256,
                       num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=SEQ,
                       tie_word_embeddings=False, use_cache=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)


ARCH = Arch("llama", lambda attn: LlamaForCausalLM(lm_config(attn)), {"input_ids": {"fill": "token_ids", "high": 256}},
            {"input_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch", 1: "sequence"}}, ("logits",), causal=True)


def corpus_files(root: Path) -> list[Path]:
    files = (p for p in root.rglob("*.py") if not SKIP_DIRS & set(p.relative_to(root).parts[:-1]))
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def is_heldout(path: Path, root: Path) -> bool:
    return zlib.crc32(path.relative_to(root).as_posix().encode()) % 10 == 0


def byte_stream(files: list[Path]) -> np.ndarray:
    return np.frombuffer(b"\n".join(p.read_bytes() for p in files), dtype=np.uint8)


def windows(stream: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    starts = np.sort(rng.choice(len(stream) - SEQ, size=n, replace=False))
    return np.stack([stream[s : s + SEQ] for s in starts]).astype(np.int64)


def lr_at(step: int, steps: int) -> float:
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    return LR * 0.5 * (1 + math.cos(math.pi * (step - WARMUP) / max(1, steps - WARMUP)))


def train(model: LlamaForCausalLM, stream: np.ndarray, steps: int) -> float:
    data = torch.from_numpy(stream.astype(np.int64))
    gen = torch.Generator().manual_seed(SEED + 3)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.95), weight_decay=0.1)
    model.train()
    start = time.perf_counter()
    for step in range(steps):
        offsets = torch.randint(0, len(data) - SEQ - 1, (BATCH,), generator=gen)
        batch = torch.stack([data[o : o + SEQ] for o in offsets.tolist()])
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps)
        logits = model(input_ids=batch, use_cache=False).logits
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, 256), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"  step {step:5d}  loss {loss.item():.3f}  {time.perf_counter() - start:6.0f} s", flush=True)
    model.eval()
    return time.perf_counter() - start


@torch.no_grad()
def torch_perplexity(model: LlamaForCausalLM, ids: np.ndarray) -> float:
    x = torch.from_numpy(ids)
    logits = model(input_ids=x, use_cache=False).logits[:, :-1].double()
    return math.exp(F.cross_entropy(logits.reshape(-1, 256), x[:, 1:].reshape(-1)).item())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=STEPS, help=f"training steps (default {STEPS})")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # 2 threads ran 20x slower on the shared 2-core machine
    root = Path(sysconfig.get_paths()["stdlib"])
    files = corpus_files(root)
    held = [f for f in files if is_heldout(f, root)]
    kept = [f for f in files if not is_heldout(f, root)]
    train_stream, held_stream = byte_stream(kept), byte_stream(held)
    rng = np.random.default_rng(SEED)
    heldout, calib = windows(held_stream, N_EVAL, rng), windows(train_stream, N_EVAL, rng)
    print(f"corpus {root}: {len(kept)} training files ({len(train_stream)} bytes), {len(held)} held out ({len(held_stream)} bytes)")

    seed_everything(SEED)
    model = LlamaForCausalLM(lm_config("sdpa"))
    n_params = sum(t.numel() for t in model.parameters())
    print(f"model: {n_params} parameters; {args.steps} steps of {BATCH}x{SEQ} bytes", flush=True)
    seconds = train(model, train_stream, args.steps)
    ppl_torch = torch_perplexity(model, heldout)

    eager = LlamaForCausalLM(lm_config("eager")).eval()
    eager.load_state_dict(model.state_dict())
    quiet(lambda: export_ts(ARCH, eager, ONNX_PATH))
    normalise_onnx(ONNX_PATH)
    worst = check_against_torch(ONNX_PATH, model, ARCH)
    ppl_ort = lm_perplexity(session(ONNX_PATH), heldout)
    assert abs(ppl_ort / ppl_torch - 1) < 1e-4, (ppl_torch, ppl_ort)
    np.savez_compressed(HERE / "lm_heldout.npz", input_ids=heldout)
    np.savez_compressed(HERE / "lm_calib.npz", input_ids=calib)
    print(f"held-out perplexity: torch {ppl_torch:.4f}, onnxruntime {ppl_ort:.4f}; trained in {seconds:.0f} s")

    quality: dict[str, Any] = {
        "heldout_perplexity": round(ppl_ort, 4),
        "heldout_perplexity_torch": round(ppl_torch, 4),
        "heldout_bits_per_byte": round(math.log2(ppl_ort), 4),
        "heldout": "lm_heldout.npz", "calibration": "lm_calib.npz",
        "measured_with": "zookit.lm_perplexity on lm_heldout.npz, onnxruntime CPU, graph optimisation off",
    }  # fmt: skip
    training = {
        "parameters": n_params, "steps": args.steps, "batch": BATCH, "sequence": SEQ, "lr": LR, "warmup": WARMUP,
        "optimizer": "AdamW(0.9, 0.95), weight decay 0.1, cosine schedule, grad clip 1.0", "seed": SEED,
        "seconds": round(seconds), "threads": 1,
        "corpus": f"Python {sys.version.split()[0]} stdlib .py files without site-packages/test dirs",
        "train_files": len(kept), "train_bytes": int(len(train_stream)),
        "heldout_files": len(held), "heldout_bytes": int(len(held_stream)),
        "split": "held out when crc32(path relative to the stdlib folder) % 10 == 0",
    }  # fmt: skip
    info = describe(ONNX_PATH, ARCH.feeds, {"batch": 2, "sequence": SEQ})
    entry = {"name": ONNX_PATH.stem, "arch": "llama", "variant": "trained-torchscript", **info,
             "max_abs_diff_vs_torch": float(f"{worst:.3g}"), "quality": quality, "training": training,
             "description": "trained byte-level Llama LM (GQA 4/2 heads, RoPE, SwiGLU, RMSNorm); TorchScript export, "
                            "eager attention, 4-D causal mask built in the wrapper"}
    update_manifest([entry], [], owner="train_lm.py", info=record_versions())
    print(f"wrote {ONNX_PATH.name} ({ONNX_PATH.stat().st_size} bytes), lm_heldout.npz, lm_calib.npz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
