"""What the analysis carries and what a rule sees: the state of one walk (`Analysis`), the member,
edge and source records, and `RuleContext`, the interface every rule in graph/rules/ writes through."""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import onnx

from onnxprune.graph.apply import ApplyContext
from onnxprune.graph.tracks import UNTRACKED, Track, UnionFind, planes
from onnxprune.graph.view import GraphView

# Roles of constant members, used by scoring.
ROLE_WEIGHT_OUT = "weight-out"  # producer weight, sliced along its output channels
ROLE_WEIGHT_IN = "weight-in"  # consumer weight, sliced along its reduction axis
ROLE_NORM_SCALE = "norm-scale"  # BN/IN gamma
ROLE_PARAM = "param"  # biases, BN statistics, per-channel constants
TIED_ROLES = (ROLE_WEIGHT_OUT, ROLE_WEIGHT_IN)  # shared by several nodes: their channels are coupled


@dataclass(frozen=True)
class ConstMember:
    name: str
    track: Track
    role: str
    node: str


@dataclass(frozen=True)
class ConsumeEdge:
    """A tensor whose channels enter a channel-mixing consumer: the oracle masks here."""

    node: str
    input_index: int
    tensor: str
    track: Track


@dataclass(frozen=True)
class Source:
    node: str
    output: str
    ids: np.ndarray


ApplyHook = Callable[[ApplyContext, onnx.NodeProto], None]  # (context, the node in the model being pruned)


GROUPED_MODES = ("auto", "index", "whole")
DEFAULT_GROUPED = "auto"
# The unit an attention loses: whole heads (with GQA, a KV head and the query heads sharing it), the
# same index of every head ("dim": head_dim, rotate-half pairs together), or "auto" (whole heads where
# they are prunable, head_dim elsewhere; engine.dependency_graph). See rules/reshape.py.
HEADS_MODES = ("auto", "whole", "dim")
DEFAULT_HEADS = "auto"


@dataclass(frozen=True)
class DimRef:
    """One entry of an integer tensor computed from `Shape` of a channel-carrying tensor: `mult` times
    the number of positions left along position `pos` of `track` (rules/shape_ops.py), times those
    along the grid positions in `times` (a ReduceProd of heads and head_dim). `exact` is False once
    arithmetic other than a product (Equal, Where, Add...) touched the value."""

    track: Track
    pos: int
    mult: int = 1
    exact: bool = True
    times: tuple[tuple[Track, int], ...] = ()

    def axes(self) -> list[tuple[Track, int]]:
        return [(self.track, self.pos), *self.times]


def counted(uf: UnionFind, e: DimRef) -> tuple[Track, int, int] | None:
    """After the walk: the one axis `e` counts that can shrink and its constant factor (the other axes
    never shrink, so they are their sizes), as (track, pos, factor); None when two of them can."""
    axes = e.axes()
    moving = [i for i, (t, p) in enumerate(axes) if not fixed_axis(uf, t, p)]
    if len(moving) > 1:
        return None
    i = moving[0] if moving else 0
    factor = e.mult * math.prod(t.ids.shape[p] for k, (t, p) in enumerate(axes) if k != i)
    return axes[i][0], axes[i][1], factor


@dataclass
class Analysis:
    view: GraphView
    uf: UnionFind
    layouts: dict[str, list[Track]]
    sources: list[Source]
    members: list[ConstMember]
    consume_edges: list[ConsumeEdge]
    hooks: dict[str, list[ApplyHook]]
    blocked: dict[int, list[str]]  # id -> reasons (resolve through roots)
    roots: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    # Opt-in approximate rules (e.g. "layernorm"), and the ids they let through with a reason:
    # such groups can be pruned, but the oracle cannot prove them exact.
    allow_approximate: frozenset[str] = frozenset()
    approximate: dict[int, list[str]] = field(default_factory=dict)
    # How a grouped convolution loses channels: "index" (the same index in every group), "whole"
    # (whole groups, with their input channels) or "auto" (whole where groups are narrow; rules/conv.py).
    grouped: str = DEFAULT_GROUPED
    # Auto mode: the grouped convs analysed with whole groups (name -> output ids), and those kept on
    # the index rule because their whole groups collapsed into one slot (e.g. a channel shuffle).
    whole_convs: dict[str, np.ndarray] = field(default_factory=dict)
    index_convs: frozenset[str] = frozenset()
    # First track given to each (weight, axes): later members of a shared weight couple to it.
    member_index: dict[tuple[str, tuple[int, ...]], Track] = field(default_factory=dict)
    # Attention heads (rules/reshape.py, rules/linear.py). `splits`: Reshapes that cut one channel axis
    # into a grid, and the grid; `attention`: the splits whose grid reached a MatMul of two activations
    # on a batch axis (attention heads), with the grid position of that head axis; `whole_heads`: the
    # splits this analysis couples as whole heads (the others lose the same index in every head).
    heads: str = DEFAULT_HEADS
    whole_heads: dict[str, int] = field(default_factory=dict)
    splits: dict[str, np.ndarray] = field(default_factory=dict)
    split_of: dict[int, str] = field(default_factory=dict)
    attention: dict[str, int] = field(default_factory=dict)
    # Ids of whole heads on the head axis of attention scores (rules/linear.py).
    head_ids: set[int] = field(default_factory=set)
    # Ids that fused attention ops (com.microsoft, rules/contrib_attention.py) cut as whole heads.
    fused_heads: list[np.ndarray] = field(default_factory=list)
    # Integer tensors computed from Shape reads of channel axes: one entry per element (rules/shape_ops.py).
    dim_values: dict[str, list[DimRef | None]] = field(default_factory=dict)
    # Checks that need every coupling: run once after the walk.
    deferred: list[Callable[[], None]] = field(default_factory=list)
    # Embedding tables (rules/concat_split.py): Gather node -> the hidden channels its table's columns
    # are; `bias_tables`: Gathers of per-head bias tables, not sources (analysis.py finds them).
    tables: dict[str, np.ndarray] = field(default_factory=dict)
    bias_tables: frozenset[str] = frozenset()
    # Ids that reach a norm over the channel axis (the residual stream: Group.kind "hidden").
    hidden: set[int] = field(default_factory=set)

    def blocked_roots(self) -> dict[int, list[str]]:
        return _by_root(self.blocked, self.roots)

    def approximate_roots(self) -> dict[int, list[str]]:
        return _by_root(self.approximate, self.roots)


