"""How close a model's outputs stay to a reference model's on calibration data (streamed)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from onnxprune.io import runtime
from onnxprune.io.types import Feed


@dataclass(frozen=True)
class Fidelity:
    """Over all elements of one output on the whole calibration set.

    cosine: <a, b> / (‖a‖ ‖b‖); rel_error: ‖a − b‖ / ‖b‖ (b is the reference); agreement: share of
    samples whose argmax over the last axis matches (only for outputs of rank ≥ 2, else None).
    """

    cosine: float
    rel_error: float
    agreement: float | None = None

    def to_json(self) -> dict[str, float | None]:
        return {"cosine": self.cosine, "rel_error": self.rel_error, "agreement": self.agreement}

    def describe(self) -> str:
        agree = "" if self.agreement is None else f", top-1 agreement {self.agreement:.2%}"
        return f"cosine {self.cosine:.4f}, relative error {self.rel_error:.3g}{agree}"


@dataclass
class _Acc:
    ab: float = 0.0
    aa: float = 0.0
    bb: float = 0.0
    dd: float = 0.0
    agree: int = 0
    rows: int = 0
    ranked: bool = True

    def update(self, a: np.ndarray, b: np.ndarray) -> None:
        a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
        self.ab += float(a64 @ b64)
        self.aa += float(a64 @ a64)
        self.bb += float(b64 @ b64)
        self.dd += float(np.sum((a64 - b64) ** 2))
        if a.ndim >= 2 and a.shape[-1] > 1:
            am, bm = a.reshape(-1, a.shape[-1]).argmax(1), b.reshape(-1, b.shape[-1]).argmax(1)
            self.agree += int((am == bm).sum())
            self.rows += int(am.size)
        else:
            self.ranked = False

    def result(self) -> Fidelity:
        cos = self.ab / np.sqrt(self.aa * self.bb) if self.aa > 0 and self.bb > 0 else float(self.aa == self.bb)
        rel = float(np.sqrt(self.dd / self.bb)) if self.bb > 0 else float(np.sqrt(self.dd))
        agree = self.agree / self.rows if self.ranked and self.rows else None
        return Fidelity(float(cos), rel, agree)


def float_outputs(model: onnx.ModelProto) -> list[str]:
    kinds = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16)
    return [o.name for o in model.graph.output if o.type.tensor_type.elem_type in kinds]


def compare_outputs(reference: onnx.ModelProto, models: Sequence[onnx.ModelProto], batches: Iterable[Feed],
                    *, names: Sequence[str] | None = None) -> list[dict[str, Fidelity]]:
    """For each model in `models`, the fidelity of its outputs to `reference`'s (one pass over `batches`)."""
    outs = list(names) if names is not None else float_outputs(reference)
    ref = runtime.session(reference)
    sessions = [runtime.session(m) for m in models]
    accs = [{n: _Acc() for n in outs} for _ in models]
    for feed in batches:
        want = runtime.run(ref, feed, outs)
        for sess, acc in zip(sessions, accs, strict=True):
            got = runtime.run(sess, feed, outs)
            for n in outs:
                acc[n].update(got[n], want[n])
    return [{n: a.result() for n, a in acc.items()} for acc in accs]
