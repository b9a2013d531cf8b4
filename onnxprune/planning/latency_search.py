"""A latency budget: search the MAC budget whose pruned model runs in `target_ms` in ONNX Runtime.

Latency is not a function of the plan that can be estimated, so it is measured: the dense model
once with `bench.latency` (CPU, graph optimisation on, `warmup` + `repeat` runs, median), then for
each candidate MAC fraction f the plan for `target_macs=f` (whatever allocation is in use: uniform,
global, or sensitivity curves) is applied and timed *against the dense model*, interleaved
(`bench.interleaved_latency`, the median of per-pair ratios): its latency is dense_ms / speedup.
Timed one after the other, two runs of the same model on a shared host can differ by tens of
percent, enough to send the search the wrong way; interleaved ratios agree. The search starts at
f = target / dense (latency ∝ MACs), keeps a bracket [f_fast, f_slow] around the target and
interpolates inside it (regula falsi, falling back to bisection when a step would barely move),
for at most `max_steps` measurements or until a measurement lands within `TOLERANCE` of the
target. The answer is the measured plan with the most MACs whose latency is at most target + 3 %;
if none is, the fastest one. Machines are noisy: every measured step is reported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import onnx

from onnxprune.errors import OnnxPruneError
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.io.progress import ProgressFn, report
from onnxprune.io.types import Shapes
from onnxprune.measure.bench import LatencyOptions
from onnxprune.planning.budget import landed_target, register_budget
from onnxprune.planning.choice import LatencySearch, LatencyStep, PlanChoice
from onnxprune.planning.landing import TOLERANCE, TargetResult
from onnxprune.planning.plan import Plan
from onnxprune.planning.rounding import RoundingPolicy
from onnxprune.planning.strategy import PlanRequest, Strategy

MIN_FRACTION = 0.05


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


class LatencyBudget:
    """`--target-latency MS`: the MAC budget is searched with measurements (see the module doc); each
    step plans its MAC fraction with the strategy, at the first multiple that lands it."""

    name = "latency"

    def check(self, value: float) -> None:
        if not value > 0:
            raise OnnxPruneError(f"--target-latency must be > 0 ms, got {value}")

    def describe(self, value: float) -> str:
        return f"latency: {value:g} ms in ONNX Runtime"

    def choose(self, req: PlanRequest, strategy: Strategy, rounding: RoundingPolicy, value: float) -> PlanChoice:
        search = latency_search(req.dg, lambda f: landed_target(req, strategy, rounding, metric="macs", value=f)[0],
                                value, options=req.latency, shapes=req.shapes, progress=req.progress)
        plan = search.chosen.plan if search.chosen is not None else Plan(criterion=req.criterion, round_to=rounding.value)
        return PlanChoice(plan, req.scores, search.chosen, latency=search)


register_budget(LatencyBudget())
