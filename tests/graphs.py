"""Tiny ONNX graphs built in code, and the checks every channel-rule test runs on them.

Nodes are named after their first output, so a test refers to a source by the tensor it makes::

    g = Graph(opset=17)
    x = g.input("x", (1, 4, 8, 8))
    y = g.conv(g.relu(g.conv(x, 4, 8, name="c1")), 8, 4, name="c2")
    g.output(y)
    results = exercise(g.build())          # ratio + random plans, oracle, checker, shapes
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxprune.api import PruneResult, analyse, prune
from onnxprune.errors import NothingToPruneError
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.graph.groups import Group
from onnxprune.graph.tracks import map_roots
from onnxprune.io.inputs import random_inputs
from onnxprune.io.model_io import check_model, unchecked_ops
from onnxprune.io.runtime import run, session
from onnxprune.io.types import Shapes
from onnxprune.planning.plan import Plan

IR_VERSION = 10


@dataclass
class Graph:
    """Accumulates nodes, initializers and I/O; `build()` makes the model."""

    opset: int = 17
    seed: int = 0
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    inits: list[onnx.TensorProto] = field(default_factory=list)
    inputs: list[onnx.ValueInfoProto] = field(default_factory=list)
    outputs: list[onnx.ValueInfoProto] = field(default_factory=list)
    domains: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self._k = 0

    # -- I/O and constants ---------------------------------------------------------------------
    def input(self, name: str, shape: Sequence[int | str | None], elem: int = TensorProto.FLOAT) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem, list(shape)))
        return name

    def output(self, name: str, elem: int = TensorProto.FLOAT) -> str:
        self.outputs.append(helper.make_tensor_value_info(name, elem, None))
        return name

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def ints(self, name: str, values: Sequence[int] | Sequence[Sequence[int]]) -> str:
        return self.const(name, np.array(values, dtype=np.int64))

    def rand(self, name: str, shape: Sequence[int], *, scale: float = 0.5, low: float | None = None) -> str:
        """Random float32 constant (uniform in [low, low + scale] when low is given, else N(0, scale))."""
        if low is not None:
            value = low + scale * self.rng.random(tuple(shape))
        else:
            value = scale * self.rng.standard_normal(tuple(shape))
        return self.const(name, value.astype(np.float32))

    def fresh(self, prefix: str) -> str:
        self._k += 1
        return f"{prefix}{self._k}"

    # -- nodes ---------------------------------------------------------------------------------
    def node(self, op: str, inputs: Sequence[str], *, name: str | None = None, n_out: int = 1,
             domain: str = "", attrs: Mapping[str, object] | None = None, **kwargs: object) -> str:
        """Add a node; returns its first output (named like the node). Attributes: `attrs` and kwargs."""
        return self.node_multi(op, inputs, name=name, n_out=n_out, domain=domain, attrs=attrs, **kwargs)[0]

    def node_multi(self, op: str, inputs: Sequence[str], *, name: str | None = None, n_out: int = 1,
                   domain: str = "", attrs: Mapping[str, object] | None = None, **kwargs: object) -> list[str]:
        base = name or self.fresh(op.lower())
        outs = [base] + [f"{base}_{i}" for i in range(1, n_out)]
        all_attrs = {**(attrs or {}), **kwargs}
        node = helper.make_node(op, list(inputs), outs, name=base, domain=domain or None)
        node.attribute.extend(helper.make_attribute(k, v) for k, v in all_attrs.items())
        self.nodes.append(node)
        if domain and domain not in self.domains:
            self.domains[domain] = 1
        return outs

    def relu(self, x: str, *, name: str | None = None) -> str:
        return self.node("Relu", [x], name=name)

    def conv(self, x: str, cin: int, cout: int, *, k: int = 3, group: int = 1, bias: bool = True, rank: int = 2,
             name: str | None = None, pad: bool = True) -> str:
        """Conv of any spatial rank, 'same' padding by default; weights N(0, 1/sqrt(fan_in))."""
        name = name or self.fresh("conv")
        fan_in = cin // group * k**rank
        w = self.rand(f"{name}.w", (cout, cin // group, *([k] * rank)), scale=1.0 / np.sqrt(fan_in))
        ins = [x, w] + ([self.rand(f"{name}.b", (cout,), scale=0.1)] if bias else [])
        attrs: dict[str, object] = {"kernel_shape": [k] * rank, "group": group}
        if pad:
            attrs["pads"] = [k // 2] * (2 * rank)
        return self.node("Conv", ins, name=name, attrs=attrs)

    def conv_transpose(self, x: str, cin: int, cout: int, *, k: int = 2, stride: int = 2, group: int = 1,
                       rank: int = 2, bias: bool = True, name: str | None = None,
                       **attrs: object) -> str:
        """ConvTranspose (W [cin, cout/group, k...]); other attributes (pads, dilations, output_padding,
        auto_pad, or strides per axis) as keyword arguments."""
        name = name or self.fresh("convt")
        w = self.rand(f"{name}.w", (cin, cout // group, *([k] * rank)), scale=1.0 / np.sqrt(cin * k**rank))
        ins = [x, w] + ([self.rand(f"{name}.b", (cout,), scale=0.1)] if bias else [])
        return self.node("ConvTranspose", ins, name=name,
                         attrs={"kernel_shape": [k] * rank, "strides": [stride] * rank, "group": group, **attrs})

    def bn(self, x: str, c: int, *, name: str | None = None) -> str:
        """BatchNormalization with non-trivial statistics (scale, bias, mean, var all random)."""
        name = name or self.fresh("bn")
        ins = [x, self.rand(f"{name}.scale", (c,), low=0.5, scale=1.0), self.rand(f"{name}.bias", (c,), scale=0.2),
               self.rand(f"{name}.mean", (c,), scale=0.2), self.rand(f"{name}.var", (c,), low=0.5, scale=1.0)]
        return self.node("BatchNormalization", ins, name=name, epsilon=1e-5)

    def gemm(self, x: str, k: int, n: int, *, trans_b: bool = True, bias: bool = True, name: str | None = None) -> str:
        name = name or self.fresh("gemm")
        w = self.rand(f"{name}.w", (n, k) if trans_b else (k, n), scale=1.0 / np.sqrt(k))
        ins = [x, w] + ([self.rand(f"{name}.b", (n,), scale=0.1)] if bias else [])
        return self.node("Gemm", ins, name=name, transB=int(trans_b))

    def matmul(self, x: str, k: int, n: int, *, bias: bool = False, name: str | None = None) -> str:
        """x @ W (+ b as a separate Add, the way exporters write linear layers)."""
        name = name or self.fresh("mm")
        w = self.rand(f"{name}.w", (k, n), scale=1.0 / np.sqrt(k))
        y = self.node("MatMul", [x, w], name=name)
        if bias:
            y = self.node("Add", [y, self.rand(f"{name}.b", (n,), scale=0.1)], name=f"{name}_bias")
        return y

    def build(self, *, ir_version: int = IR_VERSION, name: str = "g") -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, self.inputs, self.outputs, initializer=self.inits)
        opsets = [helper.make_opsetid("", self.opset)] + [helper.make_opsetid(d, v) for d, v in self.domains.items()]
        model = helper.make_model(graph, opset_imports=opsets, ir_version=ir_version)
        _fill_output_types(model)
        check_model(model)
        return model


def _fill_output_types(model: onnx.ModelProto) -> None:
    """Give graph outputs the types shape inference finds for them (the checker wants a shape)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    known = {vi.name: vi for vi in [*inferred.graph.value_info, *inferred.graph.output]}
    missing = []
    for out in model.graph.output:
        if out.type.tensor_type.HasField("shape"):
            continue
        if out.name in known and known[out.name].type.tensor_type.HasField("shape"):
            out.CopyFrom(known[out.name])
        else:
            missing.append(out)
    if missing:  # shape inference cannot follow (run-time targets, custom ops): symbolic dims of the real rank
        values = outputs_of(model, random_inputs(model))
        for out in missing:
            dims = [f"{out.name}_d{i}" for i in range(values[out.name].ndim)]
            out.CopyFrom(helper.make_tensor_value_info(out.name, out.type.tensor_type.elem_type, dims))


