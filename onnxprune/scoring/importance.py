"""The Importance protocol and its registry (scoring/catalog.py looks criteria up). Scoring never removes
anything; it only ranks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from onnxprune.graph.dependency import DependencyGraph
from onnxprune.graph.groups import Group


class Importance(Protocol):
    name: str

    def __call__(self, dg: DependencyGraph, group: Group) -> np.ndarray:
        """One non-negative score per entry of group.slots (higher = more important)."""
        ...


CRITERIA: dict[str, Callable[[], Importance]] = {}


def register_importance(name: str) -> Callable[[Callable[[], Importance]], Callable[[], Importance]]:
    def deco(factory: Callable[[], Importance]) -> Callable[[], Importance]:
        CRITERIA[name] = factory
        return factory

    return deco
