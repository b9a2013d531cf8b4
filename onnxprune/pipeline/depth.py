"""Depth: drop whole residual blocks (opt-in, approximate).

The plan stage chooses them: blocks found on the analysed dense model (graph/blocks.py), ranked on
calibration data by block influence (scoring/block_influence.py), the `--drop-blocks N` lowest kept
in `plan.depth` (a replayed plan names its own); a --target-macs/params budget counts them
(`finish_for`), and with `--drop-blocks auto` splits itself between depth and width (`auto_depth`).
The depth stage, after the width part is applied and verified, drops them from the
width-pruned model with the chosen fill (passes/drop_blocks.py).
The oracle has already checked the width part; this part is measured instead: the outputs of the
model after it against the dense model's, on the calibration data. The re-fit stage then re-fits the
layers after each dropped block (`changed`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from onnxprune.calib.source import CalibrationSource
from onnxprune.config import PruneConfig
from onnxprune.errors import NothingToPruneError, OnnxPruneError
from onnxprune.graph.blocks import Block, find_blocks
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.io.inputs import feed_rows
from onnxprune.io.progress import ProgressFn, step
from onnxprune.measure.model_stats import model_stats
from onnxprune.passes.drop_blocks import DropBlocks, changed_tensors
from onnxprune.passes.prune import ApplyPlan
from onnxprune.passes.reconstruct import reconstruct
from onnxprune.planning.choice import PlanChoice
from onnxprune.planning.depth import DepthPlan, lowest_blocks
from onnxprune.planning.landing import TOLERANCE, Finish
from onnxprune.planning.plan import Plan
from onnxprune.planning.planner import choose_plan
from onnxprune.planning.strategy import PlanRequest
from onnxprune.recovery.fidelity import Fidelity, compare_outputs
from onnxprune.scoring.block_influence import block_stats, measured_influence, output_error

MEASURED_SAMPLES = 32  # held calibration samples the "measured" score compares outputs on
AUTO_SAMPLES = 32  # held calibration samples --drop-blocks auto compares the splits on


@dataclass
class DepthResult:
    found: int  # removable residual blocks in the model
    plan: DepthPlan
    influence: dict[str, float] = field(default_factory=dict)  # every found block's score (empty: replayed)
    fidelity: dict[str, Fidelity] = field(default_factory=dict)  # after width and depth, before the re-fit
    changed: list[str] = field(default_factory=list)  # tensors the re-fit treats as changed

    def describe(self) -> str:
        fid = "; ".join(f"{n}: {f.describe()}" for n, f in self.fidelity.items())
        how = f"lowest {self.plan.score} score" if self.plan.score else "replayed plan"
        return (f"depth (approximate, not covered by the oracle): dropped {len(self.plan.blocks)} of {self.found} "
                f"residual blocks ({self.plan.fill} fill, {how}): {', '.join(self.plan.blocks)}; before the re-fit, "
                f"on the calibration data vs the original: {fid or 'no float outputs'}")

    def to_json(self) -> dict[str, Any]:
        return {**self.plan.to_json(), "found": self.found, "influence": self.influence,
                "fidelity": {n: {"cosine": f.cosine, "rel_error": f.rel_error, "agreement": f.agreement}
                             for n, f in self.fidelity.items()}}


def requested(config: PruneConfig, plan: Plan | None, *, replayed: bool) -> bool:
    """Whether this run drops blocks: before the plan stage, whether it may (--drop-blocks); after, the
    plan's depth part (a replayed plan without one is refused with --drop-blocks)."""
    if plan is None:
        return bool(config.depth.blocks)
    if replayed and plan.depth is None and config.depth.blocks:
        raise OnnxPruneError("--drop-blocks with --plan: the plan file decides which blocks are dropped, and this "
                             "one drops none")
    return plan.depth is not None and bool(plan.depth.blocks)


def _fills(blocks: list[Block], means: dict[str, np.ndarray], fill: str) -> dict[str, np.ndarray | None]:
    return {b.name: means[b.name] if fill == "mean" else None for b in blocks}


