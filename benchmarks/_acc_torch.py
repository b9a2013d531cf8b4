"""Torch-Pruning on the same digits model (PyTorch weights), no fine-tuning, at the same MACs targets.

`tp.pruner.MagnitudePruner` with `MagnitudeImportance(p=2)` and with `BNScaleImportance` (the model
has BatchNorm), the classifier ignored, `pruning_ratio` bisected until the MACs counted by
`tp.utils.count_ops_and_params` are within MACS_TOL of the target. torch is imported lazily: it is
only a benchmark dependency (`pip install 'onnxprune[bench]'`).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import numpy as np
from _acc_common import BENCH_EXTRA, DIGITS, Digits, acc_cell
from _acc_prune import bisect_ratio


def torch_modules() -> tuple[ModuleType, ModuleType] | None:
    """(torch, torch_pruning), or None when either is not importable."""
    try:
        torch = importlib.import_module("torch")
        tp = importlib.import_module("torch_pruning")
    except ImportError:
        return None
    return torch, tp


def tp_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch-pruning")
    except PackageNotFoundError:
        return "?"


def digits_class() -> Any:
    """`DigitsResNet` from models/digits/train_digits.py (imported, not copied)."""
    sys.path.insert(0, str(DIGITS))
    try:
        return importlib.import_module("train_digits").DigitsResNet
    finally:
        sys.path.remove(str(DIGITS))


def importances(tp: ModuleType) -> dict[str, Callable[[], Any]]:
    return {"MagnitudeImportance(p=2)": lambda: tp.importance.MagnitudeImportance(p=2),
            "BNScaleImportance": lambda: tp.importance.BNScaleImportance()}


class TorchDigits:
    def __init__(self, torch: ModuleType, tp: ModuleType, d: Digits) -> None:
        self.torch, self.tp, self.d = torch, tp, d
        self.cls = digits_class()
        self.state = torch.load(str(DIGITS / "digits_resnet.pt"), map_location="cpu", weights_only=True)
        self.example = torch.from_numpy(d.x[:1])
        self.dense_macs = self.macs(self.fresh())

    def fresh(self) -> Any:
        model = self.cls()
        model.load_state_dict(self.state)
        return model.eval()

    def macs(self, model: Any) -> float:
        return float(self.tp.utils.count_ops_and_params(model, self.example)[0])

    def pruned(self, make_importance: Callable[[], Any], ratio: float) -> Any:
        model = self.fresh()
        if ratio > 0:
            pruner = self.tp.pruner.MagnitudePruner(model, self.example, make_importance(), pruning_ratio=ratio,
                                                    ignored_layers=[model.fc])
            pruner.step()
        return model.eval()

    def accuracy(self, model: Any) -> float:
        with self.torch.no_grad():
            logits = model(self.torch.from_numpy(self.d.x)).numpy()
        return float((np.argmax(logits, 1) == self.d.y).mean())

    def at_macs(self, make_importance: Callable[[], Any], target: float) -> tuple[float, float, float]:
        """(accuracy, MACs kept, ratio) at the bisected pruning_ratio."""
        def kept_at(r: float) -> float:
            return self.macs(self.pruned(make_importance, r)) / self.dense_macs

        ratio = bisect_ratio(target, kept_at)
        model = self.pruned(make_importance, ratio)
        return self.accuracy(model), self.macs(model) / self.dense_macs, ratio


def torch_rows(d: Digits, targets: Sequence[float]) -> list[list[str]]:
    mods = torch_modules()
    if mods is None:
        return [[f"Torch-Pruning {name}", "no", "uniform", *([BENCH_EXTRA] * len(targets))]
                for name in ("MagnitudeImportance(p=2)", "BNScaleImportance")]
    torch, tp = mods
    torch.set_num_threads(2)
    bench = TorchDigits(torch, tp, d)
    rows: list[list[str]] = []
    for name, make in importances(tp).items():
        cells = [f"Torch-Pruning {tp_version()} {name}", "no", "uniform"]
        for t in targets:
            acc, kept, ratio = bench.at_macs(make, t)
            cells.append(acc_cell(acc, kept))
            print(f"  TP {name} target {t}: {cells[-1]} [pruning_ratio={ratio:.3f}]", flush=True)
        rows.append(cells)
    return rows


def torch_dense_accuracy(d: Digits) -> float | None:
    mods = torch_modules()
    if mods is None:
        return None
    bench = TorchDigits(*mods, d)
    return bench.accuracy(bench.fresh())
