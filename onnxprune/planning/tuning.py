"""The optional tuning step after planning: two channel multiples that land a budget, timed against each other.

`--round-to auto` on an AVX2 CPU prefers multiples of 16 for a budget (planning/rounding.py:
RoundingPolicy.prefer): on most models they run faster than the NCHWc block 8 at the same MACs,
because 16 leaves the narrow layers alone, but not on all (a ResNeXt losing whole conv groups ran
faster at 8; benchmarks/README.md). So where both multiples land the budget, the two plans are
timed interleaved in ONNX Runtime (`bench.interleaved_latency`, the median of per-pair ratios) and
the preferred one is kept unless the other is more than MARGIN faster: a close call stays with the
preferred multiple, so reruns on a quiet machine agree. Where the preferred multiple cannot land the
budget (16-channel groups can only halve or stay), its plan completed with a few blocks of 8
(`blocks.complete_plan`) is timed the same way against the plain 8 plan, which stays the default.
"""

from __future__ import annotations

import onnx

from onnxprune.errors import OnnxPruneError
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.io.types import Shapes
from onnxprune.measure.bench import LatencyOptions
from onnxprune.planning.blocks import complete_plan
from onnxprune.planning.budget import Budget
from onnxprune.planning.choice import MARGIN, MultipleRace, PlanChoice
from onnxprune.planning.landing import TargetResult
from onnxprune.planning.latency_search import built, require_sizes
from onnxprune.planning.rounding import RoundingPolicy
from onnxprune.planning.strategy import PlanRequest, registered_strategy


def same_channels(dg: DependencyGraph, a: TargetResult, b: TargetResult) -> bool:
    """Whether two plans remove the same channels (nothing to time between them)."""
    return a.plan.removed_roots(dg) == b.plan.removed_roots(dg)


def timeable(model: onnx.ModelProto, shapes: Shapes | None, options: LatencyOptions | None = None) -> str | None:
    """None when the model's latency can be measured as given, else why not."""
    try:
        require_sizes(model, shapes, option="timing the multiples", feed=options.feed if options else None)
    except OnnxPruneError as exc:
        return str(exc)
    return None


def race(dg: DependencyGraph, preferred: TargetResult, other: TargetResult, *,
         options: LatencyOptions | None = None, shapes: Shapes | None = None) -> tuple[TargetResult, MultipleRace]:
    """The faster of two landed plans (see the module doc) and the measurement."""
    from onnxprune.measure.bench import interleaved_latency

    opts = options or LatencyOptions()
    ab = interleaved_latency(built(dg, preferred), built(dg, other), batch=opts.batch, threads=opts.threads,
                             warmup=opts.warmup, repeat=opts.repeat, shapes=shapes, feed=opts.feed)
    switch = ab.speedup > 1 + MARGIN
    pick = other if switch else preferred
    return pick, MultipleRace(preferred.label, other.label, ab.speedup, pick.label, opts,
                              completion=other.completes is not None)


def tune_multiples(req: PlanRequest, budget: Budget, choice: PlanChoice, *, rounding: RoundingPolicy,
                   allocation: str, options: LatencyOptions) -> None:
    """Where a MAC/parameter budget landed with the preferred multiple and the policy's own multiple
    lands it too, or where only the policy's multiple landed and the preferred plan can be completed
    with its blocks: time the two plans and keep the faster (see the module doc). Records the race,
    or why there was none, on `choice`."""
    prefer = rounding.prefer
    res = choice.target
    if budget.kind not in ("macs", "params") or req.curves is not None or prefer in (None, rounding.value) \
            or res is None or not res.ok:
        return
    why = timeable(req.dg.model, req.shapes, options)
    if why is not None:
        choice.race_skipped = why
        return
    assert prefer is not None
    if res.plan.round_to == prefer:
        other = req.target(registered_strategy(allocation), metric=budget.kind, value=budget.value,
                           round_to=rounding.value)
    else:
        other = complete_plan(req.dg, req.scores, choice.tried[prefer], round_to=rounding.value,
                              criterion=req.criterion, shapes=req.shapes, finish=req.finish)
    if not other.ok:
        choice.race_skipped = f"{other.label} does not land the budget"
    elif same_channels(req.dg, res, other):
        choice.race_skipped = f"{other.label} removes the same channels as {res.label}"
    else:
        res, choice.race = race(req.dg, res, other, options=options, shapes=req.shapes)
        choice.plan, choice.target = res.plan, res
