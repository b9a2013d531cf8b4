"""Layers the user keeps whole: `prune --keep PATTERN` blocks the channel groups those layers produce.

A pattern is an fnmatch pattern over node names (`/model.22/cv3.*`, `*classifier*`); a group is
kept when any of its source nodes (the layers that produce its channels) matches. The group is
marked blocked with the reason, like a group an op without a rule blocks, so every allocation,
the report and `inspect` treat it the same way. The layer's *input* channels can still shrink when
the group feeding it is pruned (as Torch-Pruning's `ignored_layers`). A pattern that matches no
source node is an error: a typo must not silently prune the layer it meant to keep.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Sequence

from onnxprune.errors import OnnxPruneError
from onnxprune.graph.dependency import DependencyGraph


def keep_layers(dg: DependencyGraph, patterns: Sequence[str]) -> DependencyGraph:
    """A copy of `dg` whose groups produced by a node matching one of `patterns` are blocked."""
    if not patterns:
        return dg
    sources = [s for g in dg.groups for s in g.sources]
    for p in patterns:
        if not any(fnmatch.fnmatchcase(s, p) for s in sources):
            raise OnnxPruneError(f"--keep {p!r} matches no layer that produces channels "
                                 f"(`onnxprune inspect` lists the groups and their source layers)")
    groups = []
    for g in dg.groups:
        hit = next(((p, s) for s in g.sources for p in patterns if fnmatch.fnmatchcase(s, p)), None)
        groups.append(g if hit is None else
                      dataclasses.replace(g, blocked=[*g.blocked, f"kept: {hit[1]} matches --keep {hit[0]!r}"]))
    return dataclasses.replace(dg, groups=groups)
