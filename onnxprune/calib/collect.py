"""Capture intermediate activations with ONNX Runtime and reduce them to streaming statistics.

The chosen tensors are the graph outputs of a copy of the model cut to the nodes they need (graph
optimisation off, so every tensor still exists). Batches are processed one at a time and each
is reduced into running sums (`ChannelStats`, `LayerGram`) before the next one is read, so
memory is bounded by one batch of the chosen tensors plus the accumulators: per-channel vectors,
and one d x d float64 Gram per layer (d = (C/g)*kh*kw for a Conv, K for Gemm/MatMul). Conv
patches are materialised at most `ROW_CHUNK` rows at a time; `max_rows` subsamples output
positions per batch (seeded) when there are more.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from google.protobuf.message import Message
from onnx import helper

from onnxprune.calib.layer_grams import (
    LayerGram,
    RowWeight,
    linear_rows,
    make_layer_gram,
    node_key,
    target_rows,
)
from onnxprune.calib.stats import ChannelStats, GramStats
from onnxprune.errors import OnnxPruneError
from onnxprune.io import runtime
from onnxprune.io.types import Feed

DEFAULT_MAX_ROWS = 8192

__all__ = [
    "DEFAULT_MAX_ROWS", "ActivationStats", "ChannelStats", "GramStats", "LayerGram", "channel_axis_for",
    "collect_channel_stats", "collect_grams", "collect_stats", "expose_outputs", "feed_samples", "find_node",
    "gram_stats_from", "node_key", "prefix_model", "reads", "stream_tensors",
]


def expose_outputs(model: onnx.ModelProto, names: Iterable[str]) -> onnx.ModelProto:
    """A copy of `model` with `names` added as graph outputs (untyped; ORT infers them)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    have = {o.name for o in out.graph.output}
    for n in names:
        if n not in have:
            out.graph.output.append(onnx.ValueInfoProto(name=n))
            have.add(n)
    return out


def reads(node: onnx.NodeProto) -> Iterator[str]:
    """The tensor names a node reads, its subgraphs' outer-scope reads included (over-approximated by
    every name their nodes read)."""
    yield from (x for x in node.input if x)
    for a in node.attribute:
        for g in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
            for inner in g.node:
                yield from reads(inner)


def prefix_model(model: onnx.ModelProto, names: Iterable[str], *,
                 start: Mapping[str, int] | None = None) -> onnx.ModelProto:
    """A copy of `model` whose only outputs are `names` and whose nodes are those they depend on:
    ONNX Runtime runs every node of a graph whatever outputs are fetched, so a run for early tensors
    would otherwise pay for the whole model. Graph inputs are all kept (every feed stays valid); only
    the initializers the kept nodes read are copied (an early wave does not load every weight).
    start: tensors fed as extra graph inputs ({name: ONNX element type}); the nodes that make them are
    left out, so the model is the segment between them and `names` (calib.frontier)."""
    wanted = list(dict.fromkeys(names))
    given = dict(start or {})
    need = set(wanted)
    keep: list[onnx.NodeProto] = []
    for node in reversed(model.graph.node):
        if any(o in need and o not in given for o in node.output):
            keep.append(node)
            need.update(reads(node))
    made = {o for n in keep for o in n.output}
    fed = [n for n in given if n in need and n not in made]
    graph = model.graph
    out = onnx.ModelProto()
    for fd, value in model.ListFields():  # everything but the graph, which is rebuilt below
        if fd.name == "graph":
            continue
        if isinstance(value, Message):
            getattr(out, fd.name).CopyFrom(value)
        elif hasattr(value, "extend"):  # a repeated field (descriptor labels differ across protobuf versions)
            getattr(out, fd.name).extend(value)
        else:
            setattr(out, fd.name, value)
    g = out.graph
    g.name = graph.name
    inits = {t.name for t in graph.initializer}
    g.input.extend(i for i in graph.input if i.name in need or i.name not in inits)  # unread overridable constants go
    g.input.extend(helper.make_tensor_value_info(n, given[n], None) for n in fed)
    g.node.extend(reversed(keep))
    g.initializer.extend(t for t in graph.initializer if t.name in need)
    g.sparse_initializer.extend(t for t in graph.sparse_initializer if t.values.name in need)
    g.value_info.extend(v for v in graph.value_info if v.name not in given)
    g.output.extend(onnx.ValueInfoProto(name=n) for n in wanted)
    return out


