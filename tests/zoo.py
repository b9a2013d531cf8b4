"""The model zoo the tests and benchmarks run on (plain helper module; needs onnx, numpy and onnxprune, not torch).

Four kinds of entries:

* ``"torch"``: tiny PyTorch architectures in ``models/zoo/`` exported with the TorchScript and
  dynamo exporters (listed by ``models/zoo/manifest.json``, built by ``models/build_zoo.py``).
* ``"transformers"``: the Hugging Face / Keras transformer exports in ``models/transformers/`` that
  use standard ONNX ops only (its ``manifest.json``; the ORT-fused and GenAI files are left out),
  with the manifest's sizes for the dynamic dims and sequences of at most SEQUENCE_DIM_VALUE.
* ``"onnx-light"``: the ``light_*.onnx`` models shipped inside the installed ``onnx`` package
  (old opset-9 graphs whose weights come from ConstantOfShape).
* ``"real"``: real pretrained exports in ``models/real/`` fetched by ``make models``; listed only
  when present.

Usage (the feeds are onnxprune's own, ``onnxprune.io.inputs.random_inputs``)::

    from zoo import zoo_entries, random_inputs
    for entry in zoo_entries():
        feeds = random_inputs(entry)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import onnx

Kind = Literal["torch", "transformers", "onnx-light", "real"]

REPO_ROOT = Path(__file__).resolve().parent.parent
ZOO_DIR = REPO_ROOT / "models" / "zoo"
MANIFEST = ZOO_DIR / "manifest.json"
TRANSFORMERS_DIR = REPO_ROOT / "models" / "transformers"
REAL_DIR = REPO_ROOT / "models" / "real"
LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"

# Real models: file name in models/real/ -> (entry name, concrete input shapes).
REAL_MODELS: dict[str, tuple[str, dict[str, tuple[int, ...]]]] = {
    # YOLOv8n detector from nudenet: input "images" is [batch, 3, height, width]; trained at 320.
    "yolov8n_320n.onnx": ("real_yolov8n", {"images": (1, 3, 320, 320)}),
    # PP-OCRv4 text detector: input "x" is fully dynamic; H and W must be multiples of 32.
    "ppocrv4_det.onnx": ("real_ppocrv4_det", {"x": (1, 3, 64, 64)}),
    # PP-OCRv4 text recogniser: input "x" is [batch, 3, 48, width]; output [batch, width/8, 6625] (CTC).
    "ppocrv4_rec.onnx": ("real_ppocrv4_rec", {"x": (1, 3, 48, 64)}),
}

# Sizes used for the dynamic dims of a zoo model: the batch axis, and the sequence axis of the text models.
DYNAMIC_DIM_VALUE = 1
SEQUENCE_DIM_VALUE = 16


@dataclass(frozen=True)
class ZooEntry:
    """One model. ``shapes`` gives concrete shapes for every graph input when the model has
    dynamic input dims, and is ``None`` when all input shapes in the graph are static."""

    name: str
    path: Path
    kind: Kind
    shapes: dict[str, tuple[int, ...]] | None = field(default=None, hash=False)
    exporter: str | None = None  # "torchscript" / "dynamo" for kind "torch"
    opset: int | None = None
    description: str = ""


def _concrete(shape: list[int | str]) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) and d > 0 else DYNAMIC_DIM_VALUE if i == 0 else SEQUENCE_DIM_VALUE
                 for i, d in enumerate(shape))


def _torch_entries() -> list[ZooEntry]:
    if not MANIFEST.is_file():
        return []
    manifest = json.loads(MANIFEST.read_text())
    entries = []
    for m in manifest["models"]:
        dynamic = any(not isinstance(d, int) for i in m["inputs"] for d in i["shape"])
        shapes = {i["name"]: _concrete(i["shape"]) for i in m["inputs"]} if dynamic else None
        entries.append(
            ZooEntry(
                name=m["name"],
                path=ZOO_DIR / m["file"],
                kind="torch",
                shapes=shapes,
                exporter=m["exporter"],
                opset=m["opset"],
                description=m["description"],
            )
        )
    return entries


def _transformer_entries() -> list[ZooEntry]:
    path = TRANSFORMERS_DIR / "manifest.json"
    if not path.is_file():
        return []
    entries = []
    for m in json.loads(path.read_text())["models"]:
        if m["custom_ops"] or m["onnx_checker"] != "ok":
            continue
        dims = {k: min(v, SEQUENCE_DIM_VALUE) for k, v in m["dims"].items()}
        shapes = {i["name"]: tuple(d if isinstance(d, int) else dims[d] for d in i["shape"]) for i in m["inputs"]}
        entries.append(ZooEntry(name=m["name"], path=TRANSFORMERS_DIR / m["file"], kind="transformers",
                                shapes=shapes, exporter=m.get("variant"), opset=m["opset"],
                                description=m.get("description", "")))
    return entries


def _light_entries() -> list[ZooEntry]:
    return [
        ZooEntry(name=p.stem, path=p, kind="onnx-light", opset=9, description="onnx backend-test light model")
        for p in sorted(LIGHT_DIR.glob("*.onnx"))
    ]


def _real_entries() -> list[ZooEntry]:
    entries = []
    for file, (name, shapes) in REAL_MODELS.items():
        path = REAL_DIR / file
        if path.is_file():
            entries.append(ZooEntry(name=name, path=path, kind="real", shapes=dict(shapes), description=file))
    return entries


def zoo_entries(kinds: tuple[Kind, ...] | None = None) -> list[ZooEntry]:
    """All zoo entries (optionally only the given kinds): torch, transformers, onnx-light, then real."""
    entries = _torch_entries() + _transformer_entries() + _light_entries() + _real_entries()
    if kinds is not None:
        entries = [e for e in entries if e.kind in kinds]
    return entries


def zoo_entry(name: str) -> ZooEntry:
    for e in zoo_entries():
        if e.name == name:
            return e
    raise KeyError(f"no zoo entry named {name!r}")


def entry_ids(entries: list[ZooEntry]) -> list[str]:
    """Names, for ``pytest.mark.parametrize(..., ids=entry_ids(entries))``."""
    return [e.name for e in entries]


def random_inputs(entry: ZooEntry, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic random feeds for ``entry``, as onnxprune makes them (``onnxprune.io.inputs.random_inputs``:
    standard normal floats, integer inputs valid for the graph: token ids below the vocabulary, masks of ones)."""
    from onnxprune.io.inputs import random_inputs as feeds

    return feeds(onnx.load(str(entry.path), load_external_data=False), shapes=entry.shapes, seed=seed)
