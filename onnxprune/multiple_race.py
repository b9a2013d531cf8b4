"""Two channel multiples that both land a MAC/parameter budget, timed against each other.

`--round-to auto` on an AVX2 CPU prefers multiples of 16 for a budget (runtime_profile.ChannelMultiple):
on most models they ran faster than the NCHWc block 8 at the same MACs, because 16 leaves the
narrow layers alone. Not on all: a ResNeXt whose grouped convs lose whole groups ran 1.75-1.85x
at 8 and 1.52-1.63x at 16 in three runs (benchmarks/README.md). So where both multiples land the
budget, `prune` can build both plans and time them interleaved in ONNX Runtime (`bench.interleaved_latency`, the median of
per-pair ratios) and keep the preferred one unless the other is more than MARGIN faster: a close
call stays with the preferred multiple, so reruns on a quiet machine agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import onnx

from onnxprune.allocation import TargetResult
from onnxprune.errors import OnnxPruneError
from onnxprune.graph.engine import DependencyGraph
from onnxprune.latency_budget import LatencyOptions, built, require_sizes

MARGIN = 0.05
Shapes = Mapping[str, tuple[int, ...]]


@dataclass(frozen=True)
class MultipleRace:
    preferred: int
    other: int
    ratio: float  # median over pairs of t(preferred) / t(other): above 1, the other multiple ran faster
    chosen: int
    options: LatencyOptions

    def describe(self) -> str:
        how = f"interleaved in ONNX Runtime, batch {self.options.batch}, threads {self.options.threads or 'default'}"
        if self.chosen == self.preferred:
            return (f"timed both multiples that land the budget ({how}): {self.preferred} ran "
                    f"{1 / self.ratio:.2f}x the speed of {self.other}; kept {self.preferred}")
        return (f"timed both multiples that land the budget ({how}): {self.other} ran {self.ratio:.2f}x the "
                f"speed of {self.preferred} (more than {MARGIN:.0%} faster); kept {self.other}")

    def to_json(self) -> dict[str, object]:
        return {"preferred": self.preferred, "other": self.other, "ratio": self.ratio, "chosen": self.chosen,
                "batch": self.options.batch, "threads": self.options.threads, "repeat": self.options.repeat}


def same_channels(dg: DependencyGraph, a: TargetResult, b: TargetResult) -> bool:
    """Whether two plans remove the same channels (nothing to time between them)."""
    return a.plan.removed_roots(dg) == b.plan.removed_roots(dg)


def timeable(model: onnx.ModelProto, shapes: Shapes | None) -> str | None:
    """None when the model's latency can be measured as given, else why not."""
    try:
        require_sizes(model, shapes, option="timing the multiples")
    except OnnxPruneError as exc:
        return str(exc)
    return None


def race(dg: DependencyGraph, preferred: TargetResult, other: TargetResult, *,
         options: LatencyOptions | None = None, shapes: Shapes | None = None) -> tuple[TargetResult, MultipleRace]:
    """The faster of two landed plans (see the module doc) and the measurement."""
    from onnxprune.bench import interleaved_latency

    opts = options or LatencyOptions()
    ab = interleaved_latency(built(dg, preferred), built(dg, other), batch=opts.batch, threads=opts.threads,
                             warmup=opts.warmup, repeat=opts.repeat, shapes=shapes)
    switch = ab.speedup > 1 + MARGIN
    pick = other if switch else preferred
    return pick, MultipleRace(preferred.plan.round_to, other.plan.round_to, ab.speedup, pick.plan.round_to, opts)
