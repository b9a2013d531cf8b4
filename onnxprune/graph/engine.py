"""The analysis entry point: normalised model -> shapes -> analysis -> groups."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import onnx

from onnxprune.errors import NothingToPruneError
from onnxprune.graph.analysis import DEFAULT_GROUPED, Analysis, analyse
from onnxprune.graph.groups import Group, build_groups
from onnxprune.graph.shapes import probe_tensors
from onnxprune.graph.view import GraphView


@dataclass
class DependencyGraph:
    model: onnx.ModelProto  # the normalised model the analysis refers to
    analysis: Analysis
    groups: list[Group]

    @property
    def prunable(self) -> list[Group]:
        return [g for g in self.groups if g.prunable]

    def require_prunable(self) -> None:
        """Every command that needs a prunable group fails the same way: NothingToPruneError (exit 3)."""
        if not self.prunable:
            raise NothingToPruneError(f"nothing prunable: {len(self.groups)} channel groups, all blocked "
                                      f"(run `onnxprune inspect` for the reasons)")

    def exact_roots(self, removed_roots: set[int]) -> set[int]:
        """The part of a removal the oracle can prove: slots of groups with no approximate member."""
        approx = {int(r) for g in self.groups if g.approximate for r in g.slots.tolist()}
        return removed_roots - approx


def dependency_graph(model: onnx.ModelProto, *, shapes: Mapping[str, tuple[int, ...]] | None = None,
                     allow_approximate: frozenset[str] = frozenset(),
                     grouped: str = DEFAULT_GROUPED) -> DependencyGraph:
    """Analyse a *normalised* model (see passes.normalize.Normalize); `grouped`: graph.analysis.GROUPED_MODES."""
    found_shapes, dtypes = probe_tensors(model, shapes=shapes)
    view = GraphView(model, shapes=found_shapes, dtypes=dtypes)
    analysis = analyse(view, allow_approximate=allow_approximate, grouped=grouped)
    return DependencyGraph(model, analysis, build_groups(analysis))
