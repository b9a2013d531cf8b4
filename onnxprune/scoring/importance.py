"""The Importance protocol and its registry. Scoring never removes anything; it only ranks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from onnxprune.errors import OnnxPruneError
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.graph.groups import Group


class Importance(Protocol):
    name: str

    def __call__(self, dg: DependencyGraph, group: Group) -> np.ndarray:
        """One non-negative score per entry of group.slots (higher = more important)."""
        ...


_CRITERIA: dict[str, Callable[[], Importance]] = {}


def register_importance(name: str) -> Callable[[Callable[[], Importance]], Callable[[], Importance]]:
    def deco(factory: Callable[[], Importance]) -> Callable[[], Importance]:
        _CRITERIA[name] = factory
        return factory

    return deco


def get_importance(name: str) -> Importance:
    from onnxprune.scoring import activation, flap, magnitude, obs, sensitivity, wanda  # noqa: F401 - registrations

    if name not in _CRITERIA:
        raise OnnxPruneError(f"unknown criterion {name!r}; choose one of: {', '.join(sorted(_CRITERIA))}")
    return _CRITERIA[name]()


def criteria() -> list[str]:
    from onnxprune.scoring import activation, flap, magnitude, obs, sensitivity, wanda  # noqa: F401

    return sorted(_CRITERIA)