def stream_tensors(model: onnx.ModelProto, names: Sequence[str], batches: Iterable[Feed],
                   *, threads: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """For each feed, the values of `names` (graph inputs are taken from the feed itself)."""
    inputs = {i.name for i in model.graph.input}
    produced = {o for n in model.graph.node for o in n.output}
    unknown = [n for n in names if n not in inputs and n not in produced]
    if unknown:
        raise OnnxPruneError(f"tensor(s) not produced by any node: {', '.join(unknown[:5])}")
    computed = list(dict.fromkeys(n for n in names if n not in inputs))
    sess = runtime.session(prefix_model(model, computed), threads=threads) if computed else None
    for feed in batches:
        vals = runtime.run(sess, feed, computed) if sess is not None else {}
        vals.update({n: np.asarray(feed[n]) for n in names if n in inputs})
        yield vals


def find_node(model: onnx.ModelProto, key: str) -> onnx.NodeProto:
    for node in model.graph.node:
        if node_key(node) == key:
            return node
    raise OnnxPruneError(f"no node named {key!r}")


def channel_axis_for(model: onnx.ModelProto, tensor: str) -> int:
    """Channel axis of a tensor from its consumers: last axis for MatMul A, per transA for Gemm, else 1."""
    for node in model.graph.node:
        if node.input and node.input[0] == tensor:
            if node.op_type == "MatMul":
                return -1
            if node.op_type == "Gemm":
                trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
                return 0 if trans_a else 1
    return 1


@dataclass
class ActivationStats:
    channels: dict[str, ChannelStats] = field(default_factory=dict)
    grams: dict[str, LayerGram] = field(default_factory=dict)
    batches: int = 0
    samples: int = 0


def _weight_shape(model: onnx.ModelProto, node: onnx.NodeProto) -> tuple[int, ...] | None:
    for t in model.graph.initializer:
        if len(node.input) > 1 and t.name == node.input[1]:
            return tuple(int(d) for d in t.dims)
    return None


def _gram_layers(model: onnx.ModelProto, nodes: Sequence[str], targets: Mapping[str, str],
                 max_rows: int | None, seed: int, row_weights: Mapping[str, RowWeight],
                 holdout: bool = False) -> dict[str, LayerGram]:
    layers: dict[str, LayerGram] = {}
    for i, key in enumerate(nodes):
        node = find_node(model, key)
        layers[key] = make_layer_gram(node, _weight_shape(model, node), target=targets.get(key),
                                      max_rows=max_rows, seed=seed + i, row_weight=row_weights.get(key),
                                      holdout=holdout)
    return layers


def _check_targets(targets: Mapping[str, str], nodes: Sequence[str]) -> None:
    extra = [k for k in targets if k not in nodes]
    if extra:
        raise OnnxPruneError(f"targets given for nodes without a Gram request: {', '.join(extra)}")


def collect_stats(model: onnx.ModelProto, batches: Iterable[Feed], *,
                  channels: Mapping[str, int] | Sequence[str] = (), grams: Sequence[str] = (),
                  targets: Mapping[str, str] | None = None, target_model: onnx.ModelProto | None = None,
                  max_rows: int | None = DEFAULT_MAX_ROWS, seed: int = 0, threads: int = 0,
                  row_weights: Mapping[str, RowWeight] | None = None, holdout: bool = False) -> ActivationStats:
    """One pass over `batches` accumulating everything requested.

    channels: tensor names (axis from `channel_axis_for`) or {tensor: axis}.
    grams: node keys (name, or first output if unnamed) of Conv/ConvTranspose/Gemm/MatMul nodes: XᵀX
      of their data input. targets: {node key: tensor} adds XᵀY with Y's rows aligned to X's (for a
      Conv or ConvTranspose, Y is [N, K, Ho, Wo], split per group). The target tensors come from `target_model` run on the same
      feeds (default: `model` itself), e.g. the dense model's layer output for reconstruction.
    max_rows: rows (output positions) kept per batch and layer, sampled with `seed`; None keeps all.
    row_weights: {node key: f(Y rows) -> row weights} for weighted XᵀX/XᵀY (layers with a target).
    holdout: also keep each Gram's sums over every second sample (`LayerGram.holdout`).
    """
    targets = dict(targets or {})
    _check_targets(targets, grams)
    axes = dict(channels) if isinstance(channels, Mapping) else {t: channel_axis_for(model, t) for t in channels}
    result = ActivationStats(channels={t: ChannelStats(axis=a) for t, a in axes.items()},
                             grams=_gram_layers(model, grams, targets, max_rows, seed, row_weights or {}, holdout))
    same = target_model is None
    names = list(dict.fromkeys([*axes, *(g.input for g in result.grams.values()),
                                *(targets.values() if same else ())]))
    tsess = None if same else runtime.session(prefix_model(target_model, targets.values()),  # type: ignore[arg-type]
                                              threads=threads)

    def values() -> Iterator[tuple[int, Mapping[str, np.ndarray]]]:
        for feed, vals in _paired(batches, model, names, threads):
            if tsess is not None:
                vals = {**vals, **runtime.run(tsess, feed, list(dict.fromkeys(targets.values())))}
            yield feed_samples(feed), vals

    return _accumulate(result, model, values())


def feed_samples(feed: Feed) -> int:
    """Samples in one feed: the leading dim of its first input."""
    return int(next(iter(feed.values())).shape[0]) if feed else 0


def gram_stats_from(model: onnx.ModelProto, values: Iterable[tuple[int, Mapping[str, np.ndarray]]], *,
                    grams: Sequence[str], targets: Mapping[str, str] | None = None,
                    max_rows: int | None = DEFAULT_MAX_ROWS, seed: int = 0,
                    row_weights: Mapping[str, RowWeight] | None = None, holdout: bool = False) -> ActivationStats:
    """`collect_stats`' Grams on tensors computed elsewhere: `values` gives per batch (samples,
    {tensor: value}) with every node's data input and target (calib.frontier runs a segment per pass)."""
    targets = dict(targets or {})
    _check_targets(targets, grams)
    result = ActivationStats(grams=_gram_layers(model, grams, targets, max_rows, seed, row_weights or {}, holdout))
    return _accumulate(result, model, values)


def _accumulate(result: ActivationStats, model: onnx.ModelProto,
                values: Iterable[tuple[int, Mapping[str, np.ndarray]]]) -> ActivationStats:
    nodes = {k: find_node(model, k) for k in result.grams}
    for samples, vals in values:
        for t, st in result.channels.items():
            st.update(vals[t])
        for key, lg in result.grams.items():
            _update_gram(lg, nodes[key], vals, samples)
        result.batches += 1
        result.samples += samples
    if result.batches == 0:
        raise OnnxPruneError("calibration data produced no batches")
    for lg in result.grams.values():
        lg.finish()
    return result


def _paired(batches: Iterable[Feed], model: onnx.ModelProto, names: Sequence[str],
            threads: int) -> Iterator[tuple[Feed, dict[str, np.ndarray]]]:
    """Feeds alongside the captured tensors (the feed is kept for the target session)."""
    held: list[Feed] = []

    def tee() -> Iterator[Feed]:
        for feed in batches:
            held[:] = [feed]
            yield feed

    for vals in stream_tensors(model, names, tee(), threads=threads):
        yield held[0], vals


def _update_gram(lg: LayerGram, node: onnx.NodeProto, vals: Mapping[str, np.ndarray], samples: int) -> None:
    x = vals[lg.input]
    y = vals[lg.target] if lg.target is not None else None
    if lg.geometry is not None:
        lg.update(x, y)
        return
    xr = linear_rows(node, x)
    yr = None if y is None else target_rows(node, y)
    if yr is not None and yr.shape[0] != xr.shape[0]:
        raise OnnxPruneError(f"{lg.node}: target {lg.target!r} has {yr.shape[0]} rows, the input has {xr.shape[0]}")
    lg.update(xr, yr, samples=samples)


def collect_channel_stats(model: onnx.ModelProto, batches: Iterable[Feed],
                          tensors: Mapping[str, int] | Sequence[str]) -> dict[str, ChannelStats]:
    """Per-channel count/sum/sumsq/sum|x|/zeros of `tensors` (see `collect_stats`)."""
    return collect_stats(model, batches, channels=tensors).channels


def collect_grams(model: onnx.ModelProto, batches: Iterable[Feed], nodes: Sequence[str], *,
                  targets: Mapping[str, str] | None = None, target_model: onnx.ModelProto | None = None,
                  max_rows: int | None = DEFAULT_MAX_ROWS, seed: int = 0) -> dict[str, LayerGram]:
    """Input Gram XᵀX (and XᵀY) of Conv/ConvTranspose/Gemm/MatMul nodes (see `collect_stats`)."""
    return collect_stats(model, batches, grams=nodes, targets=targets, target_model=target_model,
                         max_rows=max_rows, seed=seed).grams


