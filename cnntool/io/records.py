"""Records out: JSON Lines or CSV on stdout for pipelines, or one rich table for people.

`RecordWriter` writes records one at a time as JSON Lines or CSV (`jsonl_line`, `csv_text`,
`plain` and `json_text` are its pieces). A command describes its table once (`Column`s over its
records), and `write_records` prints the records in the format asked for; `table` builds the
same kind of table for stderr.
rich is imported only when a table is drawn. A table shows its title, caption and cells as they
are (no rich markup, no control characters): a cell that is styled on purpose is a rich Text
(`styled`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

from cnntool.errors import OutputError, os_error_sentence
from cnntool.io.untrusted import csv_cell, printable


def plain(value):
    """JSON-ready: tuples to lists, NaN/inf to None, numpy/torch scalars to Python numbers."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def jsonl_line(record: Mapping) -> str:
    return json_text(plain(record), separators=(",", ":"))


_C1 = re.compile("[\x7f-\x9f]")


def json_text(value, **options) -> str:
    """JSON text without a raw control character: json escapes C0 itself; DEL and C1 (which
    a terminal may obey, e.g. U+009B, a CSI) are escaped here too. Lossless: a reader gets the
    same strings back."""
    return _C1.sub(
        lambda m: f"\\u{ord(m.group()):04x}", json.dumps(value, ensure_ascii=False, **options)
    )


def _cell(value) -> str:
    """A CSV cell: numbers as they are, text never a formula (io.untrusted.csv_cell), lists and
    dicts as JSON."""
    if isinstance(value, (dict, list, tuple)):
        return csv_cell(json_text(plain(value), separators=(",", ":")))
    if value is None:
        return ""
    if isinstance(value, (int, float)):  # bool too: a number is never a formula
        return str(value)
    return csv_cell(str(value))


class RecordWriter:
    """Write records one at a time as JSON Lines or CSV (columns fixed by the first record).

    Each record is flushed at once so that a pipeline sees results as they come.
    """

    def __init__(self, stream: IO[str], fmt: str = "jsonl", columns: Sequence[str] | None = None):
        if fmt not in ("jsonl", "csv"):
            raise ValueError(f"RecordWriter writes jsonl or csv, not {fmt}")
        self.stream, self.fmt, self.columns = stream, fmt, list(columns) if columns else None
        self._csv = None

    def write(self, record: Mapping) -> None:
        try:
            self._write(record)
        except BrokenPipeError:
            raise
        except OSError as exc:  # `> /dev/full`, a full disk under a redirected stdout
            name = "stdout" if self.stream is sys.stdout else getattr(self.stream, "name", None)
            raise OutputError(os_error_sentence(exc, name, "write")) from exc

    def _write(self, record: Mapping) -> None:
        if self.fmt == "jsonl":
            self.stream.write(jsonl_line(record) + "\n")
        else:
            if self._csv is None:
                self.columns = self.columns or list(record)
                self._csv = csv.writer(self.stream, lineterminator="\n")
                self._csv.writerow(self.columns)
            self._csv.writerow([_cell(record.get(c)) for c in self.columns])
        self.stream.flush()

    def write_all(self, records: Iterable[Mapping]) -> None:
        for record in records:
            self.write(record)


def csv_text(records: Sequence[Mapping], columns: Sequence[str] | None = None) -> str:
    buffer = io.StringIO()
    RecordWriter(buffer, "csv", columns).write_all(records)
    return buffer.getvalue()


@dataclass(frozen=True)
class Column:
    """A table column: its header, and the record key or a function giving the cell text."""

    header: str
    value: str | Callable[[Mapping], Any]
    right: bool = False
    fold: bool = False  # wrap long cells instead of cutting them
    no_wrap: bool = False

    def cell(self, record: Mapping):
        """The cell's value: text (None: ""), or a rich Text that `value` gave (see `styled`)."""
        value = record.get(self.value) if isinstance(self.value, str) else self.value(record)
        return "" if value is None else value


def styled(text: str, style: str):
    """A cell (or status line) in a rich style of ours, e.g. styled("FAIL", "bold red")."""
    from rich.text import Text

    return Text(printable(text), style=style)


def _literal(value, style: str | None = None):
    """A rich Text shown as it is: a string taken literally (no markup, no control characters),
    a Text (ours, from `styled`) as it is."""
    from rich.text import Text

    return value if isinstance(value, Text) else Text(printable(value), style=style or "")


def table(
    title: str | None,
    columns: Sequence[Column],
    records: Iterable[Mapping],
    *,
    caption: str | None = None,
    compact: bool = False,
    styles: Callable[[Mapping], str | None] | None = None,
):
    """A rich Table of `records` (compact: no vertical rules, tight padding)."""
    from rich import box
    from rich.table import Table

    extra = (
        dict(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, collapse_padding=True)
        if compact
        else {}
    )
    result = Table(
        title=None if title is None else _literal(title, "table.title"),
        title_justify="left",
        caption_justify="left",
        caption=None if caption is None else _literal(caption, "table.caption"),
        **extra,
    )
    for column in columns:
        result.add_column(
            _literal(column.header),
            justify="right" if column.right else "left",
            overflow="fold" if column.fold else "ellipsis",
            no_wrap=column.no_wrap,
        )
    for record in records:
        result.add_row(
            *(_literal(column.cell(record)) for column in columns),
            style=styles(record) if styles else None,
        )
    return result


def write_records(
    records: Iterable[Mapping],
    fmt: str | None,
    *,
    columns: Sequence[str] | None = None,
    title: str | None = None,
    table_columns: Sequence[Column] | None = None,
    caption: str | None = None,
    styles: Callable[[Mapping], str | None] | None = None,
) -> None:
    """Records on stdout as JSON Lines, CSV (with `columns`, else the first record's keys) or,
    for `table`, a table for people (`table_columns`); nothing when fmt is None."""
    if not fmt:
        return
    if fmt == "table":
        if table_columns is None:
            raise ValueError("a table needs its columns")
        from rich.console import Console

        width = None if sys.stdout.isatty() else 200  # a pipe or file: wide enough not to fold rows
        Console(file=sys.stdout, highlight=False, emoji=False, width=width).print(
            table(title, table_columns, list(records), caption=caption, styles=styles)
        )
        return
    RecordWriter(sys.stdout, fmt, columns).write_all(records)


def human(value: float, unit: str = "") -> str:
    """1234567 -> '1.23M'."""
    for threshold, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= threshold:
            return f"{value / threshold:.2f}{suffix}{unit}"
    return f"{value:g}{unit}"


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def short_path(path: str, keep: int = 2) -> str:
    """The last `keep` parts of a path: enough to recognise a file in a table."""
    parts = path.replace("\\", "/").split("/")
    return "/".join(parts[-keep:]) if len(parts) > keep else path
