"""Structured Optimal Brain Surgeon on one layer: the output error of removing input columns, re-fitted.

For a layer Y = X Wᵀ (+ b) with input Gram H = XᵀX (centred when the layer has a bias, so the bias
absorbs mean shifts), removing the column set S and re-fitting the other columns by least squares
raises the squared output error by

    ΔE(S) = tr(W_S · (H⁻¹_SS)⁻¹ · W_Sᵀ)

and the re-fitted weights are W − W_S (H⁻¹_SS)⁻¹ H⁻¹_S:. After the removal, H⁻¹ of the remaining
columns is H⁻¹ − H⁻¹_:S (H⁻¹_SS)⁻¹ H⁻¹_S: (the OBS downdate). `LayerSurgeon` keeps W and H⁻¹ of one
(conv group of a) layer and maps every column to a slot of the group being scored, so a greedy
removal can ask the cost of each slot, remove some, and ask again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def damped_inverse(h: np.ndarray, damp: float) -> np.ndarray:
    """(H + λI)⁻¹ with λ = damp · mean(diag H) (λ = damp when the diagonal is all zero)."""
    d = h.shape[0]
    scale = float(np.mean(np.diag(h))) if d else 0.0
    lam = damp * scale if np.isfinite(scale) and scale > 0 else max(damp, 1e-12)
    reg = h + lam * np.eye(d)
    try:
        return np.asarray(np.linalg.inv(reg))
    except np.linalg.LinAlgError:
        return np.asarray(np.linalg.pinv(reg, hermitian=True))


def _block_inverse(blocks: np.ndarray) -> np.ndarray:
    try:
        return np.asarray(np.linalg.inv(blocks))
    except np.linalg.LinAlgError:
        return np.asarray(np.linalg.pinv(blocks, hermitian=True))


@dataclass
class LayerSurgeon:
    """W [k, d] and H⁻¹ [d, d] of one layer (or conv group); `slots[j]` is the group slot index of
    column j (-1: a column of another group, never removed here). `energy` = tr(W H Wᵀ), the
    layer's output energy, by which costs are divided so that layers of any scale compare."""

    weight: np.ndarray
    hinv: np.ndarray
    slots: np.ndarray
    energy: float

    def __post_init__(self) -> None:
        self.weight = np.array(self.weight, dtype=np.float64)
        self.hinv = np.array(self.hinv, dtype=np.float64)
        self.alive = self.slots >= 0

    def _columns(self, slot_ids: np.ndarray) -> list[np.ndarray]:
        return [np.nonzero(self.alive & (self.slots == s))[0] for s in slot_ids]

    def costs(self, slot_ids: np.ndarray) -> np.ndarray:
        """ΔE / energy of removing each slot alone (0 for slots with no column here)."""
        out = np.zeros(slot_ids.size)
        cols = self._columns(slot_ids)
        sizes = {c.size for c in cols if c.size}
        if not sizes or self.energy <= 0:
            return out
        for b in sorted(sizes):
            which = [i for i, c in enumerate(cols) if c.size == b]
            idx = np.stack([cols[i] for i in which])  # [n, b]
            inv = _block_inverse(self.hinv[idx[:, :, None], idx[:, None, :]])  # [n, b, b]
            ws = self.weight[:, idx]  # [k, n, b]
            out[which] = np.einsum("kna,nab,knb->n", ws, inv, ws)
        return np.maximum(out, 0.0) / self.energy

    def remove(self, slot_ids: np.ndarray) -> None:
        """Remove these slots' columns together and re-fit the others (W and H⁻¹ updated)."""
        cols = self._columns(slot_ids)
        s = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
        if s.size == 0:
            return
        m = _block_inverse(self.hinv[np.ix_(s, s)])
        rows = self.hinv[s, :]  # [|S|, d]
        self.weight -= (self.weight[:, s] @ m) @ rows
        self.hinv -= rows.T @ (m @ rows)
        self.weight[:, s] = 0.0
        self.hinv[s, :] = 0.0
        self.hinv[:, s] = 0.0
        self.alive[s] = False


def greedy_scores(surgeons: list[LayerSurgeon], size: int, *, rounds: int) -> np.ndarray:
    """Scores from a greedy removal in `rounds` rounds: each round removes the ~size/rounds slots
    whose removal (summed over every layer) costs least now, and re-fits before the next round.

    A slot's score is its cost when it was removed, made non-decreasing along the removal order
    (with a tiny tie-breaking ramp), so the lowest k scores are exactly the first k removed.
    """
    if size == 0:
        return np.zeros(0)
    step = max(1, -(-size // max(rounds, 1)))
    removed = np.zeros(size, dtype=bool)
    order: list[int] = []
    raw: list[float] = []
    while not removed.all():
        alive = np.nonzero(~removed)[0]
        cost = np.zeros(alive.size)
        for sg in surgeons:
            cost += sg.costs(alive)
        pick = np.argsort(cost, kind="stable")[:step]
        take = alive[pick]
        order += take.tolist()
        raw += cost[pick].tolist()
        removed[take] = True
        if not removed.all():
            for sg in surgeons:
                sg.remove(take)
    mono = np.maximum.accumulate(np.asarray(raw))
    top = float(mono[-1]) if mono.size else 0.0
    mono = mono + (top * 1e-9 + 1e-300) * np.arange(size)
    scores = np.empty(size)
    scores[np.asarray(order)] = mono
    return scores
