"""End to end on the ORT-fused and GenAI transformer files (models/transformers): `inspect` runs, a 30 %
prune is verified by the oracle and gives a model ONNX Runtime runs on the manifest's feeds, and what is
blocked says why."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from cli_run import invoke

from onnxprune.api import analyse, prune
from onnxprune.errors import NothingToPruneError
from onnxprune.io.model_io import save_model

TRANSFORMERS = Path(__file__).resolve().parent.parent / "models" / "transformers"
sys.path.insert(0, str(TRANSFORMERS))
from zookit import MANIFEST, make_feeds, session  # noqa: E402

ENTRIES: dict[str, dict[str, Any]] = {e["name"]: e for e in json.loads(MANIFEST.read_text())["models"]}

# What each file must offer (a source node name pattern of a prunable group), and a reason a blocked group gives.
CASES = {
    "bert_ort_fused": ("Attention_0", "EmbedLayerNormalization 'EmbedLayerNormalization_0': LayerNorm over the "
                                      "channel axis"),
    "bert_ort_fused_mha": ("/model/encoder/layer.0/attention/self/query/MatMul",
                           "EmbedLayerNormalization 'EmbedLayerNormalization_0': LayerNorm over the channel axis"),
    "gpt2_ort_fused": ("FullyConnect_MatMul_1", "SkipLayerNormalization 'SkipLayerNorm_0'"),
    "vit_ort_fused": ("/model/vit/encoder/layer.0/intermediate/dense/MatMul",
                      "SkipLayerNormalization 'SkipLayerNorm_AddBias_0'"),
    "llama_ort_fused": ("/model/model/layers.0/mlp/gate_proj/MatMul",
                        "head_dim channels (the same channel of every head) reach RotaryEmbedding"),
    "llama_genai": ("/model/layers.0/mlp/gate_proj/MatMul",
                    "GroupQueryAttention '/model/layers.0/attn/GroupQueryAttention': a KV cache (past/present) "
                    "holds the heads"),
    "llama_genai_mha": ("/model/layers.0/mlp/gate_proj/MatMul",
                        "SkipSimplifiedLayerNormalization '/model/layers.0/post_attention_layernorm/SkipLayerNorm'"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_fused_model_prunes_verified_and_runs(name: str, tmp_path: Path) -> None:
    entry = ENTRIES[name]
    path = TRANSFORMERS / entry["file"]
    prunable_source, blocked_reason = CASES[name]
    dg = analyse(str(path))
    assert any(prunable_source in g.sources for g in dg.prunable), [g.sources for g in dg.prunable]
    reasons = [r for g in dg.groups for r in g.blocked]
    assert any(blocked_reason in r for r in reasons), reasons
    assert not any("custom op of domain" in r for r in reasons), reasons  # every op of these files has a rule
    result = prune(str(path), dg=dg, ratio=0.3, round_to=1, verify=True)
    assert result.verify is not None and result.verify.ok, result.verify.describe()
    assert result.channels[0] > 0
    out = tmp_path / entry["file"]
    save_model(result.model, out)
    sess = session(out)
    outputs = sess.run(None, make_feeds(entry["inputs"], entry["dims"]))
    for got, spec in zip(outputs, entry["outputs"], strict=True):
        want = [entry["dims"].get(d) if isinstance(d, str) else d for d in spec["shape"]]
        assert all(w is None or w == n for w, n in zip(want, got.shape, strict=True)), (spec, got.shape)
        assert np.isfinite(got).all()


def test_bert_attention_heads_are_removed_whole() -> None:
    path = TRANSFORMERS / "bert_ort_fused.onnx"
    dg = analyse(str(path))
    heads = next(g for g in dg.prunable if g.sources == ["Attention_0"])
    assert (heads.size, heads.width) == (4, 16)
    plan_heads = prune(str(path), dg=dg, ratio=0.5, round_to=1, verify=True)
    attention = {n.name: n for n in plan_heads.model.graph.node}["Attention_0"]
    assert onnx.helper.get_attribute_value(next(a for a in attention.attribute if a.name == "num_heads")) == 2


def test_the_int4_genai_model_is_refused_with_the_reason() -> None:
    path = TRANSFORMERS / "llama_genai_int4.onnx"
    dg = analyse(str(path))
    assert not dg.prunable
    assert all(any("quantized op: prune before quantizing" in r for r in g.blocked) for g in dg.groups)
    with pytest.raises(NothingToPruneError):
        prune(str(path), dg=dg, ratio=0.3)


def test_cli_on_a_genai_model_says_which_check_ran(tmp_path: Path) -> None:
    src = TRANSFORMERS / "llama_genai.onnx"
    code, out, err = invoke("inspect", str(src))
    assert code == 0, err
    code, out, err = invoke("prune", str(src), "-o", str(tmp_path / "out.onnx"), "--ratio", "0.3", "--verify",
                            "--round-to", "1")
    assert code == 0, err
    assert "verify PASS" in out
    assert "loading in ONNX Runtime (the checker cannot check ai.onnx::SimplifiedLayerNormalization" in out


def test_sparsify_writes_a_genai_model_the_onnx_checker_rejects(tmp_path: Path) -> None:
    """SimplifiedLayerNormalization at default-domain opset 21 fails the ONNX checker even unpruned: the
    written file is checked by loading it in ONNX Runtime instead, and the command says so."""
    src = TRANSFORMERS / "llama_genai.onnx"
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(onnx.load(str(src)))
    out = tmp_path / "sparse.onnx"
    code, stdout, err = invoke("sparsify", str(src), "-o", str(out), "--pattern", "2:4")
    assert code == 0, err
    assert f"wrote {out}, after the ONNX checker on the standard ops, and loading in ONNX Runtime" in stdout
    entry = ENTRIES["llama_genai"]
    assert all(np.isfinite(o).all() for o in session(out).run(None, make_feeds(entry["inputs"], entry["dims"])))
