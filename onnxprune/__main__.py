"""`python -m onnxprune` runs the CLI."""

from __future__ import annotations

from onnxprune.cli import main

main()
