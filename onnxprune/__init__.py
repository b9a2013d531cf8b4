"""onnxprune: prune neural networks after export to ONNX."""

from __future__ import annotations

__version__ = "0.1.0"
