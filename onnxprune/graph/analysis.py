"""Walk the graph once, in topological order, and let each op's rule place and couple channel ids."""

from __future__ import annotations

import numpy as np

from onnxprune.errors import OnnxPruneError
from onnxprune.graph.context import (
    APPROXIMATE_KINDS,
    DEFAULT_GROUPED,
    DEFAULT_HEADS,
    GROUPED_MODES,
    HEADS_MODES,
    Analysis,
    RuleContext,
    fixed_axis,
)
from onnxprune.graph.layernorm_chains import find_norm_chains
from onnxprune.graph.rules import (
    catalog,  # noqa: F401 - registers every rule family
    norm,
    registry,
    shape_ops,
)
from onnxprune.graph.tracks import UNTRACKED, UnionFind, map_roots, root_table
from onnxprune.graph.view import GraphView, has_subgraph

__all__ = ["APPROXIMATE_KINDS", "DEFAULT_GROUPED", "DEFAULT_HEADS", "GROUPED_MODES", "HEADS_MODES", "analyse"]


def analyse(view: GraphView, *, allow_approximate: frozenset[str] = frozenset(),
            grouped: str = DEFAULT_GROUPED, heads: str = DEFAULT_HEADS,
            whole_heads: dict[str, int] | None = None) -> Analysis:
    """Build layouts, sources, members, consume edges and blocks for the main graph.

    grouped="auto" runs again with the index rule for the grouped convs whose whole groups ended up
    coupled into a single slot (nothing left to remove), until none does.
    heads: "dim" analyses every head split with the head_dim rule. "whole" and "auto" first find the
    attention head splits that way, then analyse again with those splits coupled as whole heads
    (`whole_heads`, when given, names them instead: engine.dependency_graph narrows it for "auto")."""
    if grouped not in GROUPED_MODES:
        raise OnnxPruneError(f"unknown grouped-conv mode {grouped!r}; choose one of: {', '.join(GROUPED_MODES)}")
    if heads not in HEADS_MODES:
        raise OnnxPruneError(f"unknown heads mode {heads!r}; choose one of: {', '.join(HEADS_MODES)}")
    if whole_heads is None:
        found = _analyse_grouped(view, allow_approximate, grouped, {}, heads)
        if heads == "dim" or not found.attention:
            return found
        whole_heads = dict(found.attention)
    return _analyse_grouped(view, allow_approximate, grouped, whole_heads, heads)


def _analyse_grouped(view: GraphView, allow_approximate: frozenset[str], grouped: str,
                     whole_heads: dict[str, int], heads: str) -> Analysis:
    index_convs: frozenset[str] = frozenset()
    bias_tables: frozenset[str] = frozenset()
    while True:
        state = _analyse_once(view, allow_approximate, grouped, index_convs, whole_heads, heads, bias_tables)
        collapsed = {name for name, ids in state.whole_convs.items()
                     if len(set(map_roots(state.roots, ids).tolist()) - {UNTRACKED}) < 2}
        per_head = _per_head_tables(state)
        if (grouped != "auto" or not collapsed) and not per_head:
            return state
        index_convs |= collapsed if grouped == "auto" else set()
        bias_tables |= per_head


def _per_head_tables(state: Analysis) -> set[str]:
    """Embedding Gathers whose table columns ended up coupled with attention heads: per-head biases
    (T5's relative position bias, shared by every layer), which each layer's heads cut instead."""
    heads = set(map_roots(state.roots, np.array(sorted(state.head_ids), dtype=np.int64)).tolist())
    for name in state.attention:
        heads |= set(map_roots(state.roots, state.splits[name]).reshape(-1).tolist())
    heads.discard(UNTRACKED)
    return {name for name, ids in state.tables.items() if heads & set(map_roots(state.roots, ids).tolist())}


def _analyse_once(view: GraphView, allow_approximate: frozenset[str], grouped: str,
                  index_convs: frozenset[str], whole_heads: dict[str, int], heads: str,
                  bias_tables: frozenset[str]) -> Analysis:
    state = Analysis(view, UnionFind(), {}, [], [], [], {}, {}, allow_approximate=allow_approximate, grouped=grouped,
                     index_convs=index_convs, heads=heads, whole_heads=dict(whole_heads), bias_tables=bias_tables)
    # A LayerNorm or RMSNorm written out op by op is read as one norm, at its last node.
    chains = {c.nodes[-1]: c for c in find_norm_chains(view, lambda t: len(view.shape(t) or ()) or None)}
    inside = {name for c in chains.values() for name in c.nodes[:-1]}
    for node in view.graph.node:
        ctx = RuleContext(state, node)
        if node.name in inside:
            continue
        if node.name in chains:
            norm.layernorm_chain(ctx, chains[node.name])
            continue
        tracked_in = any(state.layouts.get(x) for x in node.input if x)
        read = [state.dim_values[x] for x in node.input if x in state.dim_values]
        rule = registry.lookup(node.op_type, view.opset_of(node.domain), node.domain)
        custom = rule is None and node.domain not in ("", "ai.onnx")
        if custom or has_subgraph(node):
            why = (f"custom op of domain '{node.domain}' has no channel rule" if custom
                   else "control flow with subgraphs is kept intact")
            ctx.block_inputs(why)
            for entries in read:
                ctx.escape(entries, f"reaches {node.op_type} '{node.name}' ({why})")
            continue
        runs = rule is not None and (tracked_in or rule.source)
        if read:
            shape_ops.carry_dims(ctx, rule_runs=runs)
        if rule is None:
            if tracked_in:
                ctx.block_inputs(f"no channel rule for {node.op_type} (opset {view.opset})")
            continue
        if runs:
            rule.fn(ctx)
    for fn in state.deferred:
        fn()
    _block_boundaries(state)
    state.roots = root_table(state.uf)
    return state


def _block_boundaries(state: Analysis) -> None:
    view = state.view
    for name in view.graph_outputs:
        for t in state.layouts.get(name, []):
            _block_ids(state, t.ids, f"reaches graph output '{name}'")
    for name in view.captured:
        for t in state.layouts.get(name, []):
            _block_ids(state, t.ids, f"read inside a subgraph ('{name}')")
    for name in view.graph_outputs | view.captured:
        for e in state.dim_values.get(name, []):
            for t, p in e.axes() if e is not None else []:
                if not fixed_axis(state.uf, t, p):
                    _block_ids(state, t.ids, f"its channel count is read at run time and reaches '{name}'")


def _block_ids(state: Analysis, ids: np.ndarray, reason: str) -> None:
    for i in np.unique(ids[ids >= 0]).tolist():
        reasons = state.blocked.setdefault(int(i), [])
        if reason not in reasons and len(reasons) < 4:
            reasons.append(reason)
