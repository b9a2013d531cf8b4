"""Check the first half of docs/layernorm_rotation.md on vit_digits (a prototype, not an onnxprune pass).

Centres every writer of the residual stream (patch Conv weight and bias, CLS token, position
embeddings, every residual branch's output MatMul and bias) with C = I - 11ᵀ/d, replaces every
LayerNormalization by RMSNorm written op by op (same gamma, beta, epsilon), and compares the logits
with the dense model's on the 256 calibration images. `--no-centre` skips the centring: the control,
which must differ. Needs no torch.

    python benchmarks/layernorm_centring.py [--no-centre]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.io.runtime import session

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "transformers" / "vit_digits.onnx"
CALIB = ROOT / "models" / "digits" / "calib.npz"
EMBEDDINGS = "model.vit.embeddings."


def centred_rms(model: onnx.ModelProto, *, centre: bool) -> tuple[onnx.ModelProto, int, int]:
    """The rewritten copy, the residual branches centred and the LayerNorms replaced."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    init = {t.name: t for t in g.initializer}
    d = numpy_helper.to_array(init[EMBEDDINGS + "cls_token"]).shape[-1]
    c = np.eye(d) - np.ones((d, d)) / d if centre else np.eye(d)

    def update(name: str, fn: Callable[[np.ndarray], np.ndarray]) -> None:
        value = fn(numpy_helper.to_array(init[name]).astype(np.float64))
        init[name].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))

    # The Conv writing the stream: the patch projection, or the last conv of a convolutional stem
    # (the stem's earlier convs have BatchNorm folded in and unnamed weights).
    (conv,) = [n.removesuffix("weight") for n in init
               if n.startswith(EMBEDDINGS + "patch_embeddings.projection") and n.endswith("weight")]
    update(conv + "weight", lambda w: np.tensordot(c, w, axes=([1], [0])))  # output channels: axis 0
    update(conv + "bias", lambda b: c @ b)
    for name in (EMBEDDINGS + "cls_token", EMBEDDINGS + "position_embeddings"):
        update(name, lambda t: t @ c)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in g.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    branches = 0
    for node in g.node:  # attention/output/dense and output/dense write the stream
        if node.op_type == "MatMul" and node.name.endswith("output/dense/MatMul"):
            update(node.input[1], lambda w: w @ c)
            (add,) = consumers[node.output[0]]
            update(next(i for i in add.input if i in init), lambda b: b @ c)
            branches += 1
    nodes: list[onnx.NodeProto] = []
    norms = 0
    for node in g.node:
        if node.op_type != "LayerNormalization":
            nodes.append(node)
            continue
        norms += 1
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        x, gamma, beta = node.input
        p = node.name + "/rms"
        g.initializer.append(numpy_helper.from_array(np.array(eps, np.float32), p + "_eps"))
        nodes += [helper.make_node("Mul", [x, x], [p + "_sq"]),
                  helper.make_node("ReduceMean", [p + "_sq"], [p + "_ms"], axes=[-1], keepdims=1),
                  helper.make_node("Add", [p + "_ms", p + "_eps"], [p + "_mse"]),
                  helper.make_node("Sqrt", [p + "_mse"], [p + "_rms"]),
                  helper.make_node("Div", [x, p + "_rms"], [p + "_n"]),
                  helper.make_node("Mul", [p + "_n", gamma], [p + "_g"]),
                  helper.make_node("Add", [p + "_g", beta], [node.output[0]])]  # fmt: skip
    del g.node[:]
    g.node.extend(nodes)
    onnx.checker.check_model(m)
    return m, branches, norms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-centre", action="store_true", help="the control: RMSNorm without centring the writers")
    args = ap.parse_args()
    dense = onnx.load(str(MODEL))
    rewritten, branches, norms = centred_rms(dense, centre=not args.no_centre)
    x = np.load(CALIB)["input"].astype(np.float32)
    want = session(dense).run(None, {"pixel_values": x})[0]
    got = session(rewritten).run(None, {"pixel_values": x})[0]
    rel = np.linalg.norm(got - want, axis=1) / np.linalg.norm(want, axis=1)
    print(f"{'centred' if not args.no_centre else 'not centred'}: {branches} branch writers, {norms} LayerNorms -> "
          f"RMSNorm; {len(x)} calibration images: max relative L2 error of the logits {rel.max():.2e}, "
          f"top-1 agreement {(got.argmax(1) == want.argmax(1)).mean():.3f}")


if __name__ == "__main__":
    main()
