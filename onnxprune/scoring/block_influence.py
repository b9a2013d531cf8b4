"""How much each residual block (graph/blocks.py) changes the model, from calibration data.

Two scores, lowest first to drop:

- `bi`: ShortGPT's block influence, BI = 1 − E[cos(x, x + f(x))], the cosine taken over the channel
  axis at every position (token, pixel) of every calibration sample. One ONNX Runtime pass over the
  dense model exposes every block's input, branch and output; the same pass gives each branch's
  per-channel mean (the constant a "mean" fill puts in its place).
- `measured`: the output error with that block alone dropped (with the run's fill, no re-fit),
  ‖y − y_dense‖ / ‖y_dense‖ averaged over the float outputs: one model per block, compared with the
  dense one on the held calibration samples (as measure/curves.py does for channel groups).

`bi` is the default: one pass over the data, where `measured` runs the model once per block (docs/depth.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from onnxprune.calib.collect import stream_tensors
from onnxprune.calib.stats import ChannelStats
from onnxprune.errors import OnnxPruneError
from onnxprune.graph.blocks import Block
from onnxprune.io.types import Feed
from onnxprune.passes.drop_blocks import DropBlocks
from onnxprune.recovery.fidelity import Fidelity, compare_outputs


@dataclass
class BlockStats:
    """Per block (by name): BI, the branch's per-channel mean (broadcastable), and how many
    positions the cosine was averaged over."""

    influence: dict[str, float] = field(default_factory=dict)
    means: dict[str, np.ndarray] = field(default_factory=dict)
    positions: int = 0


def _rows(x: np.ndarray, axis: int) -> np.ndarray:
    """[positions, channels] in float64."""
    moved = np.moveaxis(x, axis, -1)
    return moved.reshape(-1, moved.shape[-1]).astype(np.float64, copy=False)


def _mean_shape(shape: tuple[int, ...], axis: int) -> tuple[int, ...]:
    a = axis % len(shape)
    return tuple(d if i == a else 1 for i, d in enumerate(shape))


def block_stats(model: onnx.ModelProto, blocks: Sequence[Block], batches: Iterable[Feed]) -> BlockStats:
    """BI and branch means of `blocks` in one pass of `model` over `batches`."""
    names = list(dict.fromkeys(t for b in blocks for t in (b.fork, b.branch, b.output)))
    cos_sum = dict.fromkeys((b.name for b in blocks), 0.0)
    counts = dict.fromkeys((b.name for b in blocks), 0)
    means = {b.name: ChannelStats(axis=b.channel_axis) for b in blocks}
    seen: dict[str, np.ndarray] = {}  # a branch value of the last batch: its shape and dtype
    for vals in stream_tensors(model, names, batches):
        for b in blocks:
            x, z = _rows(vals[b.fork], b.channel_axis), _rows(vals[b.output], b.channel_axis)
            norms = np.linalg.norm(x, axis=1) * np.linalg.norm(z, axis=1)
            dots = np.einsum("ij,ij->i", x, z)
            # A position where x or x + f(x) is zero did not change: cosine 1.
            cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 1.0)
            cos_sum[b.name] += float(cos.sum())
            counts[b.name] += int(cos.size)
            means[b.name].update(vals[b.branch])
            seen[b.name] = vals[b.branch]
    if not seen:
        raise OnnxPruneError("calibration data produced no batches")
    out = BlockStats(positions=max(counts.values(), default=0))
    for b in blocks:
        out.influence[b.name] = 1.0 - cos_sum[b.name] / max(counts[b.name], 1)
        y = seen[b.name]
        out.means[b.name] = means[b.name].mean.astype(y.dtype).reshape(_mean_shape(y.shape, b.channel_axis))
    return out


def output_error(fid: dict[str, Fidelity]) -> float:
    """One figure for a model's distance from the dense one: the mean relative error of its float outputs."""
    return float(np.mean([f.rel_error for f in fid.values()])) if fid else 0.0


def measured_influence(model: onnx.ModelProto, blocks: Sequence[Block], fills: dict[str, np.ndarray | None],
                       feeds: Sequence[Feed]) -> dict[str, float]:
    """Output error of `model` with each block alone dropped (its fill from `fills`), on `feeds`."""
    dropped = [DropBlocks([b], fills={b.name: fills.get(b.name)})(model).model for b in blocks]
    fids = compare_outputs(model, dropped, feeds)
    return {b.name: output_error(f) for b, f in zip(blocks, fids, strict=True)}
