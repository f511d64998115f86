"""Output for people goes to stderr (rich); output for pipelines goes to stdout.

rich already honours NO_COLOR and drops colour and animation when stderr is not a terminal.
Status lines, warnings and errors are soft-wrapped (one line each, whatever the width), so a
log file can be grepped; tables written to a file or pipe get 120 columns (rich's 80 squeezes
the wider ones) unless COLUMNS says otherwise.
"""
from __future__ import annotations

import contextlib
from typing import Iterable, Iterator, TypeVar

import os
import sys

from rich.console import Console

T = TypeVar("T")

_console: Console | None = None
_quiet = False
_silent = False  # a torchrun rank other than 0: only errors, rank 0 speaks for all


def console() -> Console:
    global _console
    if _console is None:
        piped = not sys.stderr.isatty() and "COLUMNS" not in os.environ
        _console = Console(stderr=True, highlight=False, width=120 if piped else None)
    return _console


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def silence_rank() -> None:
    """Quiet this process entirely (warnings too): another rank reports for the scan."""
    global _silent, _quiet
    _silent = _quiet = True


def info(message: str) -> None:
    """A status line for people (silenced by -q)."""
    if not _quiet:
        console().print(message, soft_wrap=True)


def warn(message: str) -> None:
    """A warning: always shown, also with -q (but not by a silenced rank)."""
    if _silent:
        return
    console().print(f"[yellow]warning:[/yellow] {message}", soft_wrap=True)


def error(message: str) -> None:
    console().print(f"[bold red]error:[/bold red] {message}", soft_wrap=True)


def show_table(title, columns, records, **options) -> None:
    """A table of records for people on stderr (cnntool.io.records.table; silenced by -q)."""
    from cnntool.io.records import table

    show(table(title, columns, list(records), **options))


def show(renderable) -> None:
    """A table or panel for people (silenced by -q)."""
    if not _quiet:
        console().print(renderable)


@contextlib.contextmanager
def progress(description: str, total: int | None) -> Iterator:
    """A rich progress bar on stderr; `advance(n)` on what it yields. Hidden with -q."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TimeRemainingColumn(), console=console(),
                   disable=_quiet, transient=False)
    with bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    with progress(description, total) as advance:
        for item in items:
            yield item
            advance(1)
