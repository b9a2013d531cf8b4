"""Progress reporting without printing: the library calls a callback, the CLI draws rich bars.

A long library step calls `progress(task, done, total)`: `task` names the step ("scoring",
"sensitivity", "reconstruct", "verify", "latency search", ...), `done` of `total` units are finished
(`total` >= 1; a step of unknown size is one unit). A step calls once with done 0 when it starts
and once with done == total when it ends. The library never prints; `NO_PROGRESS` is the
default callback. The CLI uses `rich_progress()`, one bar per task name, drawn on stderr.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Protocol


class ProgressFn(Protocol):
    def __call__(self, task: str, done: int, total: int) -> None: ...


def _quiet(task: str, done: int, total: int) -> None:
    return None


NO_PROGRESS: ProgressFn = _quiet


def report(progress: ProgressFn | None) -> ProgressFn:
    """The callback to call: `progress` or the silent default."""
    return progress if progress is not None else NO_PROGRESS


@contextlib.contextmanager
def step(progress: ProgressFn | None, task: str, total: int = 1) -> Iterator[Callable[[int], None]]:
    """`with step(progress, "verify") as advance:` reports the start, `advance(done)`, and the end."""
    fn = report(progress)
    fn(task, 0, total)
    state = {"done": 0}

    def advance(done: int) -> None:
        state["done"] = done
        fn(task, done, total)

    yield advance
    fn(task, max(state["done"], total), total)


@contextlib.contextmanager
def rich_progress(*, enabled: bool = True) -> Iterator[ProgressFn]:
    """A ProgressFn that draws one rich progress bar per task on stderr (transient: cleared at the end
    of the block, so the command's own tables stay readable). `enabled=False` gives the silent one."""
    if not enabled:
        yield NO_PROGRESS
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
    )

    bars = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=Console(stderr=True), transient=True)
    ids: dict[str, TaskID] = {}

    def update(task: str, done: int, total: int) -> None:
        if not bars.live.is_started:  # drawn at the first task: a command that fails before any prints nothing
            bars.start()
        if task not in ids:
            ids[task] = bars.add_task(task, total=max(total, 1))
        bars.update(ids[task], completed=done, total=max(total, 1))
        if done >= max(total, 1):
            bars.remove_task(ids.pop(task))  # finished: a later step of the same name starts a new bar

    try:
        yield update
    finally:
        if bars.live.is_started:
            bars.stop()
