"""What was decided for every channel group, for `--report`: removed channels, criterion, score
summary, the curves' predicted error, the oracle's verdict and the re-fit errors of its layers.

`group_decisions(dg, plan, ...)` returns one JSON-ready dict per group of `dg` (blocked groups
too, with their reasons):

    {"id", "sources", "channels", "slots", "channels_per_slot", "kind", "prunable", "blocked": [reasons],
     "approximate": [reasons], "removed", "kept", "ratio", "criterion",
     "scores": {"min", "mean", "max", "max_removed", "min_kept"} | null,
     "predicted_error": e | null          (sensitivity curves: the group's error at its count),
     "verify": "pass" | "fail" | "not covered (approximate)" | "not run" | "unchanged",
     "reconstruction": [{"node", "rel_error_before", "rel_error_after", "fitted", "note"}]}

A layer's re-fit belongs to a group when the layer produces the group's channels or consumes them.

"channels", "removed" and "kept" count channels of one producer; a slot (the unit a plan removes)
holds "channels_per_slot" of them (several where coupling ties channels together, e.g. a whole
conv group). "kind" is the unit a slot is: "channel", an attention "head" (a KV group with GQA), or
"head_dim" (one index of every head).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from onnxprune.graph.dependency import DependencyGraph
from onnxprune.graph.groups import Group
from onnxprune.graph.tracks import map_roots
from onnxprune.passes.reconstruct import ReconstructResult
from onnxprune.planning.choice import PlanChoice
from onnxprune.planning.plan import Plan
from onnxprune.verify import VerifyResult


def consumers_by_group(dg: DependencyGraph) -> dict[int, set[str]]:
    """Group id -> names of the nodes where its channels enter a channel-mixing consumer."""
    owner: dict[int, int] = {}
    for g in dg.groups:
        for r in g.slots.tolist():
            owner[int(r)] = g.id
    out: dict[int, set[str]] = {}
    for e in dg.analysis.consume_edges:
        roots = map_roots(dg.analysis.roots, e.track.ids)
        for r in np.unique(roots[roots >= 0]).tolist():
            if int(r) in owner:
                out.setdefault(owner[int(r)], set()).add(e.node)
    return out


def _scores(scores: np.ndarray | None, removed: list[int]) -> dict[str, float] | None:
    if scores is None or scores.size == 0:
        return None
    mask = np.zeros(scores.size, dtype=bool)
    mask[removed] = True
    return {"min": float(scores.min()), "mean": float(scores.mean()), "max": float(scores.max()),
            "max_removed": float(scores[mask].max()) if mask.any() else None,  # type: ignore[dict-item]
            "min_kept": float(scores[~mask].min()) if (~mask).any() else None}  # type: ignore[dict-item]


def _verify(verify: VerifyResult | None, g: Group, removed: int) -> str:
    if removed == 0:
        return "unchanged"
    if verify is None:
        return "not run"
    if g.approximate:
        return "not covered (approximate)"
    return "pass" if verify.ok else "fail"


def group_decisions(dg: DependencyGraph, plan: Plan, *, choice: PlanChoice | None, verify: VerifyResult | None,
                    reconstruction: ReconstructResult | None) -> list[dict[str, Any]]:
    consumers = consumers_by_group(dg)
    layers = reconstruction.layers if reconstruction is not None else []
    counts = choice.allocation.counts if choice is not None and choice.allocation is not None else {}
    curves = {c.group: c for c in choice.sensitivity.curves} if choice is not None and choice.sensitivity else {}
    error = choice.allocation.error if choice is not None and choice.allocation is not None else "channel_error"
    out: list[dict[str, Any]] = []
    for g in dg.groups:
        idx = sorted(plan.removals.get(g.id, []))
        nodes = set(g.sources) | consumers.get(g.id, set())
        out.append({
            "id": g.id, "sources": list(g.sources), "channels": g.channels, "slots": g.size,
            "channels_per_slot": g.width, "kind": g.kind, "prunable": g.prunable,
            "blocked": list(g.blocked), "approximate": list(g.approximate),
            "removed": len(idx) * g.width, "kept": (g.size - len(idx)) * g.width,
            "ratio": len(idx) / g.size if g.size else 0.0,
            "criterion": plan.criterion,
            "scores": _scores(choice.scores.get(g.id) if choice is not None else None, idx),
            "predicted_error": curves[g.id].error_at(len(idx), error) if g.id in curves and g.id in counts else None,
            "verify": _verify(verify, g, len(idx)),
            "reconstruction": [{"node": lf.node, "rel_error_before": lf.rel_error_before,
                                "rel_error_after": lf.rel_error_after, "fitted": lf.fitted, "note": lf.note}
                               for lf in layers if lf.node in nodes],
        })
    return out

