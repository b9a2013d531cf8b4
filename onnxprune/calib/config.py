"""What calibration data to read and how to batch it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from onnxprune.calib.images import ImageOptions

DEFAULT_RANDOM_SAMPLES = 32


@dataclass(frozen=True)
class CalibConfig:
    """`path` None means random inputs (with a CalibrationWarning).

    `samples` caps the number of samples (None: all of the source, DEFAULT_RANDOM_SAMPLES for random);
    `batch` is the inference batch size; `image` applies to image folders only; `seed` drives
    the random fallback.
    """

    path: Path | None = None
    samples: int | None = None
    batch: int = 16
    image: ImageOptions = field(default_factory=ImageOptions)
    seed: int = 0