def make_model(nodes: Sequence[onnx.NodeProto], inits: Mapping[str, np.ndarray],
               inputs: Mapping[str, Sequence[int | str | None]], outputs: Sequence[str], *,
               opset: int = 17) -> onnx.ModelProto:
    """A float32 model from plain nodes and numpy initializers."""
    graph = helper.make_graph(
        list(nodes), "g",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v)) for k, v in inputs.items()],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION)


# -- looking things up ----------------------------------------------------------------------------
def group_of(dg: DependencyGraph, source: str) -> Group:
    """The group a source node belongs to."""
    found = [g for g in dg.groups if source in g.sources]
    assert len(found) == 1, f"{source} is in {len(found)} groups: {[g.sources for g in dg.groups]}"
    return found[0]


def reasons(dg: DependencyGraph, source: str) -> str:
    return " | ".join(group_of(dg, source).blocked)


def get_node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def attr(model: onnx.ModelProto, node: str, name: str) -> object:
    a = next((a for a in get_node(model, node).attribute if a.name == name), None)
    return None if a is None else helper.get_attribute_value(a)


def init(model: onnx.ModelProto, name: str) -> np.ndarray:
    return numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name))


def set_init(model: onnx.ModelProto, name: str, fn: Callable[[np.ndarray], np.ndarray]) -> None:
    """Replace initializer `name` by fn(its value), as float32."""
    t = next(t for t in model.graph.initializer if t.name == name)
    t.CopyFrom(numpy_helper.from_array(fn(numpy_helper.to_array(t).copy()).astype(np.float32), name))


