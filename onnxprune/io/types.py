"""Types every stage passes around, defined once."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

Feed = Mapping[str, np.ndarray]  # one batch of model inputs, by input name
Shapes = Mapping[str, tuple[int, ...]]  # concrete input shapes, by input name
