"""Depth: drop whole residual blocks (opt-in, approximate).

The plan stage chooses them: blocks found on the analysed dense model (graph/blocks.py), ranked on
calibration data by block influence (scoring/block_influence.py), the `--drop-blocks N` lowest kept
in `plan.depth` (a replayed plan names its own); a --target-macs/params budget counts them
(`finish_for`). The depth stage, after the width part is applied and verified, drops them from the
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
from onnxprune.io.progress import ProgressFn, step
from onnxprune.passes.drop_blocks import DropBlocks, changed_tensors
from onnxprune.planning.depth import DepthPlan, lowest_blocks
from onnxprune.planning.landing import Finish
from onnxprune.planning.plan import Plan
from onnxprune.recovery.fidelity import Fidelity, compare_outputs
from onnxprune.scoring.block_influence import block_stats, measured_influence

MEASURED_SAMPLES = 32  # held calibration samples the "measured" score compares outputs on


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
    """Whether this run drops blocks: a replayed plan decides (refused with --drop-blocks when it
    drops none), else --drop-blocks."""
    asked = config.depth.blocks
    if plan is None or not replayed:
        return asked > 0
    if plan.depth is None and asked > 0:
        raise OnnxPruneError("--drop-blocks with --plan: the plan file decides which blocks are dropped, and this "
                             "one drops none")
    return plan.depth is not None and bool(plan.depth.blocks)


def _fills(blocks: list[Block], means: dict[str, np.ndarray], fill: str) -> dict[str, np.ndarray | None]:
    return {b.name: means[b.name] if fill == "mean" else None for b in blocks}


def found_blocks(dg: DependencyGraph) -> list[Block]:
    """The removable residual blocks of the analysed model (none: exit 3, with why)."""
    view = dg.analysis.view
    found = find_blocks(dg.model, shape=view.shape, view=view)
    if not found:
        raise NothingToPruneError("nothing to drop: no removable residual block (an Add whose other operand "
                                  "is its branch's own input, with a weighted layer in the branch)")
    return found


def choose_blocks(dg: DependencyGraph, *, config: PruneConfig,
                  progress: ProgressFn | None = None) -> tuple[DepthPlan, dict[str, float], list[str]]:
    """The --drop-blocks lowest-scored blocks of the dense model (the plan stage's depth part), every
    block's score, and notes."""
    d = config.depth
    found = found_blocks(dg)
    source = CalibrationSource.of(config.calibration, dg.model, shapes=config.analysis.shapes)
    with step(progress, "block influence"):
        stats = block_stats(dg.model, found, source.batches())
        influence = stats.influence
        if d.score == "measured":
            influence = measured_influence(dg.model, found, _fills(found, stats.means, d.fill),
                                           source.first(MEASURED_SAMPLES))
    chosen = lowest_blocks(found, influence, d.blocks)
    notes = [] if len(chosen) == d.blocks else [
        f"depth: only {len(chosen)} of the {d.blocks} requested blocks can be dropped together ({len(found)} "
        f"found, some inside others)"]
    return DepthPlan([b.name for b in chosen], d.fill, d.score), influence, notes


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
