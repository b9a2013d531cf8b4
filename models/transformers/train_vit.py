"""Train a small hybrid ViT on scikit-learn's 8x8 digits, on CPU, and export it to ONNX.

Run with the torch venv (NOT the project venv; needs scikit-learn), a few minutes on 2 cores:

    /work/torchvenv/bin/python models/transformers/train_vit.py           # train on all 1437, export
    /work/torchvenv/bin/python models/transformers/train_vit.py --val     # recipe selection only

Data: the split of ``models/digits/train_digits.py`` (1437 training images, 360 stratified test
images, seed 0); its ``models/digits/test.npz`` and ``calib.npz`` are the test and calibration sets
of this model too (pixel values / 16, [N, 1, 8, 8] float32). Every choice (stem, token grid,
epochs, schedule) was made with ``--val``: it holds out a stratified 10 % of the *training* images
(144, seed 0), trains on the other 1293 and prints the validation accuracy, exporting nothing. The
default run trains the chosen recipe on all 1437 training images; the test images are used only
for the final figure.

Model: transformers ``ViTForImageClassification`` whose patch projection is a convolutional stem
(a hybrid ViT): 3x3 conv 1->32, 3x3 conv 32->64 (each BatchNorm + GELU, at 8x8), then a 2x2
stride-2 conv 64->64 (16 tokens + CLS); hidden 64, 4 pre-LN layers, 4 heads, MLP 128, GELU.
Trained with one-pixel random shifts drawn per image (``--aug batch``: one per batch, as the CNN).
Everything after the stem is the stock HF ViT, exported with eager attention (MatMul/Softmax per
head), as before.

Writes ``vit_digits.onnx`` (TorchScript export, opset 17, ``pixel_values`` [batch, 1, 8, 8] ->
``logits`` [batch, 10]; BatchNorm folded into the convs by the exporter) and its
``manifest.json`` entry with the test accuracy in onnxruntime.
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
from sklearn.model_selection import train_test_split
from torch import nn
from transformers import ViTConfig, ViTForImageClassification
from zookit import HERE, describe, session, update_manifest

sys.path.insert(0, str(HERE.parent / "digits"))
from train_digits import augment, load_split  # noqa: E402

SEED = 0
EPOCHS = 300
BATCH = 64
LR = 2e-3
HIDDEN = 64
STEM = (32, 64)  # 3x3 conv widths at 8x8
DIGITS = HERE.parent / "digits"
ONNX_PATH = HERE / "vit_digits.onnx"


def vit_config(attn_implementation: str, *, patch: int) -> ViTConfig:
    return ViTConfig(attn_implementation=attn_implementation, image_size=8, patch_size=patch, num_channels=1, hidden_size=HIDDEN,
                     num_hidden_layers=4, num_attention_heads=4, intermediate_size=128, num_labels=10,
                     hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.0)


class ConvStem(nn.Sequential):
    """3x3 convs at 8x8, then a patch x patch stride-patch conv to the hidden size: one token per patch."""

    def __init__(self, patch: int) -> None:
        layers: list[nn.Module] = []
        cin = 1
        for width in STEM:
            layers += [nn.Conv2d(cin, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.GELU()]
            cin = width
        super().__init__(*layers, nn.Conv2d(cin, HIDDEN, patch, stride=patch))

    @property
    def weight(self) -> torch.Tensor:  # ViTModel.forward reads the projection's weight dtype
        return self[-1].weight


def hybrid_vit(attn_implementation: str, *, patch: int = 2) -> ViTForImageClassification:
    model = ViTForImageClassification(vit_config(attn_implementation, patch=patch))
    model.vit.embeddings.patch_embeddings.projection = ConvStem(patch)
    return model


ARCH = Arch("vit", hybrid_vit, {"pixel_values": {"fill": "uniform", "low": 0.0, "high": 1.0}},
            {"pixel_values": {0: "batch"}, "logits": {0: "batch"}}, ("logits",), image=(1, 8, 8))  # fmt: skip


def shift_each(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random shifts of up to one pixel (zero padding), drawn per image, not per batch as ``augment``."""
    b = len(x)
    padded = F.pad(x, (1, 1, 1, 1))[:, 0]
    dy, dx = torch.randint(0, 3, (2, b, 1), generator=gen)
    rows, cols = dy + torch.arange(8), dx + torch.arange(8)
    return padded[torch.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]][:, None]


