"""Grouped convolutions: `--grouped-conv index` against `whole`, on trained ResNeXt-style nets.

Trains small ResNeXts on scikit-learn's 8x8 digits (same split, calibration and test sets as
models/digits, same training recipe as models/digits/train_digits.py: 40 epochs, seed 0; about 40 s
each on 2 cores), one per entry of NETS (channels per group 4, 8 and 16), exports them to ONNX in a
temporary folder, and prunes them to MACs targets with both modes (criterion l2 and obs, round-to 1
and 8, with and without reconstruction on 128 calibration images, verify on). Prints test accuracy
(%) and MACs kept; "(auto)" marks the mode the default `--grouped-conv auto` picks for that net.
Needs torch (`pip install -e '.[bench]'`).

    python benchmarks/grouped_conv.py [NET ...]
"""

from __future__ import annotations

import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "models" / "digits"))

from onnxprune.api import analyse, prune  # noqa: E402
from onnxprune.calib.source import CalibConfig  # noqa: E402
from onnxprune.measure.model_stats import model_stats  # noqa: E402

TARGETS = (0.5, 0.25, 0.15)
DIGITS = ROOT / "models" / "digits"
# name -> (channels per group of the grouped 3x3 convs, bottleneck widths of the two stages)
NETS = {"resnext4": (4, (64, 128)), "resnext8": (8, (48, 96)), "resnext16": (16, (64, 128))}


def build(path: Path, *, per_group: int, widths: tuple[int, int]) -> float:
    """Train the ResNeXt and export it to `path`; returns the torch test accuracy."""
    import torch
    import torch.nn.functional as F
    import train_digits as T  # type: ignore[import-not-found]
    from torch import nn

    class XBlock(nn.Module):
        """1x1 -> grouped 3x3 (`per_group` channels per group) -> 1x1, plus shortcut."""

        def __init__(self, cin: int, cout: int, stride: int = 1, width: int = 64) -> None:
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
            self.c2 = nn.Conv2d(width, width, 3, stride, 1, groups=width // per_group, bias=False)
            self.b2 = nn.BatchNorm2d(width)
            self.c3, self.b3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
            self.short: nn.Module = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = F.relu(self.b2(self.c2(F.relu(self.b1(self.c1(x))))))
            return F.relu(self.b3(self.c3(y)) + self.short(x))

    class DigitsResNeXt(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
            w1, w2 = widths
            self.layer1 = nn.Sequential(XBlock(32, 64, width=w1), XBlock(64, 64, width=w1))
            self.layer2 = nn.Sequential(XBlock(64, 128, 2, width=w2), XBlock(128, 128, width=w2))
            self.fc = nn.Linear(128, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.layer2(self.layer1(self.stem(x)))
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    torch.manual_seed(0)
    torch.set_num_threads(2)
    x_tr, y_tr, x_te, y_te, _ = T.load_split()
    model = DigitsResNeXt()
    T.train(model, x_tr, y_tr, epochs=40)
    model.eval()
    with torch.no_grad():
        acc = float((model(torch.from_numpy(x_te)).argmax(1).numpy() == y_te).mean())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.from_numpy(x_te[:1]),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return acc


def accuracy(model: onnx.ModelProto, x: np.ndarray, y: np.ndarray) -> float:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return float((sess.run(None, {"input": x})[0].argmax(1) == y).mean())


def main(nets: list[str]) -> None:
    warnings.filterwarnings("ignore")
    unknown = sorted(set(nets) - set(NETS))
    if unknown:
        raise SystemExit(f"unknown net(s) {unknown}; choose from {sorted(NETS)}")
    for name in nets or list(NETS):
        table(name)


def table(name: str) -> None:
    per_group, widths = NETS[name]
    test = np.load(DIGITS / "test.npz")
    calib = CalibConfig(path=DIGITS / "calib.npz", samples=128, batch=64)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"digits_{name}.onnx"
        t0 = time.perf_counter()
        torch_acc = build(path, per_group=per_group, widths=widths)
        dense = onnx.load(str(path))
    print(f"\n{name}: {per_group} channels per group, widths {widths}; trained in {time.perf_counter() - t0:.0f} s; "
          f"dense test accuracy: torch {torch_acc:.2%}, ONNX Runtime {accuracy(dense, test['x'], test['y']):.2%}")
    auto = "whole" if analyse(dense).analysis.whole_convs else "index"
    base = model_stats(dense).macs
    head = ["criterion", "round-to", "grouped-conv", *(f"{t} {r}" for t in TARGETS for r in ("", "+ recon"))]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for crit in ("l2", "obs"):
        for rt in (1, 8):
            for mode in ("index", "whole"):
                dg = analyse(dense, grouped=mode)
                cells = [crit, str(rt), mode + (" (auto)" if mode == auto else "")]
                for t in TARGETS:
                    for recon in (False, True):
                        r = prune(dense, recipe="fast", dg=dg, criterion=crit, target_macs=t, round_to=rt, calibration=calib,
                                  reconstruct=recon, verify=True)
                        kept = model_stats(r.model).macs / base
                        cells.append(f"{accuracy(r.model, test['x'], test['y']):.1%} ({kept:.2f})")
                print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
