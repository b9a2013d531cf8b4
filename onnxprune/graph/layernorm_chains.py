"""LayerNorm and RMSNorm written out as a chain of elementary ops, as TF/JAX (tf2onnx) and TorchScript
below opset 17 export LayerNorm, and every torch exporter exports LlamaRMSNorm / T5LayerNorm: found by
structure, so that a LayerNorm can be fused (passes/normalize.py) and either can be analysed as one norm
(rules/norm.py) instead of op by op.

The forms found, over the last axis of x (mean: ReduceMean over the last axis with keepdims, or
GlobalAveragePool of a rank-3 tensor, which averages its last axis):

- TorchScript LayerNorm: d = x - mean(x); v = mean(d·d or d^2); n = d / sqrt(v + eps) (or
  d · 1/sqrt(v + eps)); then optionally n · gamma, + beta;
- tf2onnx (Keras' batchnorm form): r = 1/sqrt(v + eps); m = r · gamma (gamma optional);
  y = x · m + (beta - mean · m);
- RMSNorm (`centered` False): v = mean(x^2 or x·x); n = x / sqrt(v + eps), or x · r with
  r = 1/sqrt(v + eps) (Reciprocal, or Div(1, ·)); then optionally n · gamma. A Cast of x read only
  by the chain (torch's upcast), and one between n and gamma, belong to it.

Every intermediate tensor must be read only inside the chain (and not be a graph output); gamma,
beta, eps and the exponent 2 must be constants; gamma and beta span the last axis only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx

from onnxprune.graph.view import GraphView, node_attr

RankOf = Callable[[str], int | None]


@dataclass(frozen=True)
class LayerNormChain:
    input: str
    output: str
    nodes: tuple[str, ...]  # in graph order: the last one writes `output`
    epsilon: float
    scale: tuple[str, str] | None  # (constant gamma, the chain node that reads it)
    bias: tuple[str, str] | None  # (constant beta, the chain node that reads it)
    centered: bool = True  # False: an RMSNorm (no mean subtracted)
    # RMSNorm: the constant eps and the Add that reads it (what a hidden-width slice rescales).
    eps_input: tuple[str, str] | None = None


class _Walk:
    """Follows the chain through the consumers of each tensor; every step either finds one node or fails."""

    def __init__(self, view: GraphView, rank_of: RankOf) -> None:
        self.view, self.rank_of = view, rank_of
        self.nodes: list[onnx.NodeProto] = []
        self.names: set[str] = set()

    def take(self, node: onnx.NodeProto | None) -> onnx.NodeProto | None:
        if node is not None:
            self.nodes.append(node)
            self.names.add(node.name)
        return node

    def reader(self, tensor: str, op: str, *others: str) -> onnx.NodeProto | None:
        """The node `op` reading `tensor` whose other inputs are exactly `others` (in any order)."""
        for node, _ in self.view.consumers.get(tensor, []):
            if node.op_type == op and node.domain in ("", "ai.onnx") and \
                    sorted(node.input) == sorted([tensor, *others]) and node.name not in self.names:
                return node
        return None

    def const_reader(self, tensor: str, op: str) -> tuple[onnx.NodeProto, str] | None:
        """The node `op`(tensor, constant) (either order), and the constant."""
        for node, idx in self.view.consumers.get(tensor, []):
            if node.op_type == op and node.domain in ("", "ai.onnx") and len(node.input) == 2:
                other = node.input[1 - idx]
                if other != tensor and self.view.is_const(other) and node.name not in self.names:
                    return node, other
        return None

    def scalar(self, name: str) -> float | None:
        if not self.view.is_const(name):
            return None
        value = self.view.array(name)
        return float(value.reshape(-1)[0]) if value.size == 1 else None

    def per_channel(self, name: str) -> bool:
        """A constant with one value per channel of the last axis ([H] or [1, .., H])."""
        dims = self.view.shape(name) or ()
        return len(dims) >= 1 and dims[-1] > 1 and all(d == 1 for d in dims[:-1])

    def mean(self, node: onnx.NodeProto | None, x: str) -> bool:
        """Whether `node` averages the last axis of x, keeping it."""
        if node is None or node.input[0] != x or node.domain not in ("", "ai.onnx"):
            return False
        rank = self.rank_of(x)
        if node.op_type == "GlobalAveragePool":
            return rank == 3
        if node.op_type != "ReduceMean" or node_attr(node, "keepdims", 1) != 1:
            return False
        axes: object = node_attr(node, "axes", None)
        if len(node.input) > 1 and node.input[1]:
            axes = self.view.array(node.input[1]).tolist() if self.view.is_const(node.input[1]) else None
        if not isinstance(axes, list) or len(axes) != 1:
            return False
        return bool(axes[0] == -1 or (rank is not None and axes[0] == rank - 1))


def find_layernorm_chains(view: GraphView, rank_of: RankOf) -> list[LayerNormChain]:
    """Every decomposed LayerNorm of the main graph; `rank_of(tensor)` gives ranks where known."""
    return [c for c in find_norm_chains(view, rank_of) if c.centered]


def find_norm_chains(view: GraphView, rank_of: RankOf) -> list[LayerNormChain]:
    """Every decomposed LayerNorm and RMSNorm of the main graph."""
    found: list[LayerNormChain] = []
    used: set[str] = set()
    order = {n.name: i for i, n in enumerate(view.graph.node)}
    for node in view.graph.node:
        if node.op_type in ("ReduceMean", "GlobalAveragePool") and node.name not in used:
            chain = _match(view, rank_of, node, order) or _match_rms(view, rank_of, node, order)
            if chain is not None and not used & set(chain.nodes):
                found.append(chain)
                used.update(chain.nodes)
    return found


def _match(view: GraphView, rank_of: RankOf, mean: onnx.NodeProto,
           order: dict[str, int]) -> LayerNormChain | None:
    w = _Walk(view, rank_of)
    x = mean.input[0]
    if view.is_const(x) or not w.mean(mean, x):
        return None
    w.take(mean)
    m = mean.output[0]
    sub = w.take(w.reader(m, "Sub", x))
    if sub is None or list(sub.input) != [x, m]:
        return None
    d = sub.output[0]
    square = w.take(w.reader(d, "Mul", d))
    if square is None:
        found = w.const_reader(d, "Pow")
        if found is None or w.scalar(found[1]) != 2.0 or found[0].input[0] != d:
            return None
        square = found[0]
        w.take(square)
    var = next((n for n, _ in view.consumers.get(square.output[0], []) if w.mean(n, square.output[0])), None)
    if w.take(var) is None:
        return None
    assert var is not None
    root = _root(w, var.output[0])
    if root is None:
        return None
    _, eps, s = root
    div = w.reader(s, "Div", d)
    if div is not None and list(div.input) == [d, s]:
        w.take(div)
        return _affine_tail(w, view, div.output[0], x, eps, order)
    recip = w.take(w.reader(s, "Reciprocal"))
    if recip is None:
        return None
    r = recip.output[0]
    times = w.take(w.reader(r, "Mul", d))
    if times is not None:
        return _affine_tail(w, view, times.output[0], x, eps, order)
    return _batchnorm_tail(w, view, r, x, m, eps, order)


def _match_rms(view: GraphView, rank_of: RankOf, mean: onnx.NodeProto,
               order: dict[str, int]) -> LayerNormChain | None:
    """v = mean(x^2); n = x / sqrt(v + eps) or x · (1/sqrt(v + eps)); optionally · gamma."""
    w = _Walk(view, rank_of)
    sq = view.producer.get(mean.input[0], (None,))[0] if mean.input else None
    if sq is None or sq.domain not in ("", "ai.onnx"):
        return None
    if sq.op_type == "Pow" and w.scalar(sq.input[1]) == 2.0 or sq.op_type == "Mul" and sq.input[0] == sq.input[1]:
        x = sq.input[0]
    else:
        return None
    if view.is_const(x) or not w.mean(mean, sq.output[0]):
        return None
    w.take(sq)
    w.take(mean)
    root = _root(w, mean.output[0])
    if root is None:
        return None
    add, eps, s = root
    div = w.reader(s, "Div", x)
    if div is not None and list(div.input) == [x, s]:
        n = w.take(div)
    else:
        recip = w.reader(s, "Reciprocal")
        if recip is None:
            one = next((c for c, i in view.consumers.get(s, []) if c.op_type == "Div" and i == 1
                        and w.scalar(c.input[0]) == 1.0), None)
            recip = one
        if w.take(recip) is None:
            return None
        assert recip is not None
        n = w.take(w.reader(recip.output[0], "Mul", x))
    if n is None:
        return None
    out = n.output[0]
    cast = _only_reader(view, out, "Cast")
    if cast is not None:
        w.take(cast)
        out = cast.output[0]
    upcast = view.producer.get(x, (None,))[0]
    if upcast is not None and upcast.op_type == "Cast" and \
            all(c.name in w.names for c, _ in view.consumers.get(x, [])) and x not in view.graph_outputs:
        w.take(upcast)
        x = upcast.input[0]
    chain = _affine_tail(w, view, out, x, eps, order, bias=False)
    if chain is None:
        return None
    return dataclasses.replace(chain, centered=False, eps_input=(add[1], add[0].name))


def _root(w: _Walk, var: str) -> tuple[tuple[onnx.NodeProto, str], float, str] | None:
    """sqrt(var + eps): ((the Add, eps's name), eps, the Sqrt's output)."""
    add = w.const_reader(var, "Add")
    eps = w.scalar(add[1]) if add is not None else None
    if add is None or eps is None:
        return None
    w.take(add[0])
    sqrt = w.take(w.reader(add[0].output[0], "Sqrt"))
    return None if sqrt is None else (add, eps, sqrt.output[0])


def _only_reader(view: GraphView, tensor: str, op: str) -> onnx.NodeProto | None:
    readers = view.consumers.get(tensor, [])
    if len(readers) == 1 and readers[0][0].op_type == op and readers[0][0].domain in ("", "ai.onnx"):
        return readers[0][0]
    return None


def _affine_tail(w: _Walk, view: GraphView, n: str, x: str, eps: float,
                 order: dict[str, int], *, bias: bool = True) -> LayerNormChain | None:
    """n (the normalised x), then optionally · gamma and + beta."""
    scale = None
    found = w.const_reader(n, "Mul")
    if found is not None and w.per_channel(found[1]) and len(view.consumers.get(n, [])) == 1:
        w.take(found[0])
        scale, n = (found[1], found[0].name), found[0].output[0]
    shift = None
    found = w.const_reader(n, "Add") if bias else None
    if found is not None and w.per_channel(found[1]) and len(view.consumers.get(n, [])) == 1:
        w.take(found[0])
        shift, n = (found[1], found[0].name), found[0].output[0]
    return _closed(w, view, x, n, eps, scale, shift, order)


def _batchnorm_tail(w: _Walk, view: GraphView, r: str, x: str, mean: str, eps: float,
                    order: dict[str, int]) -> LayerNormChain | None:
    """y = x · m + (beta - mean · m), m = r · gamma (or r)."""
    scale = None
    found = w.const_reader(r, "Mul")
    m = r
    if found is not None and w.per_channel(found[1]):
        w.take(found[0])
        scale, m = (found[1], found[0].name), found[0].output[0]
    xm = w.take(w.reader(m, "Mul", x))
    mm = w.take(w.reader(m, "Mul", mean))
    if xm is None or mm is None:
        return None
    shifted = next((n for n, i in view.consumers.get(mm.output[0], []) if n.op_type == "Sub" and i == 1
                    and view.is_const(n.input[0]) and w.per_channel(n.input[0])), None)
    if w.take(shifted) is None:
        return None
    assert shifted is not None
    y = w.take(w.reader(xm.output[0], "Add", shifted.output[0]))
    if y is None:
        return None
    return _closed(w, view, x, y.output[0], eps, scale, (shifted.input[0], shifted.name), order)


def _closed(w: _Walk, view: GraphView, x: str, y: str, eps: float, scale: tuple[str, str] | None,
            bias: tuple[str, str] | None, order: dict[str, int]) -> LayerNormChain | None:
    """The chain, if nothing outside it reads what it computes on the way (else None)."""
    names = w.names
    for node in w.nodes:
        for out in node.output:
            if out == y:
                continue
            if out in view.graph_outputs or out in view.captured or \
                    any(c.name not in names for c, _ in view.consumers.get(out, [])):
                return None
    nodes = tuple(sorted(names, key=order.__getitem__))
    if view.producer.get(y, (None,))[0] is None or view.producer[y][0].name != nodes[-1]:
        return None
    return LayerNormChain(x, y, nodes, float(np.float32(eps)), scale, bias)
