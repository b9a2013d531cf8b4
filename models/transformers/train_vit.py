"""Train a small ViT on scikit-learn's 8x8 digits, on CPU, and export it to ONNX.

Run with the torch venv (NOT the project venv; needs scikit-learn), a few minutes on 2 cores:

    /work/torchvenv/bin/python models/transformers/train_vit.py

Data: the split of ``models/digits/train_digits.py`` (1437 training images, 360 stratified test
images, seed 0); its ``models/digits/test.npz`` and ``calib.npz`` are the test and calibration sets
of this model too (pixel values / 16, [N, 1, 8, 8] float32).

Model: transformers ``ViTForImageClassification``: 2x2 patches (16 tokens + CLS), hidden 64,
4 pre-LN layers, 4 heads, MLP 128, GELU. Trained with the same one-pixel random shifts as the CNN.

Writes ``vit_digits.onnx`` (TorchScript export, opset 17, ``pixel_values`` [batch, 1, 8, 8] ->
``logits`` [batch, 10]) and its ``manifest.json`` entry with the test accuracy in onnxruntime.
Test images are used only for the final measurement, never for choosing anything.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from build import Arch, check_against_torch, export_ts, quiet, record_versions
from build_zoo import normalise_onnx, seed_everything
from transformers import ViTConfig, ViTForImageClassification
from zookit import HERE, describe, session, update_manifest

sys.path.insert(0, str(HERE.parent / "digits"))
from train_digits import augment, load_split  # noqa: E402

SEED = 0
EPOCHS = 150
BATCH = 64
LR = 2e-3
DIGITS = HERE.parent / "digits"
ONNX_PATH = HERE / "vit_digits.onnx"


def vit_config(attn_implementation: str) -> ViTConfig:
    return ViTConfig(attn_implementation=attn_implementation, image_size=8, patch_size=2, num_channels=1, hidden_size=64,
                     num_hidden_layers=4, num_attention_heads=4, intermediate_size=128, num_labels=10,
                     hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.0)


ARCH = Arch("vit", lambda attn: ViTForImageClassification(vit_config(attn)), {"pixel_values": {"fill": "uniform", "low": 0.0, "high": 1.0}},
            {"pixel_values": {0: "batch"}, "logits": {0: "batch"}}, ("logits",), image=(1, 8, 8))  # fmt: skip


def train(model: ViTForImageClassification, x: np.ndarray, y: np.ndarray, epochs: int) -> float:
    gen = torch.Generator().manual_seed(SEED)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.05)
    steps = epochs * ((len(xt) + BATCH - 1) // BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps, pct_start=0.1)
    model.train()
    start = time.perf_counter()
    for epoch in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), BATCH):
            idx = perm[i : i + BATCH]
            logits = model(pixel_values=augment(xt[idx], gen)).logits
            loss = F.cross_entropy(logits, yt[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if epoch % 25 == 0 or epoch == epochs - 1:
            print(f"  epoch {epoch:4d}  loss {loss.item():.3f}  {time.perf_counter() - start:5.0f} s", flush=True)
    model.eval()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=EPOCHS, help=f"training epochs (default {EPOCHS})")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # 2 threads ran far slower on the shared 2-core machine
    x_tr, y_tr, x_te, y_te, _ = load_split()
    test = np.load(DIGITS / "test.npz")
    assert np.array_equal(test["x"], x_te) and np.array_equal(test["y"], y_te), "models/digits/test.npz is another split"

    seed_everything(SEED)
    model = ViTForImageClassification(vit_config("sdpa"))
    n_params = sum(t.numel() for t in model.parameters())
    print(f"model: {n_params} parameters; {args.epochs} epochs", flush=True)
    seconds = train(model, x_tr, y_tr, args.epochs)
    with torch.no_grad():
        acc_torch = float((model(pixel_values=torch.from_numpy(x_te)).logits.argmax(1).numpy() == y_te).mean())

    eager = ViTForImageClassification(vit_config("eager")).eval()
    eager.load_state_dict(model.state_dict())
    quiet(lambda: export_ts(ARCH, eager, ONNX_PATH))
    normalise_onnx(ONNX_PATH)
    worst = check_against_torch(ONNX_PATH, model, ARCH)
    logits = session(ONNX_PATH).run(["logits"], {"pixel_values": x_te})[0]
    acc = float((logits.argmax(1) == y_te).mean())
    print(f"test accuracy: torch {acc_torch:.4f}, onnxruntime {acc:.4f} ({int(round(acc * len(y_te)))}/{len(y_te)}); "
          f"trained in {seconds:.0f} s")

    info = describe(ONNX_PATH, ARCH.feeds, {"batch": 2})
    entry = {
        "name": ONNX_PATH.stem, "arch": "vit", "variant": "trained-torchscript", **info,
        "max_abs_diff_vs_torch": float(f"{worst:.3g}"),
        "quality": {"test_accuracy": round(acc, 4), "test_accuracy_torch": round(acc_torch, 4),
                    "test": "models/digits/test.npz (x -> pixel_values, y labels)",
                    "calibration": "models/digits/calib.npz (input -> pixel_values)",
                    "measured_with": "onnxruntime CPU, graph optimisation off, argmax of logits on all 360 test images"},
        "training": {"parameters": n_params, "epochs": args.epochs, "batch": BATCH, "lr": LR, "seed": SEED,
                     "optimizer": "AdamW, weight decay 0.05, one-cycle schedule, label smoothing 0.05, 1-pixel random shifts",
                     "seconds": round(seconds), "threads": 1, "train_images": len(y_tr)},
        "description": "trained ViT on 8x8 digits (2x2 patches, 4 layers, hidden 64); TorchScript export, eager attention",
    }  # fmt: skip
    update_manifest([entry], [], owner="train_vit.py", info=record_versions())
    print(f"wrote {ONNX_PATH.name} ({ONNX_PATH.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
