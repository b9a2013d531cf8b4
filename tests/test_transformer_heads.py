"""Attention heads on the exported transformers of models/transformers (Hugging Face through both torch
exporters, Keras through tf2onnx, the trained Llama and ViT): which units each model can lose under
every --heads mode, exact pruning (the oracle) at a few ratios, the pruned model running at other
sizes, and the oracle failing when a kept head is wrong."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from zoo import ZooEntry, entry_ids, zoo_entries

from onnxprune.api import analyse, prune
from onnxprune.graph.dependency import DependencyGraph
from onnxprune.io.inputs import random_inputs
from onnxprune.io.runtime import run, session
from onnxprune.planning.plan import Plan, enforce_min_channels
from onnxprune.verify import verify_pruned

ENTRIES = zoo_entries(("transformers",))
# The attention unit `--heads auto` chooses. tf2onnx merges batch and heads into one axis through a
# ReduceProd of Shape reads (the head count times the batch), which only head_dim survives.
AUTO_UNIT = {e.name: "head_dim" if e.name == "bert_keras_tf2onnx" else "head" for e in ENTRIES}
_DG: dict[tuple[str, str], DependencyGraph] = {}


def _dg(entry: ZooEntry, heads: str) -> DependencyGraph:
    if (entry.name, heads) not in _DG:
        _DG[entry.name, heads] = analyse(str(entry.path), shapes=entry.shapes, heads=heads)
    return _DG[entry.name, heads]


def _other_sizes(entry: ZooEntry) -> dict[str, tuple[int, ...]]:
    """Batch 3, and a sequence of 7 for the text models: not what the analysis ran at."""
    assert entry.shapes is not None
    return {k: (3, *((7,) if len(v) == 2 else v[1:])) for k, v in entry.shapes.items()}


def test_every_standard_op_transformer_is_listed() -> None:
    assert {e.name for e in ENTRIES} >= {"bert_ts", "bert_dynamo", "gpt2_ts", "gpt2_dynamo", "llama_ts", "llama_dynamo",
                                         "vit_ts", "vit_dynamo", "bert_keras_tf2onnx", "lm_llama", "vit_digits"}


@pytest.mark.parametrize("entry", ENTRIES, ids=entry_ids(ENTRIES))
def test_units_per_heads_mode(entry: ZooEntry) -> None:
    auto, whole, dim = (_dg(entry, h) for h in ("auto", "whole", "dim"))
    assert {g.kind for g in auto.prunable} == {"channel", AUTO_UNIT[entry.name]}
    assert {g.kind for g in dim.prunable} == {"channel", "head_dim"}
    heads = [g for g in whole.groups if g.kind == "head"]
    assert heads and all(g.prunable == (AUTO_UNIT[entry.name] == "head") for g in heads)
    for g in heads:
        assert g.prunable or g.blocked, "a head group that is not prunable says why"
    if entry.name.startswith(("llama", "lm_llama")):  # 4 query heads share 2 KV heads: a slot is a KV group
        assert all(g.shared_kv and g.size == 2 and len(g.sources) == 3 for g in heads)


@pytest.mark.parametrize("heads", ["whole", "dim"])
@pytest.mark.parametrize("entry", ENTRIES, ids=entry_ids(ENTRIES))
def test_heads_prune_exactly_and_run_at_other_sizes(entry: ZooEntry, heads: str) -> None:
    dg = _dg(entry, heads)
    attention = [g for g in dg.prunable if g.kind != "channel"]
    if not attention:
        pytest.skip(f"no prunable {heads} units: {[g.blocked[:1] for g in dg.groups if g.kind != 'channel'][:1]}")
    rng = np.random.default_rng(0)
    plan = Plan({g.id: sorted(rng.choice(g.size, size=g.size // 2, replace=False).tolist()) for g in attention})
    enforce_min_channels(dg, plan)
    r = prune(dg.model, dg=dg, plan=plan, verify=True, shapes=entry.shapes)
    assert r.verify is not None and r.verify.ok and r.verify.masked_edges > 0
    onnx.checker.check_model(r.model)
    feed = random_inputs(dg.model, shapes=_other_sizes(entry), seed=3)
    got, want = run(session(r.model), feed), run(session(dg.model), feed)
    assert [v.shape for v in got.values()] == [v.shape for v in want.values()]
    for g in attention:  # every projection of the group got smaller
        for src in g.sources:
            assert _weight(r.model, src).size < _weight(dg.model, src).size, src
    for ratio in (0.3, 0.5):
        rr = prune(dg.model, dg=dg, ratio=ratio, verify=True, shapes=entry.shapes)
        assert rr.verify is not None and rr.verify.ok


def _weight(model: onnx.ModelProto, node: str) -> np.ndarray:
    name = next(n for n in model.graph.node if n.name == node).input[1]
    return numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name))


def _corrupt(model: onnx.ModelProto, node: str, column: int) -> None:
    w = next(n for n in model.graph.node if n.name == node).input[1]
    t = next(t for t in model.graph.initializer if t.name == w)
    value = numpy_helper.to_array(t).copy()
    value[..., column] += 0.1 * (np.abs(value).max() + 1.0)
    t.CopyFrom(numpy_helper.from_array(value, w))


@pytest.mark.parametrize(("name", "heads"), [("llama_ts", "whole"), ("llama_dynamo", "whole"), ("llama_ts", "dim"),
                                             ("gpt2_ts", "whole")])
def test_oracle_fails_when_a_kept_head_is_wrong(name: str, heads: str) -> None:
    """Mutation check: remove the first slot of an attention group, then change one weight column of
    a kept head in each source (q, k, v): every such model must fail verification."""
    entry = next(e for e in ENTRIES if e.name == name)
    dg = _dg(entry, heads)
    g = next(g for g in dg.prunable if g.kind != "channel")
    removed = Plan({g.id: [0]}).removed_roots(dg)
    r = prune(dg.model, dg=dg, plan=Plan({g.id: [0]}), verify=True, shapes=entry.shapes)
    assert r.verify is not None and r.verify.ok
    for src in g.sources:
        bad = onnx.ModelProto()
        bad.CopyFrom(r.model)
        _corrupt(bad, src, -1)  # the last output channel: never in slot 0
        assert not verify_pruned(dg, removed, bad, shapes=entry.shapes).ok, src