def analysed_blocks(dg: DependencyGraph) -> list[Block]:
    """The removable residual blocks of the analysed model (shapes from its probe)."""
    view = dg.analysis.view
    return find_blocks(dg.model, shape=view.shape, view=view)


def found_blocks(dg: DependencyGraph) -> list[Block]:
    """The removable residual blocks of the analysed model (none: exit 3, with why)."""
    found = analysed_blocks(dg)
    if not found:
        raise NothingToPruneError("nothing to drop: no removable residual block (an Add whose other operand "
                                  "is its branch's own input, with a weighted layer in the branch)")
    return found


def score_blocks(dg: DependencyGraph, found: list[Block], *, config: PruneConfig,
                 progress: ProgressFn | None = None) -> dict[str, float]:
    """Every block's score on the dense model (--block-score), lowest first to drop."""
    d = config.depth
    source = CalibrationSource.of(config.calibration, dg.model, shapes=config.analysis.shapes)
    with step(progress, "block influence"):
        stats = block_stats(dg.model, found, source.batches())
        if d.score != "measured":
            return stats.influence
        return measured_influence(dg.model, found, _fills(found, stats.means, d.fill), source.first(MEASURED_SAMPLES))


def choose_blocks(dg: DependencyGraph, *, config: PruneConfig,
                  progress: ProgressFn | None = None) -> tuple[DepthPlan, dict[str, float], list[str]]:
    """The --drop-blocks N lowest-scored blocks of the dense model (the plan stage's depth part), every
    block's score, and notes."""
    d = config.depth
    assert isinstance(d.blocks, int)
    found = found_blocks(dg)
    influence = score_blocks(dg, found, config=config, progress=progress)
    chosen = lowest_blocks(found, influence, d.blocks)
    notes = [] if len(chosen) == d.blocks else [
        f"depth: only {len(chosen)} of the {d.blocks} requested blocks can be dropped together ({len(found)} "
        f"found, some inside others)"]
    return DepthPlan([b.name for b in chosen], d.fill, d.score), influence, notes


@dataclass(frozen=True)
class DepthCandidate:
    """One split the budget tried with --drop-blocks auto: k blocks, and the width part that lands the rest."""

    blocks: int
    achieved: float  # the budget's metric, measured (fraction of the original)
    error: float | None  # relative output error on the held calibration samples (None: missed the budget)

    def describe(self) -> str:
        err = "missed the budget" if self.error is None else f"error {self.error:.3g}"
        return f"{self.blocks} blocks: {err} ({self.achieved:.1%} kept)"


def _refit(model: onnx.ModelProto, *, dg: DependencyGraph, removed: set[int], depth: DepthPlan,
           found: list[Block], config: PruneConfig, fills: dict[str, np.ndarray | None]) -> onnx.ModelProto:
    """The candidate as the run would re-fit it (the reconstruct stage's call)."""
    changed = changed_tensors(depth.resolve(found), fills) if depth.blocks else []
    return reconstruct(model, dg=dg, removed_roots=removed, batches=config.calibration, shapes=config.analysis.shapes,
                       head_floor=config.recovery.head_floor, damp=config.recovery.damp, changed=changed).model


