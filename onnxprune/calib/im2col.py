"""Conv input patches as rows of a matrix whose columns match `W[k].reshape(-1)`.

For W [K, C/g, kh, kw] the column of (c, i, j) is c*kh*kw + i*kw + j, so `X_g @ W_g.reshape(K/g, -1).T`
equals the conv output of group g at the sampled positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from onnxprune.errors import OnnxPruneError


@dataclass(frozen=True)
class ConvGeometry:
    kernel: tuple[int, int]
    strides: tuple[int, int]
    dilations: tuple[int, int]
    group: int
    pads: tuple[int, int, int, int] | None  # (top, left, bottom, right); None -> from auto_pad
    auto_pad: str = "NOTSET"

    def resolve_pads(self, hw: tuple[int, int]) -> tuple[int, int, int, int]:
        """Explicit pads, or the SAME_* pads split as ONNX says (the odd one at the end for SAME_UPPER)."""
        if self.auto_pad in ("NOTSET", ""):
            return self.pads or (0, 0, 0, 0)
        if self.auto_pad == "VALID":
            return (0, 0, 0, 0)
        begin, end = [], []
        for axis, size in enumerate(hw):
            total = self.same_total(axis, size)
            small, big = total // 2, total - total // 2
            begin.append(small if self.auto_pad == "SAME_UPPER" else big)
            end.append(big if self.auto_pad == "SAME_UPPER" else small)
        return (begin[0], begin[1], end[0], end[1])

    def same_total(self, axis: int, size: int) -> int:
        """Total SAME_* padding along one spatial axis: output ceil(size / stride)."""
        k, s, d = self.kernel[axis], self.strides[axis], self.dilations[axis]
        return max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)


def attr_ints(node: onnx.NodeProto, name: str) -> list[int] | None:
    for a in node.attribute:
        if a.name == name:
            return [int(v) for v in helper.get_attribute_value(a)]
    return None


Pair = tuple[int, int]


@dataclass(frozen=True)
class ConvAttrs:
    """A Conv/ConvTranspose's window attributes in 2-D form (1-D lifted to H = 1)."""

    kernel: Pair
    strides: Pair
    dilations: Pair
    group: int
    pads: tuple[int, int, int, int] | None  # (top, left, bottom, right)
    auto_pad: str


def _pair(values: Sequence[int], spatial: int, lift: int) -> Pair:
    v = [lift, *values] if spatial == 1 else list(values)
    return (int(v[0]), int(v[1]))


def conv_attrs(node: onnx.NodeProto, weight_shape: Sequence[int]) -> ConvAttrs:
    """kernel (from the weight), strides, dilations, group, pads, auto_pad of a 1-D or 2-D conv node."""
    spatial = len(weight_shape) - 2
    pads = attr_ints(node, "pads")
    if spatial == 1 and pads:
        pads = [0, pads[0], 0, pads[1]]
    return ConvAttrs(_pair([int(v) for v in weight_shape[2:]], spatial, 1),
                     _pair(attr_ints(node, "strides") or [1] * spatial, spatial, 1),
                     _pair(attr_ints(node, "dilations") or [1] * spatial, spatial, 1),
                     next((int(a.i) for a in node.attribute if a.name == "group"), 1),
                     (pads[0], pads[1], pads[2], pads[3]) if pads else None,
                     next((a.s.decode() for a in node.attribute if a.name == "auto_pad"), "NOTSET"))


def conv_geometry(node: onnx.NodeProto, weight_shape: Sequence[int]) -> ConvGeometry:
    """Geometry of a 1-D or 2-D Conv (1-D is treated as H = 1)."""
    if len(weight_shape) - 2 not in (1, 2):
        raise OnnxPruneError(f"Conv {node.name!r}: only 1-D and 2-D convolutions are supported for Gram statistics")
    a = conv_attrs(node, weight_shape)
    return ConvGeometry(a.kernel, a.strides, a.dilations, a.group, a.pads, a.auto_pad)


def patch_view(x: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    """Zero-copy-ish view [N, C, Ho, Wo, kh, kw] of the padded input (x is [N, C, H, W] or [N, C, L])."""
    if x.ndim == 3:
        x = x[:, :, None, :]
    top, left, bottom, right = geo.resolve_pads((x.shape[2], x.shape[3]))
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    (kh, kw), (sh, sw), (dh, dw) = geo.kernel, geo.strides, geo.dilations
    eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    win = np.lib.stride_tricks.sliding_window_view(xp, (eh, ew), axis=(2, 3))
    return win[:, :, ::sh, ::sw, ::dh, ::dw]


def output_hw(x_shape: Sequence[int], geo: ConvGeometry) -> tuple[int, int]:
    h, w = (1, x_shape[2]) if len(x_shape) == 3 else (x_shape[2], x_shape[3])
    top, left, bottom, right = geo.resolve_pads((h, w))
    (kh, kw), (sh, sw), (dh, dw) = geo.kernel, geo.strides, geo.dilations
    return ((h + top + bottom - (kh - 1) * dh - 1) // sh + 1, (w + left + right - (kw - 1) * dw - 1) // sw + 1)


def sample_positions(n: int, ho: int, wo: int, max_rows: int | None,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Indices (n, h, w) of the rows to keep and the weight total/kept."""
    total = n * ho * wo
    if max_rows is None or total <= max_rows:
        idx = np.arange(total)
    else:
        idx = np.sort(rng.choice(total, size=max_rows, replace=False))
    ni, rest = np.divmod(idx, ho * wo)
    hi, wi = np.divmod(rest, wo)
    return ni, hi, wi, total / len(idx)


def im2col_rows(view: np.ndarray, ni: np.ndarray, hi: np.ndarray, wi: np.ndarray,
                group: int) -> list[np.ndarray]:
    """Per group, rows [len(ni), (C/g)*kh*kw] gathered from `patch_view` output."""
    patches = view[ni, :, hi, wi]  # [rows, C, kh, kw]
    rows, c = patches.shape[0], patches.shape[1]
    cg = c // group
    return [patches[:, g * cg:(g + 1) * cg].reshape(rows, -1) for g in range(group)]
