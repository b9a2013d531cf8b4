"""ConvTranspose inputs as rows of a matrix whose columns match W's (c, i, j) layout, per group.

ONNX ConvTranspose with W [C, K/g, kh, kw]: input position q reaches output position
p = q*stride + tap*dilation - pad_begin through `tap` (per spatial axis), so

    y[n, g*K/g + k, p] = Σ_{c in group g, i, j} x[n, c, q(p, i), q(p, j)] · W[c, k, i, j] + b[k]

The row of output position p holds, for each (c, i, j) of the group, the input value that reaches p
through tap (i, j), or 0 where none does (the quotient is not whole or falls outside the input).
With column c*kh*kw + i*kw + j, `X_g @ W_g.T` is the output of group g, where
`W_g = W[g*C/g:(g+1)*C/g].transpose(1, 0, 2, 3).reshape(K/g, -1)`. 1-D is treated as H = 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from onnxprune.calib.im2col import ConvGeometry, attr_ints, conv_attrs
from onnxprune.errors import OnnxPruneError

Pads = tuple[int, int, int, int]  # (top, left, bottom, right)


@dataclass(frozen=True)
class TransposeGeometry(ConvGeometry):
    """ConvGeometry plus output_padding; SAME_* pads make the output `input * stride` (the ONNX spec)."""

    output_padding: tuple[int, int] = (0, 0)

    def same_total(self, axis: int, size: int) -> int:
        k, s, d = self.kernel[axis], self.strides[axis], self.dilations[axis]
        return max(0, (size - 1) * s + self.output_padding[axis] + (k - 1) * d + 1 - size * s)

    def output_hw(self, hw: tuple[int, int]) -> tuple[int, int]:
        """(s*(in-1) + output_padding + (k-1)*d + 1 - pad_begin - pad_end) per spatial axis."""
        top, left, bottom, right = self.resolve_pads(hw)
        out = [(size - 1) * s + adj + (k - 1) * d + 1 - pb - pe
               for size, k, s, d, adj, pb, pe in zip(hw, self.kernel, self.strides, self.dilations,
                                                     self.output_padding, (top, left), (bottom, right), strict=True)]
        return (out[0], out[1])


def unsupported_transpose(node: onnx.NodeProto, weight_shape: Sequence[int]) -> str | None:
    """Why the rows of this ConvTranspose cannot be built (None if they can)."""
    if len(weight_shape) not in (3, 4):
        return "ConvTranspose: only 1-D and 2-D transposed convolutions"
    if attr_ints(node, "output_shape") is not None:
        return "ConvTranspose: the output_shape attribute is not supported (kept as pruned)"
    auto_pad = next((a.s.decode() for a in node.attribute if a.name == "auto_pad"), "NOTSET")
    if auto_pad not in ("NOTSET", "", "VALID", "SAME_UPPER", "SAME_LOWER"):
        return f"ConvTranspose: unknown auto_pad {auto_pad!r}"
    return None


def transpose_geometry(node: onnx.NodeProto, weight_shape: Sequence[int]) -> TransposeGeometry:
    """Geometry of a 1-D or 2-D ConvTranspose (1-D is treated as H = 1)."""
    reason = unsupported_transpose(node, weight_shape)
    if reason is not None:
        raise OnnxPruneError(f"{node.name!r}: {reason}")
    a = conv_attrs(node, weight_shape)
    spatial = len(weight_shape) - 2
    adj = attr_ints(node, "output_padding") or [0] * spatial
    out_pad = (0, adj[0]) if spatial == 1 else (adj[0], adj[1])
    return TransposeGeometry(a.kernel, a.strides, a.dilations, a.group, a.pads, a.auto_pad, out_pad)


def _taps(pos: np.ndarray, begin: int, k: int, s: int, d: int, size: int) -> np.ndarray:
    """[rows, k]: the input index reaching output `pos` through each tap; `size` (a zero pad) where none does."""
    q, r = np.divmod(pos[:, None] + begin - np.arange(k)[None, :] * d, s)
    return np.where((r == 0) & (q >= 0) & (q < size), q, size)


def padded_input(x: np.ndarray) -> np.ndarray:
    """x as [N, C, H+1, W+1] with a trailing zero row and column (the value of taps no input reaches)."""
    x4 = x[:, :, None, :] if x.ndim == 3 else x
    return np.pad(x4, ((0, 0), (0, 0), (0, 1), (0, 1)))


def transpose_rows(xp: np.ndarray, ni: np.ndarray, hi: np.ndarray, wi: np.ndarray, geo: TransposeGeometry,
                   pads: Pads) -> list[np.ndarray]:
    """Per group, rows [len(ni), (C/g)*kh*kw] for output positions (ni, hi, wi); xp from `padded_input`."""
    h, w = xp.shape[2] - 1, xp.shape[3] - 1
    (kh, kw), (sh, sw), (dh, dw) = geo.kernel, geo.strides, geo.dilations
    qh = _taps(hi, pads[0], kh, sh, dh, h)
    qw = _taps(wi, pads[1], kw, sw, dw, w)
    patches = xp[ni[:, None, None], :, qh[:, :, None], qw[:, None, :]]  # [rows, kh, kw, C]
    patches = patches.transpose(0, 3, 1, 2)
    rows, c = patches.shape[0], patches.shape[1]
    cg = c // geo.group
    return [patches[:, g * cg:(g + 1) * cg].reshape(rows, -1) for g in range(geo.group)]
