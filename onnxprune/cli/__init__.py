"""`onnxprune` command line. Commands only parse flags and call the library.

Each command lives in its own module under onnxprune/cli/ and is registered below.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from onnxprune.cli.echo import echo_warnings
from onnxprune.errors import EXIT_INTERNAL, EXIT_USAGE, OnnxPruneError
from onnxprune.io.external import scratch_scope


class _Group(click.Group):
    """Turns library errors into one line on stderr and a documented exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with echo_warnings(), scratch_scope():  # scratch data of weights that stay on disk goes with the command
                return super().invoke(ctx)
        except OnnxPruneError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            cmd = exc.ctx.command_path if exc.ctx else "onnxprune"
            click.echo(f"error: {exc.format_message()} (see `{cmd} --help`)", err=True)
            sys.exit(EXIT_USAGE)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(130)
        except Exception as exc:  # noqa: BLE001 - last line of defence: never a traceback for users
            if os.environ.get("ONNXPRUNE_DEBUG"):
                raise
            msg = str(exc).splitlines()[0] if str(exc) else ""
            click.echo(f"error: internal error {type(exc).__name__}: {msg} (set ONNXPRUNE_DEBUG=1 for a traceback)",
                       err=True)
            sys.exit(EXIT_INTERNAL)


@click.group(cls=_Group)
@click.version_option(package_name="onnxprune")
def main() -> None:
    """Prune exported ONNX models: structured channels, sparsity, recovery, TensorRT."""


def _register() -> None:
    from onnxprune.cli import commands

    for cmd in commands.all_commands():
        main.add_command(cmd)


_register()
