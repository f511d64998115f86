"""Output for people goes to stderr (rich, which honours NO_COLOR and drops colour and animation
when stderr is not a terminal); output for pipelines goes to stdout. Status lines, warnings and
errors are soft-wrapped (one line each, whatever the width), so a log file can be grepped; tables
written to a file or pipe get 120 columns (rich's 80 squeezes the wider ones) unless COLUMNS says
otherwise.

Every user string (a path, a class name, an exception's text) is shown as it is: it reaches rich as
a `Text`, never as markup, with control characters and escape sequences removed
(io.untrusted.printable), so `[link=…]`, `[/x]` or an OSC hyperlink in it is printed, not obeyed.
Our own styling stays ours: the `warning:`/`error:` prefixes here, and a caller that styles part
of a message passes a rich `Text` it built (`Text.assemble`, styles given as arguments, user
strings as plain parts) instead of a markup string.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator

from cnntool.io.records import table
from cnntool.io.untrusted import printable

_console = None  # a rich Console on stderr, made on first use (rich is imported only then)
_quiet = False
_silent = False  # a torchrun rank other than 0: only errors, rank 0 speaks for all


def console():
    global _console
    if _console is None:
        from rich.console import Console

        piped = not sys.stderr.isatty() and "COLUMNS" not in os.environ
        _console = Console(stderr=True, highlight=False, emoji=False, width=120 if piped else None)
    return _console


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def silence_rank() -> None:
    """Quiet this process entirely (warnings too): another rank reports for the scan."""
    global _silent, _quiet
    _silent = _quiet = True


def info(message) -> None:
    """A status line for people (silenced by -q): a string, shown as it is, or a rich Text."""
    if not _quiet:
        console().print(_literal(message), soft_wrap=True)


def warn(message) -> None:
    """A warning: always shown, also with -q (but not by a silenced rank)."""
    if not _silent:
        console().print(_literal(message, ("warning:", "yellow")), soft_wrap=True)


def say(message: str, warning: bool) -> None:
    """A line from below the CLI (core's `say`/`announce` callbacks): a warning or a status line."""
    (warn if warning else info)(message)


def error(message) -> None:
    console().print(_literal(message, ("error:", "bold red")), soft_wrap=True)


def _literal(message, prefix: tuple[str, str] | None = None):
    """A rich Text of `message` (a string: taken literally; a Text: its styles kept), without
    control characters, after our own styled `prefix` (text, style)."""
    from rich.text import Text

    if isinstance(message, Text):
        text = message.copy()
        if (
            printable(text.plain) != text.plain
        ):  # a user string inside: keep the words, not the styles
            text = Text(printable(text.plain))
    else:
        text = Text(printable(message))
    return Text.assemble(prefix, " ", text) if prefix else text


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

    # the description names files and layers: plain text, not markup
    bar = bars.Progress(
        bars.TextColumn("{task.description}", markup=False),
        bars.BarColumn(),
        bars.MofNCompleteColumn(),
        bars.TimeElapsedColumn(),
        bars.TimeRemainingColumn(),
        console=console(),
        disable=_quiet,
        transient=False,
    )
    with bar:
        task = bar.add_task(printable(description), total=total)
        yield lambda n=1: bar.advance(task, n)


class PrintableStream:
    """A text stream that passes on what is written without control characters (for click's own
    usage errors, which quote the command line: `cnntool predict $'\\e]8;;…'`)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write(printable(text))

    def __getattr__(self, name):  # flush, isatty, encoding… as the stream's
        return getattr(self.stream, name)
