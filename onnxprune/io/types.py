"""Type aliases every stage shares: a feed of model inputs, input shapes, a factory of feeds."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np

Feed = Mapping[str, np.ndarray]  # one batch of model inputs by input name, sample axis first
Shapes = Mapping[str, tuple[int, ...]]  # concrete input shapes by input name (--shapes)
FeedFactory = Callable[[], Iterable[Feed]]  # a fresh iterator of feeds per call (multi-pass algorithms)
