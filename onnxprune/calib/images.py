"""Image-folder preprocessing for calibration (Pillow is imported lazily)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onnxprune.errors import OnnxPruneError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


@dataclass(frozen=True)
class ImageOptions:
    """How an image becomes one model input sample.

    Order of operations: decode -> convert to RGB (or L when the model takes 1 channel) ->
    resize to `size` (H, W) with bilinear filtering -> float32 * `scale` -> reorder to BGR if `bgr`
    -> (x - mean) / std per channel (mean/std are given in the final channel order) ->
    layout NCHW (default) or NHWC.
    `size` None takes H and W from the model's static input dims.
    """

    size: tuple[int, int] | None = None
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    scale: float = 1.0 / 255.0
    bgr: bool = False
    nhwc: bool = False


def parse_size(text: str) -> tuple[int, int]:
    """`224` -> (224, 224); `224x320` or `224,320` -> (224, 320) as (H, W)."""
    parts = [p for p in text.lower().replace(",", "x").split("x") if p]
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        raise OnnxPruneError(f"--image-size {text!r}: expected H or HxW with integers") from None
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or min(vals) <= 0:
        raise OnnxPruneError(f"--image-size {text!r}: expected H or HxW with positive integers")
    return vals[0], vals[1]


def parse_floats(text: str, flag: str, *, nonzero: bool = False) -> tuple[float, ...]:
    """`0.485,0.456,0.406` (or space separated) -> finite floats (non-zero ones: divisors, factors)."""
    try:
        vals = tuple(float(p) for p in text.replace(",", " ").split())
    except ValueError:
        raise OnnxPruneError(f"{flag} {text!r}: expected comma-separated numbers") from None
    if not vals:
        raise OnnxPruneError(f"{flag}: no values given")
    return finite(vals, flag, nonzero=nonzero)


def finite(vals: tuple[float, ...], flag: str, *, nonzero: bool = False) -> tuple[float, ...]:
    """Refuse inf/NaN (and 0 where it divides or scales everything away) before they reach the data."""
    if not all(math.isfinite(v) and (v != 0.0 or not nonzero) for v in vals):
        shown = ",".join(f"{v:g}" for v in vals)
        raise OnnxPruneError(f"{flag} {shown}: every value must be a finite number{' other than 0' * nonzero}")
    return vals


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _per_channel(vals: Sequence[float], channels: int, flag: str) -> np.ndarray:
    if len(vals) == 1:
        return np.full(channels, vals[0], dtype=np.float32)
    if len(vals) != channels:
        raise OnnxPruneError(f"{flag}: {len(vals)} values for a {channels}-channel input")
    return np.asarray(vals, dtype=np.float32)


def load_image(path: Path, *, size: tuple[int, int], channels: int, opts: ImageOptions) -> np.ndarray:
    """One preprocessed sample, [C, H, W] (or [H, W, C] with `nhwc`), float32."""
    try:
        from PIL import Image
    except ImportError:
        raise OnnxPruneError("image calibration folders need Pillow: pip install 'onnxprune[images]'") from None
    if channels not in (1, 3):
        raise OnnxPruneError(f"image calibration needs a 1- or 3-channel input, the model takes {channels}")
    try:
        with Image.open(path) as src:
            img = src.convert("L" if channels == 1 else "RGB").resize((size[1], size[0]),
                                                                       Image.Resampling.BILINEAR)
            arr = np.asarray(img, dtype=np.float32)
    except (OSError, Image.DecompressionBombError) as exc:
        raise OnnxPruneError(f"{path}: cannot read image ({exc})") from None
    arr = arr.reshape(size[0], size[1], channels) * np.float32(opts.scale)
    if opts.bgr and channels == 3:
        arr = arr[..., ::-1]
    arr = (arr - _per_channel(opts.mean, channels, "--mean")) / _per_channel(opts.std, channels, "--std")
    if not opts.nhwc:
        arr = arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr, dtype=np.float32)
