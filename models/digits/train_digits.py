"""Train a small residual CNN on scikit-learn's bundled 8x8 digits and export it to ONNX.

Run (about a minute on 2 CPU cores):

    /work/torchvenv2/bin/python models/digits/train_digits.py

Writes, next to this file:
- digits_resnet.onnx  TorchScript export, opset 17, input "input" [batch, 1, 8, 8] float32 in [0, 1],
                      output "logits" [batch, 10]; dynamic batch; BatchNorm folded into the convs.
- digits_resnet.pt    the PyTorch state dict (same architecture as `DigitsResNet` below).
- calib.npz           {"input": 256 unlabeled training images, [256, 1, 8, 8] float32}.
- test.npz            {"x": [360, 1, 8, 8] float32, "y": [360] int64}: held out, never trained on.
- README.md           the measured test accuracy of the ONNX model in ONNX Runtime.

Split (fixed seed 0): 360 test images (stratified), the other 1437 for training; the calibration
set is 256 images drawn from the training part without their labels.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

SEED = 0
HERE = Path(__file__).resolve().parent


class Block(nn.Module):
    """Pre-activation-free basic residual block: conv-bn-relu-conv-bn (+ shortcut), relu."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.short(x))


class DigitsResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.layer1 = nn.Sequential(Block(32, 32), Block(32, 32))          # 8x8
        self.layer2 = nn.Sequential(Block(32, 64, 2), Block(64, 64))       # 4x4
        self.layer3 = nn.Sequential(Block(64, 128, 2))                     # 2x2
        self.fc = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None]  # [1797, 1, 8, 8] in [0, 1]
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=360, stratify=y, random_state=SEED)
    rng = np.random.default_rng(SEED)
    calib = x_tr[rng.choice(len(x_tr), size=256, replace=False)]
    return x_tr, y_tr, x_te, y_te, calib


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random shifts of up to one pixel (zero padding)."""
    padded = F.pad(x, (1, 1, 1, 1))
    dx, dy = (int(v) for v in torch.randint(0, 3, (2,), generator=gen))
    return padded[:, :, dy:dy + 8, dx:dx + 8]


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int) -> None:
    gen = torch.Generator().manual_seed(SEED)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps = epochs * ((len(xt) + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=steps)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            loss = F.cross_entropy(model(augment(xt[idx], gen)), yt[idx], label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()


def ort_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    logits = sess.run(["logits"], {"input": x})[0]
    return float((logits.argmax(1) == y).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args()

    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    x_tr, y_tr, x_te, y_te, calib = load_split()
    model = DigitsResNet()
    t0 = time.perf_counter()
    train(model, x_tr, y_tr, epochs=args.epochs)
    secs = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        torch_acc = float((model(torch.from_numpy(x_te)).argmax(1).numpy() == y_te).mean())

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "digits_resnet.pt")
    onnx_path = out / "digits_resnet.onnx"
    torch.onnx.export(model, (torch.from_numpy(x_te[:1]),), str(onnx_path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    np.savez_compressed(out / "calib.npz", input=calib)
    np.savez_compressed(out / "test.npz", x=x_te, y=y_te)
    acc = ort_accuracy(onnx_path, x_te, y_te)
    print(f"trained {args.epochs} epochs in {secs:.1f}s; test accuracy torch {torch_acc:.4f}, ONNX/ORT {acc:.4f}")
    (out / "README.md").write_text(README.format(acc=acc * 100, n=len(y_te), correct=int(round(acc * len(y_te))),
                                                 epochs=args.epochs, secs=secs, torch=torch.__version__))


README = """# digits_resnet: a small trained residual CNN

A real trained model for tests and demos of onnxprune: scikit-learn's bundled 8x8 handwritten
digits (1797 images, 10 classes), no download needed.

Rebuild (fixed seed, CPU, about a minute on 2 cores; needs torch, onnx, onnxruntime, scikit-learn):

    python3 -m venv /work/torchvenv2
    /work/torchvenv2/bin/pip install torch==2.13.0 onnx==1.23.2 onnxruntime scikit-learn numpy
    /work/torchvenv2/bin/python models/digits/train_digits.py

Last build: torch {torch}, {epochs} epochs in {secs:.0f} s.

**Test accuracy of `digits_resnet.onnx` in ONNX Runtime (CPU, graph optimisation off): {acc:.2f} %
({correct}/{n}).**

| file | contents |
|---|---|
| `digits_resnet.onnx` | opset 17, input `input` [batch, 1, 8, 8] float32 in [0, 1] (pixel/16), output `logits` [batch, 10]; BatchNorm folded into the convs |
| `digits_resnet.pt` | PyTorch state dict of `DigitsResNet` in `train_digits.py` (for Torch-Pruning comparisons) |
| `calib.npz` | `input`: 256 unlabeled training images [256, 1, 8, 8] |
| `test.npz` | `x` [{n}, 1, 8, 8], `y` [{n}] int64: the held-out test split (stratified, seed 0) |

Architecture: stem conv 1->32 (3x3), two basic residual blocks at 32 channels (8x8), a stride-2
block to 64 channels (4x4, 1x1 projection shortcut) and one more 64-channel block, a stride-2 block
to 128 channels (2x2), global average pooling, Linear 128->10.

Measure the accuracy of any (pruned) variant:

```python
import numpy as np, onnxruntime as ort
d = np.load("models/digits/test.npz")
s = ort.InferenceSession("models/digits/digits_resnet.onnx", providers=["CPUExecutionProvider"])
print((s.run(None, {{"input": d["x"]}})[0].argmax(1) == d["y"]).mean())
```
"""


if __name__ == "__main__":
    main()
