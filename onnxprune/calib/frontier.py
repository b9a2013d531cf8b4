"""Calibration passes that start from tensors kept from earlier passes instead of the graph inputs.

A re-fit makes one calibration pass per wave of layers, and a pass from the graph inputs re-runs every
layer above its wave. A `Frontier` runs a planned sequence of passes over held feeds and keeps, per
batch, the tensors later passes start from, so each pass runs only the segment between what is kept
and what it wants (`prefix_model(..., start=...)`). A tensor is kept only once nothing it depends on
changes any more: `changes` names the nodes whose weights are rewritten after a pass (the layers that
pass fits). Kept tensors are bounded by a shared byte `Budget`; one that does not fit is recomputed
from further up (at worst the feeds), so results never depend on the budget, only time does.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence

import numpy as np
import onnx
from onnx import helper

from onnxprune.calib.collect import node_key, prefix_model, reads
from onnxprune.io import runtime
from onnxprune.io.types import Feed


class Budget:
    """Bytes that kept tensors (and held feeds) may take, shared by the frontiers of one run."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0

    def take(self, nbytes: int) -> bool:
        if self.used + nbytes > self.limit:
            return False
        self.used += nbytes
        return True

    def give(self, nbytes: int) -> None:
        self.used -= nbytes


def hold_feeds(batches: Iterable[Feed], budget: Budget) -> list[Feed] | None:
    """The feeds as a list charged to `budget`, or None (and nothing charged) when they do not fit."""
    held: list[Feed] = []
    taken = 0
    for feed in batches:
        arrays = {k: np.asarray(v) for k, v in feed.items()}
        nbytes = sum(a.nbytes for a in arrays.values())
        if not budget.take(nbytes):
            budget.give(taken)
            return None
        taken += nbytes
        held.append(arrays)
    return held


def producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output if o}


def last_change(model: onnx.ModelProto, changes: Mapping[str, int]) -> dict[str, int]:
    """Per tensor, the last pass after which a node it depends on changes (-1: never)."""
    out: dict[str, int] = {}
    for node in model.graph.node:  # ONNX nodes are in topological order
        m = max([changes.get(node_key(node), -1), *(out.get(x, -1) for x in reads(node))])
        out.update((o, m) for o in node.output if o)
    return out


def segment(prod: Mapping[str, onnx.NodeProto], names: Collection[str],
            have: Collection[str]) -> tuple[set[str], set[str]]:
    """(start, computed): the tensors of `have` a run for `names` starts from, and those it computes."""
    start: set[str] = set()
    computed: set[str] = set()
    seen: set[str] = set()
    stack = list(names)
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        if t in have:
            start.add(t)
        elif t in prod:
            node = prod[t]
            computed.update(o for o in node.output if o)
            stack.extend(reads(node))
    return start - computed, computed  # a kept output of a node that runs anyway (a Split's) is not fed


def plan_keeps(model: onnx.ModelProto, requests: Sequence[Collection[str]],
               changes: Mapping[str, int]) -> tuple[list[set[str]], dict[str, int]]:
    """(keep, last): keep[k] the tensors pass k computes that a later pass starts from, were every
    final tensor kept; last[t] the last pass that reads t."""
    prod, final = producers(model), last_change(model, changes)
    made: dict[str, int] = {}  # tensor -> the pass that computed its final value
    keep: list[set[str]] = [set() for _ in requests]
    last: dict[str, int] = {}
    for k, names in enumerate(requests):
        start, computed = segment(prod, names, made)
        for t in start:
            keep[made[t]].add(t)
            last[t] = k
        for t in computed:
            if final.get(t, -1) < k:
                made.setdefault(t, k)
    return keep, last


class Frontier:
    """Runs `requests[k]` on pass k (`run`), starting from the tensors kept by earlier passes.

    The model may change between passes only in the weights of the nodes `changes` names (after the
    pass given), not in its structure. Every pass must be consumed to its end, in order.
    """

    def __init__(self, model: onnx.ModelProto, feeds: Sequence[Feed], requests: Sequence[Sequence[str]],
                 changes: Mapping[str, int], budget: Budget, *, optimize: bool = False) -> None:
        self.feeds, self.requests, self.budget = list(feeds), [list(r) for r in requests], budget
        self.optimize = optimize  # ONNX Runtime graph optimisation of the segments
        self.keep, self.last = plan_keeps(model, self.requests, changes)
        self.kept: dict[str, list[np.ndarray]] = {}  # per tensor, its value for every feed
        self.charged: dict[str, int] = {}  # bytes each kept tensor took from the budget
        self.passes = 0

    def run(self, model: onnx.ModelProto) -> Iterator[dict[str, np.ndarray]]:
        """Per feed, the values of this pass's request (graph inputs taken from the feed)."""
        k = self.passes
        self.passes += 1
        names = self.requests[k]
        prod = producers(model)
        start, computed = segment(prod, names, self.kept)
        store = sorted(t for t in self.keep[k] if t in computed)
        outputs = list(dict.fromkeys([*(n for n in names if n in computed), *store]))
        types = {t: helper.np_dtype_to_tensor_dtype(self.kept[t][0].dtype) for t in start}
        sess = runtime.session(prefix_model(model, outputs, start=types), optimize=self.optimize) if outputs else None
        inputs = {i.name for i in sess.get_inputs()} if sess is not None else set()
        fed = [t for t in start if t in inputs]  # a kept tensor that is only requested is not an input
        storing: dict[str, list[np.ndarray]] = {}
        charged: dict[str, int] = {}
        try:
            for b, feed in enumerate(self.feeds):
                vals = runtime.run(sess, {**feed, **{t: self.kept[t][b] for t in fed}}, outputs) if sess else {}
                if b == 0:  # a tensor is kept for every batch or not at all
                    for t in store:
                        if self.budget.take(vals[t].nbytes * len(self.feeds)):
                            storing[t], charged[t] = [], vals[t].nbytes * len(self.feeds)
                for t, held in storing.items():
                    held.append(vals[t])
                yield {n: vals[n] if n in vals else self.kept[n][b] if n in self.kept else np.asarray(feed[n])
                       for n in names}
            self.kept.update(storing)
            self.charged.update(charged)
            charged = {}
        finally:
            for nbytes in charged.values():  # an abandoned pass keeps nothing
                self.budget.give(nbytes)
            for t in [t for t in self.kept if self.last.get(t, -1) <= k]:
                del self.kept[t]
                self.budget.give(self.charged.pop(t))
