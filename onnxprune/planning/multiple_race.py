"""Two channel multiples that both land a MAC/parameter budget, timed against each other.

`--round-to auto` on an AVX2 CPU prefers multiples of 16 for a budget (runtime_profile.ChannelMultiple):
on most models they ran faster than the NCHWc block 8 at the same MACs, because 16 leaves the
narrow layers alone. Not on all: a ResNeXt whose grouped convs lose whole groups ran 1.75-1.85x
at 8 and 1.52-1.63x at 16 in three runs (benchmarks/README.md). So where both multiples land the
budget, `prune` can build both plans and time them interleaved in ONNX Runtime (`bench.interleaved_latency`, the median of
per-pair ratios) and keep the preferred one unless the other is more than MARGIN faster: a close
call stays with the preferred multiple, so reruns on a quiet machine agree.

Where the preferred multiple cannot land the budget (16-channel groups can only halve or stay:
mobilenetv3@224 reached 0.545 of the MACs for 0.5), its plan completed with a few blocks of 8
(`allocation.complete_plan`) is timed against the plain 8 plan, which stays the default: against
dense (1 thread, batch 1 / 8, benchmarks/README.md) the completed plan ran 1.74x / 1.64x against
1.58x / 1.58x on mobilenetv3@224 and 1.71x / 1.71x against 1.59x / 1.58x on densenet@224, but no
faster on inception, shufflenetv2, resnet or unet at 224.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import onnx

from onnxprune.errors import OnnxPruneError
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.planning.allocation import TargetResult
from onnxprune.planning.latency_search import LatencyOptions, built, require_sizes

MARGIN = 0.05
Shapes = Mapping[str, tuple[int, ...]]


@dataclass(frozen=True)
class MultipleRace:
    preferred: str  # TargetResult.label of each plan: "16", "8", "16 completed with blocks of 8"
    other: str
    ratio: float  # median over pairs of t(preferred) / t(other): above 1, the other plan ran faster
    chosen: str
    options: LatencyOptions
    completion: bool = False  # the preferred multiple missed: round_to's plan against its completed plan

    def describe(self) -> str:
        how = (f"timed the two plans that land the budget, rounded to {self.preferred} and to {self.other} "
               f"(interleaved in ONNX Runtime, batch {self.options.batch}, threads {self.options.threads or 'default'})")
        if self.chosen == self.preferred:
            return f"{how}: {self.preferred} ran {1 / self.ratio:.2f}x the speed of {self.other}; kept {self.preferred}"
        return (f"{how}: {self.other} ran {self.ratio:.2f}x the speed of {self.preferred} (more than {MARGIN:.0%} "
                f"faster); kept {self.other}")

    def to_json(self) -> dict[str, object]:
        return {"preferred": self.preferred, "other": self.other, "ratio": self.ratio, "chosen": self.chosen,
                "batch": self.options.batch, "threads": self.options.threads, "repeat": self.options.repeat}


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
