"""A latency budget: search the MAC budget whose pruned model runs in `target_ms` in ONNX Runtime.

Latency is not a function of the plan that can be estimated, so it is measured: the dense model
once with `bench.latency` (CPU, graph optimisation on, `warmup` + `repeat` runs, median), then for
each candidate MAC fraction f the plan for `target_macs=f` (whatever allocation is in use: uniform,
global, or sensitivity curves) is applied and timed *against the dense model*, interleaved
(`bench.interleaved_latency`, the median of per-pair ratios): its latency is dense_ms / speedup.
Timed alone, one after the other, two runs of the same model on a shared host differed by up to 30 %
(measured: real YOLOv8n pruned to 0.665 and 0.674 of the MACs, 13.6 and 17.7 ms sequentially, 17.94
and 17.94 ms interleaved), enough to send the search the wrong way. The search starts at
f = target / dense (latency ∝ MACs), keeps a bracket [f_fast, f_slow] around the target and
interpolates inside it (regula falsi, falling back to bisection when a step would barely move),
for at most `max_steps` measurements or until a measurement lands within `TOLERANCE` of the
target. The answer is the measured plan with the most MACs whose latency is at most target + 3 %;
if none is, the fastest one. Machines are noisy: every measured step is reported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx

from onnxprune.errors import OnnxPruneError
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.io.progress import ProgressFn, report
from onnxprune.planning.allocation import TargetResult

TOLERANCE = 0.03
MIN_FRACTION = 0.05
Shapes = Mapping[str, tuple[int, ...]]


@dataclass(frozen=True)
class LatencyOptions:
    """How latency is measured (see onnxprune.measure.bench.latency)."""

    batch: int = 1
    threads: int = 0
    warmup: int = 5
    repeat: int = 30
    max_steps: int = 8
    # The user's samples to time (`batch` rows; calibration.timing_feed); None: random inputs.
    feed: Mapping[str, np.ndarray] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class LatencyStep:
    macs_target: float
    macs_kept: float  # measured (model_stats) fraction of the dense MACs
    ms: float  # dense_ms / speedup
    speedup: float = 0.0  # median of the per-pair dense / pruned ratios (interleaved runs)


@dataclass
class LatencySearch:
    target_ms: float
    dense_ms: float
    options: LatencyOptions
    steps: list[LatencyStep] = field(default_factory=list)
    chosen: TargetResult | None = None  # None: the dense model already meets the target
    achieved_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.achieved_ms <= self.target_ms * (1 + TOLERANCE)

    @property
    def within(self) -> bool:
        """Within 3 % of the target (faster counts only when there was nothing slower to choose)."""
        return abs(self.achieved_ms - self.target_ms) <= TOLERANCE * self.target_ms

    def describe(self) -> str:
        opts = f"batch {self.options.batch}, threads {self.options.threads or 'default'}"
        if self.chosen is None:
            return (f"latency: the dense model already runs in {self.dense_ms:.3f} ms <= target "
                    f"{self.target_ms:.3f} ms ({opts}); nothing pruned")
        head = (f"latency: {self.achieved_ms:.3f} ms (target {self.target_ms:.3f} ms, dense {self.dense_ms:.3f} ms, "
                f"{opts}) at {self.chosen.achieved:.1%} of the MACs after {len(self.steps)} measurements")
        if self.within:
            return head
        if self.ok:
            return head + (" — faster than needed: the next larger MAC budget measured above the target "
                           "(latency moves in steps, or the machine is noisy)")
        return head + (" — target missed: even the smallest MAC budget tried is slower (fixed overhead "
                       "dominates, or ORT's kernels for these channel counts are slower: keep --round-to auto, "
                       "or try 8 or 16)")

    def to_json(self) -> dict[str, object]:
        return {"target_ms": self.target_ms, "dense_ms": self.dense_ms, "achieved_ms": self.achieved_ms,
                "ok": self.ok, "within_tolerance": self.within,
                "macs_kept": None if self.chosen is None else self.chosen.achieved,
                "options": {"batch": self.options.batch, "threads": self.options.threads,
                            "warmup": self.options.warmup, "repeat": self.options.repeat},
                "steps": [{"macs_target": s.macs_target, "macs_kept": s.macs_kept, "ms": s.ms, "speedup": s.speedup}
                          for s in self.steps]}


def _next_fraction(fast: tuple[float, float] | None, slow: tuple[float, float] | None, target: float) -> float:
    """Next MAC fraction inside the bracket: interpolate (f, ms), bisect when that barely moves."""
    if fast is None:
        assert slow is not None
        return max(MIN_FRACTION, slow[0] * 0.7)
    if slow is None:
        return min(1.0, fast[0] * 1.3)
    (f0, t0), (f1, t1) = fast, slow
    f = f0 + (target - t0) * (f1 - f0) / (t1 - t0) if t1 != t0 else (f0 + f1) / 2
    width = f1 - f0
    if not f0 + 0.1 * width <= f <= f1 - 0.1 * width:
        f = (f0 + f1) / 2
    return f


def built(dg: DependencyGraph, res: TargetResult) -> onnx.ModelProto:
    """The pruned model of a plan, shapes annotated, as `prune` writes it (so it is timed that way)."""
    from onnxprune.passes.annotate import AnnotateShapes
    from onnxprune.passes.prune import ApplyPlan

    return AnnotateShapes()(ApplyPlan(dg, res.plan.removed_roots(dg))(dg.model).model).model


def require_sizes(model: onnx.ModelProto, shapes: Shapes | None, *, option: str = "--target-latency",
                  feed: Mapping[str, np.ndarray] | None = None) -> None:
    """A latency in milliseconds means nothing at a placeholder size: every dynamic dim other than
    the batch must come from `shapes` (a named dim also from another input's entry, as
    `inputs.concrete_shapes` sizes it), or from the user's data (`feed`)."""
    from onnxprune.io.inputs import graph_inputs

    if feed is not None:
        return
    specs = graph_inputs(model)
    named = {d for s in specs if shapes and s.name in shapes for d in s.dims if isinstance(d, str)}
    for spec in specs:
        names = [str(d) if isinstance(d, int) else "1" if i == 0 else f"<{d or '?'}>" for i, d in enumerate(spec.dims)]
        free = [n for n, d in zip(names[1:], spec.dims[1:], strict=True) if n.startswith("<") and d not in named]
        if free and not (shapes and spec.name in shapes):
            raise OnnxPruneError(f"{option}: input {spec.name} has dynamic dims ({', '.join(free)}) that set "
                                 f"its latency; give them with --shapes {spec.name}:{'x'.join(names)}")


