"""Which layers quantization harms most: each INT8 layer's share of the quantized model's output error.

Every layer that is INT8 in the fully quantized model is, in turn, left FP32 alone (all others INT8,
the same activation ranges), and the outputs on held calibration samples are compared with the FP32
model's. The error is `channel_error`, what sensitivity curves measure for pruning (relative L2
error per output channel, averaged: a detector's class scores count next to its pixel coordinates).
The layers whose FP32 precision lowers that error most are the ones worth their FP32 cost:
`quantize(keep_sensitive=N)` takes them in that order, each only if it lowers the error again
together with those already taken (`choose`: errors of single layers do not add up), so the result
is never worse on those samples than all INT8.

It costs one quantizer run and one pass over the held samples per layer (minutes for a detector on
a small CPU), hence opt-in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from onnxprune.calib.source import Feed
from onnxprune.io.progress import ProgressFn, step
from onnxprune.io.runtime import run, session
from onnxprune.measure.curves import OutputSums

DEFAULT_SAMPLES = 16
METRIC = "channel_error"


def _outputs(model: onnx.ModelProto, feeds: Sequence[Feed], *, optimize: bool) -> list[dict[str, np.ndarray]]:
    sess = session(model, optimize=optimize)
    return [run(sess, feed) for feed in feeds]


def output_error(reference: Sequence[Mapping[str, np.ndarray]], got: Sequence[Mapping[str, np.ndarray]]) -> float:
    """channel_error of `got` against `reference`, averaged over the float outputs."""
    sums: dict[str, OutputSums] = {}
    for want, have in zip(reference, got, strict=True):
        for name, w in want.items():
            if w.dtype.kind == "f":
                sums.setdefault(name, OutputSums()).add(w, have[name])
    return float(np.mean([s.channel_error() for s in sums.values()])) if sums else 0.0


class ErrorProbe:
    """The output error of quantized copies of `model` against it, on held feeds. `optimize`: run them
    with ONNX Runtime's fusions (its INT8 kernels) rather than as the Q/DQ graph is written."""

    def __init__(self, model: onnx.ModelProto, feeds: Sequence[Feed], *, optimize: bool) -> None:
        self.feeds, self.optimize = list(feeds), optimize
        self.reference = _outputs(model, self.feeds, optimize=False)
        self.samples = sum(int(next(iter(f.values())).shape[0]) for f in self.feeds if f)

    def __call__(self, quantized: onnx.ModelProto) -> float:
        return output_error(self.reference, _outputs(quantized, self.feeds, optimize=self.optimize))


@dataclass(frozen=True)
class LayerError:
    node: str
    error: float  # output error with this layer FP32, every other candidate INT8


@dataclass(frozen=True)
class LayerScan:
    base: float                     # output error with every candidate INT8
    layers: tuple[LayerError, ...]  # lowest error first: the layer whose quantization harms most
    samples: int

    def harmful(self, n: int) -> list[LayerError]:
        """The n layers whose FP32 precision alone lowers the output error most (only those that lower it)."""
        return [layer for layer in self.layers if layer.error < self.base][:n]

    def rank(self, node: str) -> int:
        return next(i for i, layer in enumerate(self.layers, 1) if layer.node == node)

    def to_dict(self) -> dict[str, Any]:
        return {"metric": METRIC, "samples": self.samples, "all_int8": self.base,
                "layers": [{"node": layer.node, "error_with_it_fp32": layer.error} for layer in self.layers]}


def choose(scan: LayerScan, n: int, error: Callable[[set[str]], float]) -> tuple[list[LayerError], float]:
    """Up to n layers to leave FP32, and the output error with them FP32. The 2n most harmful layers of
    the scan are tried in order; one is taken when `error(taken | {it})` is below the error so far."""
    taken: list[LayerError] = []
    best = scan.base
    for i, layer in enumerate(scan.harmful(2 * n)):
        if len(taken) == n:
            break
        err = layer.error if i == 0 else error({t.node for t in taken} | {layer.node})
        if err < best:
            taken.append(layer)
            best = err
    return taken, best


def scan_layers(error: Callable[[set[str]], float], candidates: Sequence[str], *, samples: int,
                progress: ProgressFn | None = None) -> LayerScan:
    """`error(fp32)`: the output error of the model quantized with the nodes in `fp32` left FP32 and every
    other candidate INT8 (`samples`: how many samples it is measured on, for the record)."""
    with step(progress, "quantization sensitivity", len(candidates) + 1) as advance:
        base = error(set())
        advance(1)
        found = []
        for i, node in enumerate(candidates, 2):
            found.append(LayerError(node, error({node})))
            advance(i)
    return LayerScan(base, tuple(sorted(found, key=lambda layer: layer.error)), samples)


@dataclass(frozen=True)
class Sensitive:
    scan: LayerScan
    taken: list[LayerError]  # the layers to leave FP32, most harmful first
    error: float             # the output error with them FP32

    def to_dict(self) -> dict[str, Any]:
        return {**self.scan.to_dict(), "kept_fp32": [layer.node for layer in self.taken], "result": self.error}


def find_sensitive(build: Callable[[set[str]], onnx.ModelProto], model: onnx.ModelProto, feeds: Sequence[Feed],
                   candidates: Sequence[str], *, n: int, optimize: bool,
                   progress: ProgressFn | None = None) -> Sensitive:
    """Scan `candidates` (`build(fp32)`: the quantized `model` with the nodes in `fp32` left FP32) on
    `feeds` against `model`, and choose up to n of them to leave FP32."""
    probe = ErrorProbe(model, feeds, optimize=optimize)

    def error(fp32: set[str]) -> float:
        return probe(build(fp32))

    scan = scan_layers(error, candidates, samples=probe.samples, progress=progress)
    taken, err = choose(scan, n, error)
    return Sensitive(scan, taken, err)
