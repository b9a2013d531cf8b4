"""The analysis entry point: normalised model -> shapes -> analysis -> groups."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from onnxprune.errors import NothingToPruneError
from onnxprune.graph.analysis import analyse
from onnxprune.graph.context import DEFAULT_GROUPED, DEFAULT_HEADS, Analysis
from onnxprune.graph.groups import Group, build_groups
from onnxprune.graph.shapes import probe_tensors
from onnxprune.graph.tracks import map_roots
from onnxprune.graph.view import GraphView
from onnxprune.io.input_values import infer_rules
from onnxprune.io.inputs import describe_feeds
from onnxprune.io.types import Shapes


@dataclass
class DependencyGraph:
    model: onnx.ModelProto  # the normalised model the analysis refers to
    analysis: Analysis
    groups: list[Group]
    # The user's samples the shape probe ran on (empty: random inputs, `inputs.random_inputs`).
    feeds: Sequence[Mapping[str, np.ndarray]] = ()
    # What normalisation did to the model (passes.normalize), e.g. "fuse-layernorm: 4 LayerNorm chains fused ...".
    normalised: Sequence[str] = ()

    @property
    def prunable(self) -> list[Group]:
        return [g for g in self.groups if g.prunable]

    @property
    def probe_inputs(self) -> str:
        """What the shape probe ran on: "4 calibration samples", or "random inputs" (made by `rules`)."""
        return describe_feeds(self.model, self.feeds[:1]) if self.feeds else "random inputs"

    def inputs_json(self) -> dict[str, object]:
        """The rule each input's random values follow (onnxprune.io.input_values) and what the shape probe ran on."""
        return {"rules": {n: str(r) for n, r in infer_rules(self.model).items()}, "shape_probe": self.probe_inputs}
    def require_prunable(self) -> None:
        """Every command that needs a prunable group fails the same way: NothingToPruneError (exit 3)."""
        if not self.prunable:
            raise NothingToPruneError(f"nothing prunable: {len(self.groups)} channel groups, all blocked "
                                      f"(run `onnxprune inspect` for the reasons)")

    def exact_roots(self, removed_roots: set[int]) -> set[int]:
        """The part of a removal the oracle can prove: slots of groups with no approximate member."""
        approx = {int(r) for g in self.groups if g.approximate for r in g.slots.tolist()}
        return removed_roots - approx


def dependency_graph(model: onnx.ModelProto, *, shapes: Shapes | None = None,
                     allow_approximate: frozenset[str] = frozenset(),
                     grouped: str = DEFAULT_GROUPED, heads: str = DEFAULT_HEADS,
                     feeds: Sequence[Mapping[str, np.ndarray]] = (),
                     normalised: Sequence[str] = ()) -> DependencyGraph:
    """Analyse a *normalised* model (see passes.normalize.Normalize); `grouped`: graph.analysis.GROUPED_MODES,
    `heads`: graph.analysis.HEADS_MODES ("auto": whole heads where their group is prunable and holds two
    heads or more, head_dim elsewhere). The shapes come from one run on the first of `feeds` (the user's
    samples), else on random inputs; `normalised`: what normalisation did (inspect shows it)."""
    found_shapes, dtypes = probe_tensors(model, shapes=shapes, feed=feeds[0] if feeds else None)
    view = GraphView(model, shapes=found_shapes, dtypes=dtypes)
    analysis = analyse(view, allow_approximate=allow_approximate, grouped=grouped, heads=heads)
    groups = build_groups(analysis)
    while heads == "auto":
        fallback = _heads_without_choice(analysis, groups)
        if not fallback:
            break
        whole = {k: v for k, v in analysis.whole_heads.items() if k not in fallback}
        analysis = analyse(view, allow_approximate=allow_approximate, grouped=grouped, heads=heads, whole_heads=whole)
        groups = build_groups(analysis)
    return DependencyGraph(model, analysis, groups, feeds, list(dict.fromkeys(normalised)))


def _heads_without_choice(analysis: Analysis, groups: list[Group]) -> set[str]:
    """Whole-head splits whose group is blocked or holds a single head (nothing to choose from):
    "auto" analyses them again with head_dim units."""
    group_of = {int(r): g for g in groups for r in g.slots.tolist()}
    out: set[str] = set()
    for name in analysis.whole_heads:
        roots = map_roots(analysis.roots, analysis.splits.get(name, np.zeros(0, dtype=np.int64)))
        hit = {group_of[int(r)].id: group_of[int(r)] for r in roots.reshape(-1).tolist() if int(r) in group_of}
        if not hit or any(g.blocked or g.size < 2 for g in hit.values()):
            out.add(name)
    return out
