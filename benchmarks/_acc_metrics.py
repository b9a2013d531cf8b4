"""Output-fidelity metrics of a pruned model against its dense original.

- `cosine`: of two raw output tensors, flattened; `pooled_cosine` over all images at once.
- YOLOv8 boxes: decode [1, 4+C, N] (cx, cy, w, h, class scores), keep score >= 0.25, class-wise
  NMS at IoU 0.45; pruned boxes match dense boxes greedily (highest IoU first) when IoU >= 0.5
  and the class is the same; F1 from true positives summed over all images.
- YOLOv8 scores: mean |Δ class score| over the (anchor, class) pairs where either model scores
  >= 0.05 (`score_drift`), a continuous companion of the F1, which moves by whole boxes.
- Text maps: IoU of the probability maps binarised at 0.3 (the DB post-process threshold).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CONF = 0.25
NMS_IOU = 0.45
MATCH_IOU = 0.5
TEXT_THRESHOLD = 0.3
DRIFT_FLOOR = 0.05


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    x, y = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    den = float(np.linalg.norm(x) * np.linalg.norm(y))
    return float(x @ y / den) if den > 0 else float(np.array_equal(x, y))


@dataclass(frozen=True)
class Boxes:
    xyxy: np.ndarray     # [K, 4]
    score: np.ndarray    # [K]
    cls: np.ndarray      # [K] int


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of a [K, 4] against every box of b [L, 4] (x1, y1, x2, y2)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms(xyxy: np.ndarray, score: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first."""
    order = np.argsort(-score, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        order = rest[iou_matrix(xyxy[i:i + 1], xyxy[rest])[0] <= iou]
    return np.asarray(keep, dtype=np.int64)


def decode_yolo(output: np.ndarray, *, conf: float = CONF, iou: float = NMS_IOU) -> Boxes:
    """[1, 4+C, N] raw YOLOv8 head -> boxes after the score threshold and class-wise NMS."""
    pred = output[0].astype(np.float64)
    scores = pred[4:]
    cls, best = scores.argmax(0), scores.max(0)
    sel = best >= conf
    cx, cy, w, h = pred[:4, sel]
    xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    cls, best = cls[sel], best[sel]
    kept = [np.flatnonzero(cls == c)[nms(xyxy[cls == c], best[cls == c], iou)] for c in np.unique(cls)]
    idx = np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)
    return Boxes(xyxy[idx], best[idx], cls[idx])


def match_count(dense: Boxes, pruned: Boxes, *, iou: float = MATCH_IOU) -> int:
    """Greedy one-to-one matches (same class, IoU >= iou), highest IoU first."""
    if not len(dense.cls) or not len(pruned.cls):
        return 0
    m = iou_matrix(pruned.xyxy, dense.xyxy)
    m[pruned.cls[:, None] != dense.cls[None, :]] = 0.0
    matched = 0
    while m.size and m.max() >= iou:
        i, j = np.unravel_index(int(m.argmax()), m.shape)
        m[i, :], m[:, j] = 0.0, 0.0
        matched += 1
    return matched


@dataclass(frozen=True)
class BoxAgreement:
    dense: int
    pruned: int
    matched: int

    @property
    def f1(self) -> float:
        total = self.dense + self.pruned
        return 2.0 * self.matched / total if total else 1.0


def box_agreement(dense: Sequence[np.ndarray], pruned: Sequence[np.ndarray]) -> BoxAgreement:
    """Box F1 of pruned vs dense YOLO outputs, true positives summed over all images."""
    nd = npr = nm = 0
    for a, b in zip(dense, pruned, strict=True):
        da, db = decode_yolo(a), decode_yolo(b)
        nd, npr, nm = nd + len(da.cls), npr + len(db.cls), nm + match_count(da, db)
    return BoxAgreement(nd, npr, nm)


def mask_iou(dense: Sequence[np.ndarray], pruned: Sequence[np.ndarray], *,
             threshold: float = TEXT_THRESHOLD) -> float:
    """IoU of binarised probability maps, intersections and unions summed over all images."""
    inter = union = 0
    for a, b in zip(dense, pruned, strict=True):
        ma, mb = a > threshold, b > threshold
        inter += int((ma & mb).sum())
        union += int((ma | mb).sum())
    return inter / union if union else 1.0


def pooled_cosine(dense: Sequence[np.ndarray], pruned: Sequence[np.ndarray]) -> float:
    """Cosine of all outputs concatenated (a per-image mean is unstable where a map is all ~0)."""
    return cosine(np.concatenate([a.ravel() for a in dense]), np.concatenate([b.ravel() for b in pruned]))


def score_drift(dense: Sequence[np.ndarray], pruned: Sequence[np.ndarray], *,
                floor: float = DRIFT_FLOOR) -> tuple[float, int]:
    """Mean |Δ class score| over the (anchor, class) pairs where either model scores >= floor, and their count."""
    total, count = 0.0, 0
    for a, b in zip(dense, pruned, strict=True):
        sa, sb = a[0, 4:].astype(np.float64), b[0, 4:].astype(np.float64)
        live = (sa >= floor) | (sb >= floor)
        total += float(np.abs(sa - sb)[live].sum())
        count += int(live.sum())
    return (total / count if count else 0.0), count
