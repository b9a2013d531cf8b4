"""Errors in what the task reads (`measure.output_kinds`), accumulated over calibration batches.

- threshold (maps read at a threshold): the RMS probability change weighted toward the decision,
  w = 4 · max(p(1 − p), q(1 − q)) for dense p and pruned q (1 at 0.5, ~0 where both are saturated):
  sqrt(Σ w (q − p)² / Σ w). A change across the threshold counts fully, a change among background
  scores hardly; taking the larger of both weights catches a background score that rises (a false
  positive). Only a mixed output's sigmoid channels count.
- argmax (sequences, classifiers): the fraction of rows whose argmax changes anywhere: for a sequence
  [N, T, C] a whole line, as the task reads it (one wrong position spoils the line).
- margin: a graded argmax (allocation needs a signal before anything flips). At each position the
  dense winner c keeps, in the pruned output, the margin m' = z'_c − max_{j≠c} z'_j (z: log-probabilities
  of a softmax, else logits); d = max(0, σ(−m') − σ(−m)) (0 unchanged, over 1/2 once flipped), and a
  line's error is 1 − Π_t (1 − d_t): positions compound over a line as the task's errors do.
"""

from __future__ import annotations

import numpy as np

from onnxprune.measure.output_kinds import OutputKind

LOG_FLOOR = 1e-30  # probabilities below this are taken as this before the log


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))


def margins(z: np.ndarray, winner: np.ndarray, axis: int) -> np.ndarray:
    """z[winner] − the largest other z, along `axis` (winner: indices with that axis removed)."""
    zc = np.take_along_axis(z, np.expand_dims(winner, axis), axis=axis)
    others = z.copy()
    np.put_along_axis(others, np.expand_dims(winner, axis), -np.inf, axis=axis)
    return np.squeeze(zc, axis) - others.max(axis=axis)


class TaskSums:
    """Running sums of the task error of one output against its dense reference."""

    def __init__(self, kind: OutputKind) -> None:
        self.kind = kind
        self.weighted = self.weight = 0.0  # threshold: Σ w (q − p)², Σ w
        self.rows = 0  # argmax / margin: rows (lines) seen
        self.flipped = 0  # rows whose argmax changed
        self.soft = 0.0  # Σ over rows of the graded line error

    def add(self, want: np.ndarray, got: np.ndarray) -> None:
        if self.kind.kind == "threshold":
            self._add_threshold(want, got)
        elif self.kind.kind in ("sequence", "classifier"):
            self._add_argmax(want, got)

    def _add_threshold(self, want: np.ndarray, got: np.ndarray) -> None:
        p, q = want.astype(np.float64), got.astype(np.float64)
        if self.kind.channels is not None:
            p, q = p[:, self.kind.channels], q[:, self.kind.channels]
        w = 4.0 * np.maximum(p * (1.0 - p), q * (1.0 - q))
        d = q - p
        self.weighted += float(np.sum(w * d * d))
        self.weight += float(np.sum(w))

    def _add_argmax(self, want: np.ndarray, got: np.ndarray) -> None:
        a, b = want.astype(np.float64), got.astype(np.float64)
        if self.kind.probabilities:
            a, b = np.log(np.maximum(a, LOG_FLOOR)), np.log(np.maximum(b, LOG_FLOOR))
        axis = self.kind.axis % a.ndim
        winner = np.argmax(a, axis=axis)
        flips = (np.argmax(b, axis=axis) != winner).reshape(a.shape[0], -1)
        d = np.maximum(0.0, _sigmoid(-margins(b, winner, axis)) - _sigmoid(-margins(a, winner, axis)))
        keep = np.prod(1.0 - np.minimum(d, 1.0).reshape(a.shape[0], -1), axis=1)
        self.rows += a.shape[0]
        self.flipped += int(flips.any(axis=1).sum())
        self.soft += float(np.sum(1.0 - keep))

    def threshold(self) -> float | None:
        if self.kind.kind != "threshold":
            return None
        return float(np.sqrt(self.weighted / self.weight)) if self.weight > 0 else 0.0

    def argmax(self) -> float | None:
        return self.flipped / self.rows if self.rows else None

    def margin(self) -> float | None:
        return self.soft / self.rows if self.rows else None
