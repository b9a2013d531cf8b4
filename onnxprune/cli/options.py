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
    from onnxprune.graph.context import APPROXIMATE_KINDS

    return click.option("--approximate", "approximate", multiple=True, type=click.Choice(APPROXIMATE_KINDS),
                        help="Also prune the hidden width through norms that cannot be proven exact "
                             "(layernorm: LayerNorm and ORT's Skip/EmbedLayerNormalization over channels; "
                             "rmsnorm: RMSNorm and ORT's (Skip)SimplifiedLayerNormalization; rotate: as rmsnorm, after "
                             "rotating the residual stream by the PCA of its activations on --calib, SliceGPT's "
                             "computational invariance, so the slice removes its weakest directions; a pre-LN "
                             "LayerNorm stream is first made an RMSNorm stream that computes the same). Those groups are "
                             "marked approximate, left out of --verify, and their fidelity to the dense model "
                             "is measured on calibration data.")(fn)


def grouped_option(fn: F) -> F:
    from onnxprune.graph.context import DEFAULT_GROUPED, GROUPED_MODES

    return click.option("--grouped-conv", "grouped", type=click.Choice(GROUPED_MODES), default=DEFAULT_GROUPED,
                        show_default=True,
                        help="How grouped convolutions lose channels: the same index in every group (index), "
                             "whole groups with their input channels (whole: ResNeXt cardinality; the channels per "
                             "group stay), or whole groups where a group holds fewer than 16 channels and the "
                             "same index elsewhere (auto).")(fn)


def heads_option(fn: F) -> F:
    from onnxprune.graph.context import DEFAULT_HEADS, HEADS_MODES

    return click.option("--heads", "heads", type=click.Choice(HEADS_MODES), default=DEFAULT_HEADS, show_default=True,
                        help="What an attention loses: whole heads (with grouped-query attention, a KV head and "
                             "the query heads sharing it), the same head_dim index of every head (dim; RoPE's "
                             "rotate-half pairs together), or whole heads where they can be removed and head_dim "
                             "elsewhere (auto).")(fn)


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


def sectioned(sections: dict[str, tuple[str, ...]]) -> type[click.Command]:
    """A click Command class whose --help lists options under these sections (by parameter name);
    options not named land under "Other options"."""

    class Sectioned(click.Command):
        def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
            rows = {p.name: p.get_help_record(ctx) for p in self.get_params(ctx)}
            placed: set[str | None] = set()
            for title, names in sections.items():
                records = [r for n in names if (r := rows.get(n)) is not None]
                placed.update(names)
                if records:
                    with formatter.section(title):
                        formatter.write_dl(records)
            rest = [r for n, r in rows.items() if n not in placed and r is not None]
            if rest:
                with formatter.section("Other options"):
                    formatter.write_dl(rest)

    return Sectioned
