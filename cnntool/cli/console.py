"""Output for people goes to stderr (rich, which honours NO_COLOR and drops colour and animation
when stderr is not a terminal); output for pipelines goes to stdout. Status lines, warnings and
errors are soft-wrapped (one line each, whatever the width), so a log file can be grepped; tables
written to a file or pipe get 120 columns (rich's 80 squeezes the wider ones) unless COLUMNS says
otherwise."""
from __future__ import annotations

import contextlib
import os
import sys
import warnings
from typing import Iterator

from cnntool.io.records import table

_console = None  # a rich Console on stderr, made on first use (rich is imported only then)
_quiet = False
_silent = False  # a torchrun rank other than 0: only errors, rank 0 speaks for all


def console():
    global _console
    if _console is None:
        from rich.console import Console

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
    if not _silent:
        console().print(f"[yellow]warning:[/yellow] {message}", soft_wrap=True)


def say(message: str, warning: bool) -> None:
    """A line from below the CLI (core's `say`/`announce` callbacks): a warning or a status line."""
    (warn if warning else info)(message)


def error(message: str) -> None:
    console().print(f"[bold red]error:[/bold red] {message}", soft_wrap=True)


def warnings_as_lines() -> None:
    """A library's warning (Pillow, numpy, torch) is one `warning:` line on stderr like ours,
    not a file name, a line number and a source line; each is said once."""
    said: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None):
        text = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
        if text not in said:
            said.add(text)
            warn(text)

    warnings.showwarning = show


def show_table(title, columns, records, **options) -> None:
    """A table of records for people on stderr (cnntool.io.records.table; silenced by -q)."""
    show(table(title, columns, list(records), **options))


def show(renderable) -> None:
    """A table or panel for people (silenced by -q)."""
    if not _quiet:
        console().print(renderable)


@contextlib.contextmanager
def progress(description: str, total: int | None) -> Iterator:
    """A rich progress bar on stderr; `advance(n)` on what it yields. Hidden with -q."""
    from rich import progress as bars

    bar = bars.Progress(bars.TextColumn("{task.description}"), bars.BarColumn(), bars.MofNCompleteColumn(),
                        bars.TimeElapsedColumn(), bars.TimeRemainingColumn(), console=console(),
                        disable=_quiet, transient=False)
    with bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)