def latency_search(dg: DependencyGraph, plan_for: Callable[[float], TargetResult], target_ms: float, *,
                   options: LatencyOptions | None = None, shapes: Shapes | None = None,
                   progress: ProgressFn | None = None) -> LatencySearch:
    """Find the MAC budget whose pruned model runs in about `target_ms` (see the module doc).

    plan_for(f): the plan keeping the fraction f of the MACs (e.g. a `target_plan` closure).
    """
    from onnxprune.measure.bench import interleaved_latency, latency

    opts = options or LatencyOptions()
    if not target_ms > 0:
        raise OnnxPruneError(f"--target-latency must be > 0 ms, got {target_ms}")
    require_sizes(dg.model, shapes, feed=opts.feed)

    def speedup(model: onnx.ModelProto) -> float:
        return interleaved_latency(dg.model, model, batch=opts.batch, threads=opts.threads, warmup=opts.warmup,
                                   repeat=opts.repeat, shapes=shapes, feed=opts.feed).speedup

    tick = report(progress)
    tick("latency search", 0, opts.max_steps + 1)
    out = LatencySearch(target_ms, latency(dg.model, batch=opts.batch, threads=opts.threads, warmup=opts.warmup,
                                           repeat=opts.repeat, shapes=shapes, feed=opts.feed).latency.median_ms, opts)
    tick("latency search", 1, opts.max_steps + 1)
    if out.dense_ms <= target_ms:
        out.achieved_ms = out.dense_ms
        tick("latency search", opts.max_steps + 1, opts.max_steps + 1)
        return out
    fast: tuple[float, float] | None = None
    slow: tuple[float, float] | None = (1.0, out.dense_ms)
    tried: list[tuple[TargetResult, float]] = []
    f = max(MIN_FRACTION, min(0.99, target_ms / out.dense_ms))
    for i in range(opts.max_steps):
        res = plan_for(f)
        ratio = speedup(built(dg, res))  # timed as `prune` will write it
        ms = out.dense_ms / max(ratio, 1e-9)
        out.steps.append(LatencyStep(f, res.achieved, ms, ratio))
        tried.append((res, ms))
        tick("latency search", i + 2, opts.max_steps + 1)
        if abs(ms - target_ms) <= TOLERANCE * target_ms:
            break
        if ms <= target_ms:
            fast = (f, ms) if fast is None or f > fast[0] else fast
        else:
            slow = (f, ms) if slow is None or f < slow[0] else slow
        if fast is None and f <= MIN_FRACTION:
            break
        nxt = _next_fraction(fast, slow, target_ms)
        if any(abs(nxt - s.macs_target) < 1e-3 for s in out.steps):
            break
        f = nxt
    tick("latency search", opts.max_steps + 1, opts.max_steps + 1)
    good = [(r, ms) for r, ms in tried if ms <= target_ms * (1 + TOLERANCE)]
    pick = max(good, key=lambda t: t[0].achieved) if good else min(tried, key=lambda t: t[1])
    out.chosen, out.achieved_ms = pick
    return out
