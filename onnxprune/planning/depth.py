"""The depth unit: which residual blocks (graph/blocks.py) a plan drops, and with which fill.

Dropping a block is approximate by nature: the oracle (verify.py) covers a plan's width part only.
A plan records the dropped blocks by their Add node's name, so it replays on the same model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from onnxprune.errors import OnnxPruneError
from onnxprune.graph.blocks import Block, compatible

FILLS = ("mean", "identity")  # what replaces a dropped branch: its calibration mean, or nothing
SCORES = ("bi", "measured")  # how blocks are ranked (scoring/block_influence.py)


@dataclass
class DepthPlan:
    blocks: list[str]  # the Add nodes of the dropped blocks
    fill: str = "mean"
    score: str | None = None  # how they were chosen (None: given by hand)

    def to_json(self) -> dict[str, object]:
        return {"blocks": list(self.blocks), "fill": self.fill, "score": self.score, "approximate": True}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> DepthPlan:
        blocks, fill = data["blocks"], data.get("fill", "mean")
        if not isinstance(blocks, list) or fill not in FILLS:
            raise ValueError(f"depth: blocks must be a list and fill one of {FILLS}")
        score = data.get("score")
        return cls([str(b) for b in blocks], str(fill), None if score is None else str(score))

    def resolve(self, blocks: Sequence[Block]) -> list[Block]:
        """The named blocks among those found in the model (an error names a missing one)."""
        by_name = {b.name: b for b in blocks}
        missing = [n for n in self.blocks if n not in by_name]
        if missing:
            raise OnnxPruneError(f"plan drops block {missing[0]!r}, which is not a removable residual block of "
                                 f"this model ({len(blocks)} found)")
        chosen = [by_name[n] for n in self.blocks]
        if len(set(self.blocks)) != len(self.blocks) or not compatible(chosen):
            raise OnnxPruneError("plan drops a block twice, or a block inside another one it drops")
        return chosen


def lowest_blocks(blocks: Sequence[Block], scores: Mapping[str, float], n: int) -> list[Block]:
    """The `n` blocks with the lowest score that can be dropped together (a block inside a chosen
    one's branch is skipped), in graph order; fewer when fewer fit."""
    chosen: list[Block] = []
    for b in sorted(blocks, key=lambda b: (scores[b.name], b.name)):
        if len(chosen) == n:
            break
        if not any(b.overlaps(c) for c in chosen):
            chosen.append(b)
    order = {b.name: i for i, b in enumerate(blocks)}
    return sorted(chosen, key=lambda b: order[b.name])
