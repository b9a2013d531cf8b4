"""Per-layer input Gram accumulators: how X (and Y) rows are cut out of Conv/Gemm/MatMul tensors."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

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


def node_key(node: onnx.NodeProto) -> str:
    """Nodes are keyed by name, or by their first output when unnamed."""
    return node.name or node.output[0]


def _attr_i(node: onnx.NodeProto, name: str, default: int = 0) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), default)


@dataclass
class LayerGram:
    """XᵀX of one layer's data input; for Conv one GramStats per group (columns in W.reshape order).

    Column order: Conv -> (c, i, j) of W[K, C/g, kh, kw] for the group; Gemm/MatMul -> the reduction index.
    `target` names the tensor whose rows gave XᵀY (None: no XᵀY).
    """

    node: str
    op_type: str
    input: str
    groups: list[GramStats]
    target: str | None = None
    geometry: ConvGeometry | None = None
    max_rows: int | None = None
    rng: np.random.Generator = field(default_factory=np.random.default_rng, repr=False)

    @property
    def gram(self) -> GramStats:
        if len(self.groups) != 1:
            raise ValueError(f"{self.node}: grouped conv has {len(self.groups)} Grams; use .groups")
        return self.groups[0]

    def update(self, x: np.ndarray, y: np.ndarray | None = None) -> None:
        if self.geometry is not None:
            self._update_conv(x, y, self.geometry)
        else:
            self._update_rows(x, y)

    def _update_rows(self, x: np.ndarray, y: np.ndarray | None) -> None:
        total = x.shape[0]
        weight = 1.0
        if self.max_rows is not None and total > self.max_rows:
            keep = np.sort(self.rng.choice(total, size=self.max_rows, replace=False))
            x, y = x[keep], (y[keep] if y is not None else None)
            weight = total / self.max_rows
        for s in range(0, x.shape[0], ROW_CHUNK):
            self.groups[0].update(x[s:s + ROW_CHUNK], None if y is None else y[s:s + ROW_CHUNK], weight=weight)

    def _update_conv(self, x: np.ndarray, y: np.ndarray | None, geo: ConvGeometry) -> None:
        ho, wo = output_hw(x.shape, geo)
        ni, hi, wi, weight = sample_positions(x.shape[0], ho, wo, self.max_rows, self.rng)
        view = patch_view(x, geo)
        y4 = None if y is None else (y[:, :, None, :] if y.ndim == 3 else y)
        for s in range(0, len(ni), ROW_CHUNK):
            sl = slice(s, s + ROW_CHUNK)
            cols = im2col_rows(view, ni[sl], hi[sl], wi[sl], geo.group)
            ys = None if y4 is None else y4[ni[sl], :, hi[sl], wi[sl]]
            kg = 0 if ys is None else ys.shape[1] // geo.group
            for g, xg in enumerate(cols):
                self.groups[g].update(xg, None if ys is None else ys[:, g * kg:(g + 1) * kg], weight=weight)


def linear_rows(node: onnx.NodeProto, x: np.ndarray) -> np.ndarray:
    """Gemm: A (or Aᵀ with transA); MatMul: leading dims flattened. Returns [rows, K]."""
    if node.op_type == "Gemm":
        a = x.reshape(x.shape[0], -1) if x.ndim != 2 else x
        return a.T if _attr_i(node, "transA") else a
    return x.reshape(-1, x.shape[-1])


def target_rows(node: onnx.NodeProto, y: np.ndarray) -> np.ndarray:
    return y.reshape(-1, y.shape[-1]) if node.op_type in ("Gemm", "MatMul") else y


def make_layer_gram(node: onnx.NodeProto, weight_shape: tuple[int, ...] | None, *, target: str | None,
                    max_rows: int | None, seed: int) -> LayerGram:
    rng = np.random.default_rng(seed)
    key = node_key(node)
    if node.op_type == "Conv":
        if weight_shape is None:
            raise OnnxPruneError(f"Conv {key!r}: weight shape unknown (not an initializer)")
        geo = conv_geometry(node, weight_shape)
        return LayerGram(key, "Conv", node.input[0], [GramStats() for _ in range(geo.group)], target, geo,
                         max_rows, rng)
    if node.op_type in ("Gemm", "MatMul"):
        return LayerGram(key, node.op_type, node.input[0], [GramStats()], target, None, max_rows, rng)
    raise OnnxPruneError(f"node {key!r}: Gram statistics need a Conv, Gemm or MatMul (got {node.op_type})")