def source_roots(dg: DependencyGraph, source: str, channels: Sequence[int]) -> set[int]:
    """Removed roots (slots) for output channels of `source`; coupled channels go with them."""
    src = next(s for s in dg.analysis.sources if s.node == source)
    return {int(r) for r in map_roots(dg.analysis.roots, src.ids[list(channels)])}


def node_const(model: onnx.ModelProto, node: str, index: int) -> np.ndarray:
    """The constant a node reads at input `index` (after pruning, maybe a renamed copy)."""
    return init(model, get_node(model, node).input[index])


def outputs_of(model: onnx.ModelProto, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return run(session(model), feed)


# -- plans ----------------------------------------------------------------------------------------
def plan_removing(dg: DependencyGraph, removals: Mapping[str, Sequence[int]]) -> Plan:
    """A plan removing the given slot indices from the group of each named source."""
    plan = Plan()
    for source, idx in removals.items():
        g = group_of(dg, source)
        plan.removals[g.id] = sorted(int(i) for i in idx)
        plan.signatures[g.id] = list(g.sources)
    return plan


def random_plan(dg: DependencyGraph, seed: int) -> Plan:
    """Remove a random non-empty, non-full subset of every prunable group."""
    rng = np.random.default_rng(seed)
    plan = Plan()
    for g in dg.prunable:
        n = int(rng.integers(1, g.size))
        plan.removals[g.id] = sorted(int(i) for i in rng.choice(g.size, size=n, replace=False))
        plan.signatures[g.id] = list(g.sources)
    return plan


# -- checks ---------------------------------------------------------------------------------------
def assert_valid(model: onnx.ModelProto) -> None:
    """The full checker and strict shape inference; for models with ops they cannot check (ONNX Runtime's
    contrib ops), the check the I/O layer runs before writing (onnxprune.io.model_io.check_model)."""
    if unchecked_ops(model):
        check_model(model)
        return
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, strict_mode=True)


def assert_same_output_shapes(original: onnx.ModelProto, pruned: onnx.ModelProto,
                              shapes: Shapes | None = None) -> None:
    feed = random_inputs(original, shapes=shapes, seed=7)
    want, got = outputs_of(original, feed), outputs_of(pruned, feed)
    assert list(want) == list(got)
    for k in want:
        assert got[k].shape == want[k].shape, f"output {k}: {got[k].shape} != {want[k].shape}"


def checked_prune(model: onnx.ModelProto, *, dg: DependencyGraph | None = None, plan: Plan | None = None,
                  ratio: float = 0.4, criterion: str = "l2", shapes: Shapes | None = None,
                  masked: bool | None = None) -> PruneResult:
    """prune(verify=True) plus every check the rule tests share; returns the result.

    `masked` (default: True for an explicit plan) requires the oracle to have masked some consumer
    edge, i.e. the plan removed channels that something reads (not only dead ones).
    """
    before = model.SerializeToString()
    result = prune(model, ratio=ratio, criterion=criterion, plan=plan, verify=True, shapes=shapes, dg=dg)
    assert model.SerializeToString() == before, "prune modified its input model"
    assert result.verify is not None and result.verify.ok, result.verify
    assert result.removed_slots > 0  # a run that removes nothing raises NothingToPruneError
    if masked if masked is not None else plan is not None:
        assert result.verify.masked_edges > 0
    assert_valid(result.model)
    assert_same_output_shapes(model, result.model, shapes)
    return result


def exercise(model: onnx.ModelProto, *, ratios: Sequence[float] = (0.3, 0.5), plans: int = 2,
             shapes: Shapes | None = None, seed: int = 0, grouped: str = "auto",
             heads: str = "auto") -> list[PruneResult]:
    """Prune at each ratio and with `plans` random explicit plans; every run passes every check."""
    dg = analyse(model, shapes=shapes, grouped=grouped, heads=heads)
    assert dg.prunable, [(g.sources, g.blocked) for g in dg.groups]
    results = []
    for r in ratios:
        if any(math.floor(g.size * r + 1e-9) >= 1 for g in dg.prunable):
            results.append(checked_prune(model, dg=dg, ratio=r, shapes=shapes))
        else:  # R of every group is less than one slot: a run that removes nothing is an error (exit 3)
            with pytest.raises(NothingToPruneError, match="less than one channel slot"):
                prune(model, ratio=r, shapes=shapes, dg=dg)
    results += [checked_prune(model, dg=dg, plan=random_plan(dg, seed + i), shapes=shapes, masked=False)
                for i in range(plans)]
    return results
