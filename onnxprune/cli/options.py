"""Click options shared by several commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click
import onnx

from onnxprune.io.inputs import check_shapes, parse_shapes
from onnxprune.io.model_io import load_model

F = TypeVar("F", bound=Callable[..., Any])


def shapes_option(fn: F) -> F:
    return click.option("--shapes", "shapes", multiple=True, metavar="NAME:DxDxD",
                        help="Concrete shape for an input with dynamic dims (repeatable).")(fn)


def model_with_shapes(model: str, items: tuple[str, ...]) -> tuple[onnx.ModelProto, dict[str, tuple[int, ...]] | None]:
    """The loaded model and its --shapes, checked against its inputs."""
    shapes = parse_shapes(items) or None
    proto = load_model(model)
    check_shapes(proto, shapes)
    return proto, shapes


def model_argument(fn: F) -> F:
    return click.argument("model", type=str)(fn)


def approximate_option(fn: F) -> F:
    from onnxprune.graph.analysis import APPROXIMATE_KINDS

    return click.option("--approximate", "approximate", multiple=True, type=click.Choice(APPROXIMATE_KINDS),
                        help="Also prune through ops that cannot be proven exact (layernorm: LayerNorm over "
                             "channels). Those groups are marked approximate and left out of --verify.")(fn)


def grouped_option(fn: F) -> F:
    from onnxprune.graph.analysis import DEFAULT_GROUPED, GROUPED_MODES

    return click.option("--grouped-conv", "grouped", type=click.Choice(GROUPED_MODES), default=DEFAULT_GROUPED,
                        show_default=True,
                        help="How grouped convolutions lose channels: the same index in every group (index), "
                             "whole groups with their input channels (whole: ResNeXt cardinality; the channels per "
                             "group stay), or whole groups where a group holds fewer than 16 channels and the "
                             "same index elsewhere (auto).")(fn)


def keep_option(fn: F) -> F:
    return click.option("--keep", "keep", multiple=True, metavar="PATTERN",
                        help="Never remove the output channels of layers whose node name matches this fnmatch "
                             "pattern (repeatable), e.g. '/model.22/cv3.*'. A pattern matching no layer is an "
                             "error.")(fn)


def round_to_option(fn: F) -> F:
    return click.option("--round-to", "round_to", type=str, default=None, metavar="N|auto",
                        help="Keep channel counts at multiples of N (1: exact counts). Default: auto — with "
                             "--for ort, ONNX Runtime's NCHWc block on this CPU (16 with AVX-512F, 8 with "
                             "AVX2+FMA, else 1); with --for tensorrt, 8.")(fn)


def target_option(fn: F) -> F:
    return click.option("--for", "target", type=click.Choice(["ort", "tensorrt"]), default="ort", show_default=True,
                        help="Runtime the channel counts are rounded for (see --round-to).")(fn)
