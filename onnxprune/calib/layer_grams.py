"""Per-layer input Gram accumulators: how X (and Y) rows are cut out of Conv/Gemm/MatMul tensors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx

from onnxprune.calib.convtranspose import TransposeGeometry, padded_input, transpose_geometry, transpose_rows
from onnxprune.calib.im2col import (
    ConvGeometry,
    conv_geometry,
    im2col_rows,
    output_hw,
    patch_view,
    sample_positions,
)
from onnxprune.calib.stats import GramStats
from onnxprune.errors import OnnxPruneError

ROW_CHUNK = 2048  # rows materialised at once inside one batch
RowWeight = Callable[[np.ndarray], np.ndarray]  # target rows Y [rows, k] -> weights [rows]
RowMaker = Callable[[np.ndarray, np.ndarray, np.ndarray], list[np.ndarray]]  # (n, h, w) positions -> X per group


def node_key(node: onnx.NodeProto) -> str:
    """Nodes are keyed by name, or by their first output when unnamed."""
    return node.name or node.output[0]


def _attr_i(node: onnx.NodeProto, name: str, default: int = 0) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), default)


@dataclass
class LayerGram:
    """XᵀX of one layer's data input; for Conv one GramStats per group (columns in W.reshape order).

    Column order: Conv -> (c, i, j) of W[K, C/g, kh, kw] for the group; ConvTranspose -> (c, i, j) of
    W[C, K/g, kh, kw] with c within the group (onnxprune.calib.convtranspose); Gemm/MatMul -> the reduction index.
    `target` names the tensor whose rows gave XᵀY (None: no XᵀY). `row_weight` (with a target)
    weights each row by a function of its full target row, across all groups. `holdout` (when asked
    for): the same sums over the rows of every second calibration sample only, so that a fit can be
    judged on samples it did not see (`groups` minus `holdout` is the other fold); `finish` completes it.
    """

    node: str
    op_type: str
    input: str
    groups: list[GramStats]
    target: str | None = None
    geometry: ConvGeometry | TransposeGeometry | None = None
    max_rows: int | None = None
    rng: np.random.Generator = field(default_factory=np.random.default_rng, repr=False)
    row_weight: RowWeight | None = None
    holdout: list[GramStats] | None = None
    seen: int = 0  # samples accumulated so far (a row's sample decides its fold)

    def finish(self) -> None:
        """After the last batch: `groups` hold the first fold only until now; make them the whole."""
        if self.holdout is not None:
            self.groups = [g.combined(h) for g, h in zip(self.groups, self.holdout, strict=True)]

    @property
    def gram(self) -> GramStats:
        if len(self.groups) != 1:
            raise ValueError(f"{self.node}: grouped conv has {len(self.groups)} Grams; use .groups")
        return self.groups[0]

    def update(self, x: np.ndarray, y: np.ndarray | None = None, *, samples: int | None = None) -> None:
        """x: the layer's input (Conv: [N, C, ...]) or, for Gemm/MatMul, its rows in sample order;
        samples: how many samples those rows come from (default: the leading dim of x)."""
        if isinstance(self.geometry, TransposeGeometry):
            self._update_transpose(x, y, self.geometry)
        elif self.geometry is not None:
            self._update_conv(x, y, self.geometry)
        else:
            self._update_rows(x, y, x.shape[0] if samples is None else samples)
        self.seen += x.shape[0] if samples is None else samples

    def _add(self, g: int, x: np.ndarray, y: np.ndarray | None, weight: float, rw: np.ndarray | None,
             sample: np.ndarray) -> None:
        """Rows of group g from the given samples (indices within the batch), each to its fold."""
        if self.holdout is None:
            self.groups[g].update(x, y, weight=weight, row_weights=rw)
            return
        held = (self.seen + sample) % 2 == 1
        for stats, rows in ((self.groups[g], ~held), (self.holdout[g], held)):
            if rows.any():
                stats.update(x[rows], None if y is None else y[rows], weight=weight,
                             row_weights=None if rw is None else rw[rows])

    def _update_rows(self, x: np.ndarray, y: np.ndarray | None, samples: int) -> None:
        total = x.shape[0]
        per = total // samples if samples > 0 and total % samples == 0 else 1  # rows per sample
        idx = np.arange(total)
        weight = 1.0
        if self.max_rows is not None and total > self.max_rows:
            idx = np.sort(self.rng.choice(total, size=self.max_rows, replace=False))
            x, y = x[idx], (y[idx] if y is not None else None)
            weight = total / self.max_rows
        for s in range(0, x.shape[0], ROW_CHUNK):
            ys = None if y is None else y[s:s + ROW_CHUNK]
            self._add(0, x[s:s + ROW_CHUNK], ys, weight, self._row_weights(ys), idx[s:s + ROW_CHUNK] // per)

    def _update_conv(self, x: np.ndarray, y: np.ndarray | None, geo: ConvGeometry) -> None:
        ho, wo = output_hw(x.shape, geo)
        view = patch_view(x, geo)
        self._update_positions(x.shape[0], (ho, wo), y, geo.group,
                               lambda ni, hi, wi: im2col_rows(view, ni, hi, wi, geo.group))

    def _update_transpose(self, x: np.ndarray, y: np.ndarray | None, geo: TransposeGeometry) -> None:
        hw = (1, x.shape[2]) if x.ndim == 3 else (x.shape[2], x.shape[3])
        pads = geo.resolve_pads(hw)
        xp = padded_input(x)
        self._update_positions(x.shape[0], geo.output_hw(hw), y, geo.group,
                               lambda ni, hi, wi: transpose_rows(xp, ni, hi, wi, geo, pads))

    def _update_positions(self, n: int, out_hw: tuple[int, int], y: np.ndarray | None, group: int,
                          make_rows: RowMaker) -> None:
        """Rows of (sampled) output positions: X per group from `make_rows`, Y from y [N, K, Ho, Wo] or [N, K, L]."""
        y4 = None if y is None else (y[:, :, None, :] if y.ndim == 3 else y)
        if y4 is not None and (y4.shape[0], *y4.shape[2:]) != (n, *out_hw):
            raise OnnxPruneError(f"{self.node}: target {self.target!r} has {y4.shape[0]} x {y4.shape[2:]} "
                                 f"output positions, the layer makes {n} x {out_hw}")
        ni, hi, wi, weight = sample_positions(n, out_hw[0], out_hw[1], self.max_rows, self.rng)
        for s in range(0, len(ni), ROW_CHUNK):
            sl = slice(s, s + ROW_CHUNK)
            cols = make_rows(ni[sl], hi[sl], wi[sl])
            ys = None if y4 is None else y4[ni[sl], :, hi[sl], wi[sl]]
            kg = 0 if ys is None else ys.shape[1] // group
            rw = self._row_weights(ys)
            for g, xg in enumerate(cols):
                self._add(g, xg, None if ys is None else ys[:, g * kg:(g + 1) * kg], weight, rw, ni[sl])

    def _row_weights(self, ys: np.ndarray | None) -> np.ndarray | None:
        return None if ys is None or self.row_weight is None else self.row_weight(ys)


def linear_rows(node: onnx.NodeProto, x: np.ndarray) -> np.ndarray:
    """Gemm: A (or Aᵀ with transA); MatMul: leading dims flattened. Returns [rows, K]."""
    if node.op_type == "Gemm":
        a = x.reshape(x.shape[0], -1) if x.ndim != 2 else x
        return a.T if _attr_i(node, "transA") else a
    return x.reshape(-1, x.shape[-1])


def target_rows(node: onnx.NodeProto, y: np.ndarray) -> np.ndarray:
    return y.reshape(-1, y.shape[-1]) if node.op_type in ("Gemm", "MatMul") else y


def make_layer_gram(node: onnx.NodeProto, weight_shape: tuple[int, ...] | None, *, target: str | None,
                    max_rows: int | None, seed: int, row_weight: RowWeight | None = None,
                    holdout: bool = False) -> LayerGram:
    lg = _layer_gram(node, weight_shape, target=target, max_rows=max_rows, seed=seed, row_weight=row_weight)
    if holdout:
        lg.holdout = [GramStats() for _ in lg.groups]
    return lg


def _layer_gram(node: onnx.NodeProto, weight_shape: tuple[int, ...] | None, *, target: str | None,
                max_rows: int | None, seed: int, row_weight: RowWeight | None) -> LayerGram:
    rng = np.random.default_rng(seed)
    key = node_key(node)
    if node.op_type == "Conv":
        if weight_shape is None:
            raise OnnxPruneError(f"Conv {key!r}: weight shape unknown (not an initializer)")
        geo = conv_geometry(node, weight_shape)
        return LayerGram(key, "Conv", node.input[0], [GramStats() for _ in range(geo.group)], target, geo,
                         max_rows, rng, row_weight)
    if node.op_type == "ConvTranspose":
        if weight_shape is None:
            raise OnnxPruneError(f"ConvTranspose {key!r}: weight shape unknown (not an initializer)")
        tgeo = transpose_geometry(node, weight_shape)
        return LayerGram(key, "ConvTranspose", node.input[0], [GramStats() for _ in range(tgeo.group)], target,
                         tgeo, max_rows, rng, row_weight)
    if node.op_type in ("Gemm", "MatMul"):
        return LayerGram(key, node.op_type, node.input[0], [GramStats()], target, None, max_rows, rng, row_weight)
    raise OnnxPruneError(f"node {key!r}: Gram statistics need a Conv, ConvTranspose, Gemm or MatMul (got {node.op_type})")