def _by_root(per_id: dict[int, list[str]], roots: np.ndarray) -> dict[int, list[str]]:
    out: dict[int, list[str]] = defaultdict(list)
    for i, reasons in per_id.items():
        r = int(roots[i])
        for reason in reasons:
            if reason not in out[r]:
                out[r].append(reason)
    return out


class RuleContext:
    """What a rule sees of the analysis while it handles one node."""

    def __init__(self, state: Analysis, node: onnx.NodeProto) -> None:
        self.state = state
        self.view = state.view
        self.node = node
        self.opset = state.view.opset

    # -- reading ---------------------------------------------------------------------------
    def input(self, i: int) -> str:
        return self.node.input[i] if i < len(self.node.input) else ""

    def layout(self, name: str) -> list[Track]:
        return self.state.layouts.get(name, []) if name else []

    def in_layout(self, i: int) -> list[Track]:
        return self.layout(self.input(i))

    def shape(self, name: str) -> tuple[int, ...] | None:
        return self.view.shape(name) if name else None

    def is_const(self, name: str) -> bool:
        return bool(name) and self.view.is_const(name)

    def const(self, name: str) -> np.ndarray:
        return self.view.array(name)

    def attr(self, name: str, default: object = None) -> object:
        from onnxprune.graph.view import node_attr

        return node_attr(self.node, name, default)

    def int_attr(self, name: str, default: int) -> int:
        v = self.attr(name, default)
        return int(v)  # type: ignore[call-overload]

    def ints_attr(self, name: str) -> list[int] | None:
        v = self.attr(name, None)
        return None if v is None else [int(x) for x in v]  # type: ignore[attr-defined]

    # -- writing ---------------------------------------------------------------------------
    def set_layout(self, name: str, layout: list[Track]) -> None:
        tracked = [t for t in layout if t.any_tracked()]
        if name and tracked:
            self.state.layouts[name] = tracked

    def new_source(self, n: int, output: str) -> np.ndarray:
        ids = self.state.uf.allocate(n)
        self.state.sources.append(Source(self.node.name, output, ids))
        return ids

    def union(self, a: np.ndarray, b: np.ndarray, *, reason: str) -> None:
        """Couple two id arrays position by position; an id facing an untracked position is blocked."""
        if a.shape != b.shape:
            self.block(a, f"{reason}: shapes {a.shape} and {b.shape} differ")
            self.block(b, f"{reason}: shapes {a.shape} and {b.shape} differ")
            return
        fa, fb = a.reshape(-1), b.reshape(-1)
        for x, y in zip(fa.tolist(), fb.tolist(), strict=True):
            if x >= 0 and y >= 0:
                self.state.uf.union(x, y)
            elif x >= 0 or y >= 0:
                self.block(np.array([max(x, y)]), f"{reason}: coupled with an untracked channel")

    def union_along(self, track: Track, keep_axis_pos: int) -> None:
        """Make removal rectangular: couple all ids that share an index on track.axes[keep_axis_pos]."""
        for row in planes(track.ids, keep_axis_pos):
            valid = row[row >= 0]
            if valid.size and valid.size != row.size:
                self.block(valid, "grouped channels mix tracked and untracked positions")
            for x in valid[1:].tolist():
                self.state.uf.union(int(valid[0]), x)

    def roots_now(self, ids: np.ndarray) -> np.ndarray:
        return roots_now(self.state.uf, ids)

    def coupled_along(self, track: Track) -> int | None:
        """A grid position p whose every hyperplane is one class already (removal takes whole
        hyperplanes along p, so the grid stays rectangular), or None."""
        roots = self.roots_now(track.ids)
        for p in range(roots.ndim):
            if all(len(set(row[row >= 0].tolist())) <= 1 for row in planes(roots, p)):
                return p
        return None

    def fixed(self, track: Track, pos: int) -> bool:
        return fixed_axis(self.state.uf, track, pos)

    def defer(self, fn: Callable[[], None]) -> None:
        """Run fn after the walk, when every coupling is known."""
        self.state.deferred.append(fn)

    def dims(self, name: str) -> list[DimRef | None] | None:
        return self.state.dim_values.get(name) if name else None

    def set_dims(self, name: str, entries: list[DimRef | None]) -> None:
        if name and any(e is not None for e in entries):
            self.state.dim_values[name] = entries

    def escape(self, entries: list[DimRef | None] | None, reason: str) -> None:
        """Channel counts read at run time flow somewhere that changes with them (arithmetic on the
        data, a size of another axis): block their channels unless that axis can never shrink."""
        def check(e: DimRef) -> None:
            if not all(self.fixed(t, p) for t, p in e.axes()):
                self.block([t for t, _ in e.axes()], f"the channel count is read at run time (Shape) and {reason}")

        for e in entries or []:
            if e is not None:
                self.defer(functools.partial(check, e))

    def block(self, ids: np.ndarray | Track | list[Track], reason: str) -> None:
        arrays: list[np.ndarray]
        if isinstance(ids, Track):
            arrays = [ids.ids]
        elif isinstance(ids, list):
            arrays = [t.ids for t in ids]
        else:
            arrays = [ids]
        where = f"{self.node.op_type} '{self.node.name}'"
        for arr in arrays:
            for i in np.unique(arr[arr >= 0]).tolist():
                reasons = self.state.blocked.setdefault(int(i), [])
                full = f"{where}: {reason}"
                if full not in reasons and len(reasons) < 4:
                    reasons.append(full)

    def approximate(self, track: Track, reason: str, *, kind: str) -> bool:
        """If the user allowed `kind`, mark the track's ids approximate and return True; else block them."""
        if kind not in self.state.allow_approximate:
            self.block(track, reason + f" (--approximate {kind} prunes it without the exactness claim)")
            return False
        where = f"{self.node.op_type} '{self.node.name}'"
        for i in np.unique(track.ids[track.ids >= 0]).tolist():
            reasons = self.state.approximate.setdefault(int(i), [])
            if len(reasons) < 4 and f"{where}: {reason}" not in reasons:
                reasons.append(f"{where}: {reason}")
        return True

    def block_inputs(self, reason: str) -> None:
        for x in self.node.input:
            self.block(self.layout(x), reason)

    def member(self, name: str, track: Track, role: str) -> None:
        """A constant parameter sliced along `track`. A weight shared by several nodes (tied weights)
        couples their ids, so it stays one tensor; other shared constants (a deduplicated zero bias)
        couple nothing: apply slices a copy for each reader that needs another slice."""
        if role in TIED_ROLES:
            first = self.state.member_index.setdefault((name, track.axes), track)
            if first is not track:
                self.union(first.ids, track.ids, reason=f"constant {name} shared")
        self.state.members.append(ConstMember(name, track, role, self.node.name))

    def consume(self, input_index: int, track: Track) -> None:
        self.state.consume_edges.append(ConsumeEdge(self.node.name, input_index, self.input(input_index), track))

    def hook(self, fn: ApplyHook, *, node: str | None = None) -> None:
        """Run fn on this node (or on another node, e.g. the Concat building a Reshape target) at apply time."""
        self.state.hooks.setdefault(node or self.node.name, []).append(fn)


