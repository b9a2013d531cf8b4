"""The marked blocks of benchmarks/README.md that the benchmark scripts rewrite."""

from __future__ import annotations

from pathlib import Path


def replace_block(path: Path, begin: str, end: str, inner: str, heading: str) -> None:
    """Write `begin`, `inner`, `end` over the block between those markers in `path`, or append it
    under `## heading` when the markers are missing. Other blocks and hand-written text stay."""
    body = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{begin}\n{inner}\n{end}"
    if begin in body and end in body:
        body = body[: body.index(begin)] + block + body[body.index(end) + len(end):]
    else:
        body = body.rstrip("\n") + f"\n\n## {heading}\n\n" + block + "\n"
    path.write_text(body)