def auto_depth(req: PlanRequest, *, config: PruneConfig, progress: ProgressFn | None = None,
               ) -> tuple[PlanChoice, DepthPlan, dict[str, float], list[str]]:
    """--drop-blocks auto with a MAC / parameter budget: for k = 0, 1, ... of the lowest-scored blocks,
    the width plan that lands the rest of the budget; keep the split whose outputs stay closest to the
    dense model's on the held calibration samples (after the re-fit when the run re-fits). Stops once
    the blocks alone remove more than the budget."""
    dg = req.dg
    found = found_blocks(dg)
    influence = score_blocks(dg, found, config=config, progress=progress)
    source = CalibrationSource.of(config.calibration, dg.model, shapes=config.analysis.shapes)
    held = source.first(AUTO_SAMPLES)
    d, rounding, budget = config.depth, config.rounding.policy(), config.budget
    original = model_stats(dg.model, shapes=config.analysis.shapes)
    tried: list[DepthCandidate] = []
    best: tuple[float, PlanChoice, DepthPlan] | None = None
    fallback: tuple[PlanChoice, DepthPlan] | None = None
    for k in range(len(lowest_blocks(found, influence, len(found))) + 1):
        depth = DepthPlan([b.name for b in lowest_blocks(found, influence, k)], d.fill, d.score)
        req.finish = finish_for(dg, depth) if k else None
        if req.finish is not None:
            alone = model_stats(req.finish(dg.model), shapes=config.analysis.shapes)
            if getattr(alone, budget.kind) < budget.value * (1 - TOLERANCE) * getattr(original, budget.kind):
                break  # the blocks alone remove more than the budget: more blocks would too
        with step(progress, f"budget with {k} blocks dropped"):
            choice = choose_plan(req, budget, allocation=config.scoring.allocation, rounding=rounding)
        target = choice.target
        assert target is not None, "auto is checked to come with a MAC / parameter budget"
        fallback = fallback or (choice, depth)
        if not target.ok:
            tried.append(DepthCandidate(k, target.achieved, None))
            continue
        removed = choice.plan.removed_roots(dg)
        model = ApplyPlan(dg, removed)(dg.model).model if removed else dg.model
        chosen = depth.resolve(found)
        fills = _fills(chosen, block_stats(model, chosen, held).means if k and d.fill == "mean" else {}, d.fill)
        if k:
            model = DropBlocks(chosen, fills=fills)(model).model
        if config.reconstructs:
            with step(progress, f"re-fit with {k} blocks dropped"):
                model = _refit(model, dg=dg, removed=removed, depth=depth, found=found, config=config, fills=fills)
        err = output_error(compare_outputs(dg.model, [model], held)[0])
        tried.append(DepthCandidate(k, target.achieved, err))
        if best is None or err < best[0]:
            best = (err, choice, depth)
    assert fallback is not None
    choice, depth = (best[1], best[2]) if best is not None else fallback
    req.finish = finish_for(dg, depth) if depth.blocks else None
    note = (f"depth auto: {len(depth.blocks)} blocks dropped and the width part landing the rest of the budget "
            f"kept the outputs closest on {sum(feed_rows(f) for f in held)} calibration samples "
            f"({'after' if config.reconstructs else 'without'} the re-fit); tried "
            + "; ".join(c.describe() for c in tried))
    return choice, depth, influence, [note]


def finish_for(dg: DependencyGraph, depth: DepthPlan) -> Finish:
    """What the depth stage will do to the width-pruned model, for a budget to count: the blocks
    dropped (identity: a mean fill's constants weigh one value per channel, left out)."""
    blocks = depth.resolve(found_blocks(dg))
    identity: dict[str, np.ndarray | None] = {b.name: None for b in blocks}
    return lambda model: DropBlocks(blocks, fills=identity)(model).model


def drop_depth(model: onnx.ModelProto, *, dg: DependencyGraph, config: PruneConfig, depth: DepthPlan,
               influence: dict[str, float] | None = None,
               progress: ProgressFn | None = None) -> tuple[onnx.ModelProto, DepthResult]:
    """`model` (the width-pruned form of `dg.model`) with the blocks of `depth` dropped, and what was
    done (`influence`: the scores the blocks were chosen by, None for a replayed plan)."""
    found = found_blocks(dg)
    chosen = depth.resolve(found)
    source = CalibrationSource.of(config.calibration, dg.model, shapes=config.analysis.shapes)
    # The fill is the branch's mean in the model it goes into (the width part may have narrowed it).
    means = block_stats(model, chosen, source.batches()).means if depth.fill == "mean" else {}
    fills = _fills(chosen, means, depth.fill)
    dropped = DropBlocks(chosen, fills=fills)(model).model
    result = DepthResult(len(found), depth, influence or {}, changed=changed_tensors(chosen, fills))
    with step(progress, "depth fidelity"):
        result.fidelity = compare_outputs(dg.model, [dropped], source.batches())[0]
    return dropped, result