def roots_now(uf: UnionFind, ids: np.ndarray) -> np.ndarray:
    """The union-find class of every id as coupled so far (-1 stays -1). Coupling only merges
    classes, so what is one class now stays one class."""
    return np.array([uf.find(int(i)) if i >= 0 else UNTRACKED for i in ids.reshape(-1).tolist()],
                    dtype=np.int64).reshape(ids.shape)


def fixed_axis(uf: UnionFind, track: Track, pos: int) -> bool:
    """Whether the axis at `pos` of `track` can never shrink: every hyperplane along it holds every
    class of the grid, so any removal leaves each hyperplane a position (a grid is never emptied:
    plan.enforce_min_channels)."""
    roots = roots_now(uf, track.ids)
    every = set(roots[roots >= 0].tolist())
    return all(set(row[row >= 0].tolist()) == every for row in planes(roots, pos))


def untracked(n: int) -> np.ndarray:
    return np.full(n, UNTRACKED, dtype=np.int64)

# Opt-in approximate kinds, named after the ops they let channels through: LayerNorm (also ORT's
# SkipLayerNormalization / EmbedLayerNormalization) and RMSNorm (RMSNormalization, ORT's
# (Skip)SimplifiedLayerNormalization, and both written out op by op).
# "rotate" prunes through RMSNorms too, after rotating the residual stream (passes/rotate.py).
APPROXIMATE_KINDS = ("layernorm", "rmsnorm", "rotate")


def allowed_kinds(kinds: Iterable[str]) -> frozenset[str]:
    """The rules a set of --approximate kinds opens: "rotate" slices through RMSNorms like "rmsnorm"."""
    out = frozenset(kinds)
    return out | {"rmsnorm"} if "rotate" in out else out
