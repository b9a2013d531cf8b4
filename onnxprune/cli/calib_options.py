"""Shared click flags for calibration data (`prune`, `sparsify`, ...)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from onnxprune.calib.config import CalibConfig
from onnxprune.calib.images import ImageOptions, finite, parse_floats, parse_size

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_BATCH = 16

_RAW = ("calib_path", "calib_samples", "calib_batch", "image_size", "mean", "std", "bgr", "nhwc", "scale")


def config_from_options(*, calib_path: str | None, calib_samples: int | None, calib_batch: int,
                        image_size: str | None, mean: str | None, std: str | None, bgr: bool,
                        nhwc: bool, scale: float) -> CalibConfig:
    """Build a CalibConfig from the raw flag values (raises OnnxPruneError on bad text)."""
    image = ImageOptions(
        size=parse_size(image_size) if image_size else None,
        mean=parse_floats(mean, "--mean") if mean else (0.0,),
        std=parse_floats(std, "--std", nonzero=True) if std else (1.0,),
        scale=finite((scale,), "--scale", nonzero=True)[0], bgr=bgr, nhwc=nhwc)
    return CalibConfig(path=Path(calib_path) if calib_path else None, samples=calib_samples,
                       batch=calib_batch, image=image)


def calib_options(func: F) -> F:
    """Add the calibration flags to a click command; the command receives `calib: CalibConfig`.

        @click.command()
        @click.argument("model")
        @calib_options
        def command(model: str, calib: CalibConfig) -> None: ...

    Flags: --calib PATH, --calib-samples N, --calib-batch N, --image-size HxW, --mean, --std,
    --bgr, --nhwc, --scale.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        raw = {k: kwargs.pop(k) for k in _RAW}
        kwargs["calib"] = config_from_options(**raw)
        return func(*args, **kwargs)

    decorators = [
        click.option("--calib", "calib_path", type=click.Path(), default=None, metavar="PATH",
                     help="Calibration data: a .npz keyed by input name (or one array), a .npy, a folder of "
                          ".npy files (<input>__<id>.npy for several inputs) or a folder of images. "
                          "Without it, random inputs are used (weaker scores)."),
        click.option("--calib-samples", type=click.IntRange(min=1), default=None, metavar="N",
                     help="Use at most N calibration samples (default: all; 32 for random inputs)."),
        click.option("--calib-batch", type=click.IntRange(min=1), default=DEFAULT_BATCH, show_default=True,
                     metavar="N", help="Samples per inference batch (a static batch dim in the model wins)."),
        click.option("--image-size", default=None, metavar="HxW",
                     help="Resize images to H x W (default: the model's static input size)."),
        click.option("--mean", default=None, metavar="M[,M,M]",
                     help="Per-channel mean subtracted after --scale, in the final channel order (default 0)."),
        click.option("--std", default=None, metavar="S[,S,S]",
                     help="Per-channel std divided after the mean (default 1)."),
        click.option("--bgr", is_flag=True, help="Feed images as BGR instead of RGB."),
        click.option("--nhwc", is_flag=True, help="Feed images as NHWC instead of NCHW."),
        click.option("--scale", type=float, default=1.0 / 255.0, show_default="1/255",
                     help="Multiply pixel values (0-255) by this before mean/std."),
    ]
    out: Callable[..., Any] = wrapper
    for deco in reversed(decorators):
        out = deco(out)
    return out  # type: ignore[return-value]