AUGMENT = {"batch": augment, "image": shift_each}  # one shift per batch (as the CNN) or per image


def train(model: ViTForImageClassification, x: np.ndarray, y: np.ndarray, epochs: int, aug: str) -> float:
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
            logits = model(pixel_values=AUGMENT[aug](xt[idx], gen)).logits
            loss = F.cross_entropy(logits, yt[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if epoch % 25 == 0 or epoch == epochs - 1:
            print(f"  epoch {epoch:4d}  loss {loss.item():.3f}  {time.perf_counter() - start:5.0f} s", flush=True)
    model.eval()
    return time.perf_counter() - start


def accuracy(model: ViTForImageClassification, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((model(pixel_values=torch.from_numpy(x)).logits.argmax(1).numpy() == y).mean())


def validate(x_tr: np.ndarray, y_tr: np.ndarray, *, epochs: int, patch: int, aug: str) -> None:
    """Recipe selection: train on 90 % of the training images, report accuracy on the other 10 %."""
    x_fit, x_val, y_fit, y_val = train_test_split(x_tr, y_tr, test_size=0.1, stratify=y_tr, random_state=SEED)
    seed_everything(SEED)
    model = hybrid_vit("sdpa", patch=patch)
    seconds = train(model, x_fit, y_fit, epochs, aug)
    acc = accuracy(model, x_val, y_val)
    print(f"validation accuracy {acc:.4f} ({int(round(acc * len(y_val)))}/{len(y_val)}); "
          f"patch {patch}, {epochs} epochs, shifts per {aug}, trained on {len(y_fit)} in {seconds:.0f} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=EPOCHS, help=f"training epochs (default {EPOCHS})")
    p.add_argument("--patch", type=int, default=2, choices=(1, 2), help="token grid: 2 -> 4x4 tokens, 1 -> 8x8")
    p.add_argument("--aug", default="image", choices=tuple(AUGMENT), help="random shifts drawn per image or per batch")
    p.add_argument("--val", action="store_true", help="hold out 10%% of the training images, report, export nothing")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # 2 threads ran far slower on the shared 2-core machine
    x_tr, y_tr, x_te, y_te, _ = load_split()
    if args.val:
        validate(x_tr, y_tr, epochs=args.epochs, patch=args.patch, aug=args.aug)
        return 0
    test = np.load(DIGITS / "test.npz")
    assert np.array_equal(test["x"], x_te) and np.array_equal(test["y"], y_te), "models/digits/test.npz is another split"

    seed_everything(SEED)
    model = hybrid_vit("sdpa", patch=args.patch)
    n_params = sum(t.numel() for t in model.parameters())
    print(f"model: {n_params} parameters; {args.epochs} epochs", flush=True)
    seconds = train(model, x_tr, y_tr, args.epochs, args.aug)
    acc_torch = accuracy(model, x_te, y_te)

    eager = hybrid_vit("eager", patch=args.patch).eval()
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
                     "optimizer": "AdamW, weight decay 0.05, one-cycle schedule, label smoothing 0.05, "
                                  f"1-pixel random shifts per {args.aug}",
                     "seconds": round(seconds), "threads": 1, "train_images": len(y_tr)},
        "description": f"trained hybrid ViT on 8x8 digits (conv stem 1-32-64 at 8x8, {8 // args.patch}x{8 // args.patch} tokens, "
                       "4 layers, hidden 64); TorchScript export, eager attention",
    }  # fmt: skip
    update_manifest([entry], [], owner="train_vit.py", info=record_versions())
    print(f"wrote {ONNX_PATH.name} ({ONNX_PATH.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
