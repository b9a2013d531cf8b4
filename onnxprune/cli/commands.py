"""The list of CLI commands. A command module exposes one click command named `command`."""

from __future__ import annotations

import importlib

import click

# Module names under onnxprune.cli; each defines `command`.
COMMAND_MODULES: tuple[str, ...] = (
    "inspect_cmd",
    "prune_cmd",
    "validate_cmd",
    "bench_cmd",
    "check_trt_cmd",
    "build_engine_cmd",
    "sparsify_cmd",
    "sensitivity_cmd",
    "quantize_cmd",
)


def all_commands() -> list[click.Command]:
    out: list[click.Command] = []
    for name in COMMAND_MODULES:
        mod = importlib.import_module(f"onnxprune.cli.{name}")
        out.append(mod.command)
    return out
