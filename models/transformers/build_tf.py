"""Build a tiny random-init Keras BERT-like encoder and convert it with tf2onnx.

Run with a TensorFlow venv (it clashes with the torch venv's protobuf/numpy):

    python3 -m venv /work/tfvenv
    /work/tfvenv/bin/pip install tensorflow-cpu==2.15.1 tf2onnx==1.16.1 onnxruntime "numpy<2"
    /work/tfvenv/bin/python models/transformers/build_tf.py

tf2onnx writes Keras LayerNormalization as a ReduceMean/Sub/Mul/Sqrt chain, the tanh GELU as an
elementwise chain and the attention head split as Reshapes whose targets come from ``Shape`` at run
time (batch and sequence are dynamic). The file is run in onnxruntime and compared with Keras
(rtol 1e-3, atol 1e-4), then recorded in ``manifest.json``.
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import version

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import onnx
import tensorflow as tf
import tf2onnx
from zookit import HERE, assert_close, describe, session, update_manifest

SEED = 0
OPSET = 15
VOCAB, HIDDEN, HEADS, LAYERS, FFN, MAX_POS = 512, 64, 4, 2, 128, 64
ONNX_PATH = HERE / "bert_keras_tf2onnx.onnx"


def gelu_tanh(x: tf.Tensor) -> tf.Tensor:
    return tf.keras.activations.gelu(x, approximate=True)


def encoder() -> tf.keras.Model:
    ids = tf.keras.Input(shape=(None,), dtype=tf.int32, name="input_ids")
    mask = tf.keras.Input(shape=(None,), dtype=tf.int32, name="attention_mask")
    positions = tf.keras.layers.Lambda(lambda t: tf.range(tf.shape(t)[1]))(ids)
    x = tf.keras.layers.Embedding(VOCAB, HIDDEN)(ids) + tf.keras.layers.Embedding(MAX_POS, HIDDEN)(positions)
    x = tf.keras.layers.LayerNormalization(epsilon=1e-12)(x)
    attend = tf.keras.layers.Lambda(lambda m: tf.cast(m[:, None, :], tf.bool))(mask)  # [batch, 1, key]
    for _ in range(LAYERS):
        att = tf.keras.layers.MultiHeadAttention(num_heads=HEADS, key_dim=HIDDEN // HEADS)(x, x, attention_mask=attend)
        x = tf.keras.layers.LayerNormalization(epsilon=1e-12)(x + att)
        h = tf.keras.layers.Dense(FFN, activation=gelu_tanh)(x)
        x = tf.keras.layers.LayerNormalization(epsilon=1e-12)(x + tf.keras.layers.Dense(HIDDEN)(h))
    pooled = tf.keras.layers.Dense(HIDDEN, activation="tanh")(x[:, 0])
    return tf.keras.Model([ids, mask], [x, pooled])


def randomise_layer_norms(model: tf.keras.Model, rng: np.random.Generator) -> None:
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.LayerNormalization):
            gamma, beta = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 2.0, gamma.shape).astype(np.float32),
                               (rng.standard_normal(beta.shape) * 0.2).astype(np.float32)])


def main() -> int:
    tf.keras.utils.set_random_seed(SEED)
    model = encoder()
    randomise_layer_norms(model, np.random.default_rng(SEED + 1))
    spec = (tf.TensorSpec((None, None), tf.int32, name="input_ids"), tf.TensorSpec((None, None), tf.int32, name="attention_mask"))
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=OPSET, output_path=str(ONNX_PATH))
    sess = session(ONNX_PATH)
    outputs = [o.name for o in sess.get_outputs()]
    rng = np.random.default_rng(SEED + 2)
    worst = 0.0
    for batch, seq in ((2, 16), (1, 7)):
        ids = rng.integers(0, VOCAB, (batch, seq), dtype=np.int32)
        mask = np.ones((batch, seq), np.int32)
        mask[0, -3:] = 0
        want = [t.numpy() for t in model([ids, mask], training=False)]
        got = sess.run(outputs, {"input_ids": ids, "attention_mask": mask})
        assert_close(f"{ONNX_PATH.name} batch={batch} seq={seq}", got, want)
        worst = max(worst, *(float(np.abs(g - w).max()) for g, w in zip(got, want, strict=True)))
    feeds = {"input_ids": {"fill": "token_ids", "high": VOCAB}, "attention_mask": {"fill": "ones"}}
    graph = onnx.load(str(ONNX_PATH)).graph
    # tf2onnx names each dynamic dim unk__N: axis 0 is the batch, axis 1 the sequence.
    dims = {d.dim_param: (2 if axis == 0 else 16) for vi in (*graph.input, *graph.output)
            for axis, d in enumerate(vi.type.tensor_type.shape.dim) if d.dim_param}
    info = describe(ONNX_PATH, feeds, dims)
    entry = {"name": ONNX_PATH.stem, "arch": "bert", "variant": "tf2onnx", **info,
             "max_abs_diff_vs_keras": float(f"{worst:.3g}"),
             "description": f"Keras BERT-like encoder (Embedding + position Embedding, {LAYERS} post-LN layers of "
                            f"MultiHeadAttention {HEADS} heads, Dense GELU(tanh) {FFN}, tanh pooler on token 0), hidden "
                            f"{HIDDEN}, vocab {VOCAB}; tf2onnx.convert.from_keras, opset {OPSET}"}
    versions = {d: version(d) for d in ("tensorflow-cpu", "tf2onnx", "onnx", "onnxruntime")}
    update_manifest([entry], [], owner="build_tf.py", info=versions)
    print(f"wrote {ONNX_PATH.name} ({ONNX_PATH.stat().st_size} bytes), max |diff| vs Keras {worst:.2g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
