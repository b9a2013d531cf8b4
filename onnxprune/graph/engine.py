"""The analysis entry point: normalised model -> shapes -> analysis -> groups."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import onnx

from onnxprune.graph.analysis import Analysis, analyse
from onnxprune.graph.groups import Group, build_groups
from onnxprune.graph.shapes import concrete_shapes
from onnxprune.graph.view import GraphView


@dataclass
class DependencyGraph:
    model: onnx.ModelProto  # the normalised model the analysis refers to
    analysis: Analysis
    groups: list[Group]

    @property
    def prunable(self) -> list[Group]:
        return [g for g in self.groups if g.prunable]


def dependency_graph(model: onnx.ModelProto, *, shapes: Mapping[str, tuple[int, ...]] | None = None) -> DependencyGraph:
    """Analyse a *normalised* model (see passes.normalize.Normalize)."""
    view = GraphView(model, shapes=concrete_shapes(model, shapes=shapes))
    analysis = analyse(view)
    return DependencyGraph(model, analysis, build_groups(analysis))
