"""The main path: one PruneConfig checked once, a pipeline of stages over one state, a result that
serialises itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onnxprune.api import prune
from onnxprune.config import PruneConfig, RoundingOptions
from onnxprune.errors import OnnxPruneError
from onnxprune.pipeline.stages import PruneState, default_pipeline
from onnxprune.planning.budget import Budget

RESNET = Path(__file__).resolve().parent.parent / "models" / "zoo" / "resnet_ts.onnx"


def test_default_pipeline_is_the_documented_path() -> None:
    assert default_pipeline().names == ["analyse", "score", "curves", "plan", "apply", "verify", "depth", "reconstruct",
                                        "distill", "fidelity", "passes", "annotate"]


def test_config_or_flat_options_give_the_same_plan() -> None:
    a = prune(RESNET, ratio=0.4, criterion="l1", verify=True)
    b = prune(RESNET, PruneConfig.create(ratio=0.4, criterion="l1", verify=True))
    assert a.plan.removals == b.plan.removals and b.verify is not None and b.verify.ok
    with pytest.raises(OnnxPruneError, match="either a PruneConfig or options"):
        prune(RESNET, PruneConfig(), ratio=0.4)


@pytest.mark.parametrize("bad, match", [
    (dict(ratio=1.5), "--ratio 1.5 is outside"),
    (dict(target_macs=0.5, target_params=0.5), "at most one"),
    (dict(criterion="nope"), "unknown criterion"),
    (dict(allocation="greedy"), "unknown allocation"),
    (dict(steps=0), "--steps must be at least 1"),
    (dict(schedule="cosine"), "unknown schedule"),
    (dict(sensitivity="s.json"), "--sensitivity needs a budget"),
    (dict(max_acc_drop=1.0), "needs labelled data"),
    (dict(round_to="banana"), "--round-to 'banana'"),
    (dict(target_latency=5.0, steps=2), "cannot be combined with steps"),
])
def test_config_is_checked_once_before_any_work(bad: dict[str, object], match: str) -> None:
    with pytest.raises(OnnxPruneError, match=match):
        PruneConfig.create(**bad)  # type: ignore[arg-type]
    with pytest.raises(OnnxPruneError, match=match):  # before the model is even read
        prune("/no/such/model.onnx", **bad)


def test_a_stage_of_ones_own_runs_inside_the_pipeline() -> None:
    seen: list[tuple[int, int]] = []

    class Census:
        name = "census"

        def run(self, state: PruneState) -> None:
            assert state.model is not None and state.plan is not None
            seen.append((len(state.removed), len(state.model.graph.node)))

    pipeline = default_pipeline().insert(Census(), after="apply")
    assert pipeline.names.index("census") == pipeline.names.index("apply") + 1
    res = prune(RESNET, ratio=0.3, pipeline=pipeline)
    assert seen == [(res.removed_slots, len(res.model.graph.node))]


def test_result_serialises_itself() -> None:
    res = prune(RESNET, PruneConfig(budget=Budget("macs", 0.6), rounding=RoundingOptions(round_to=8)))
    doc = json.loads(json.dumps(res.to_json()))
    assert doc["target"]["metric"] == "macs" and abs(doc["target"]["achieved"] - 0.6) <= 0.03 * 0.6
    assert doc["config"]["budget"] == {"kind": "macs", "value": 0.6} and doc["round_to"] == 8
    assert len(doc["groups"]) == len(res.dg.groups) and doc["removal"]["channels_removed"] == res.channels[0]
