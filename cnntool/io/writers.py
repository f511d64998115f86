"""Writers for results: JSON Lines / CSV / tables on a stream, files written atomically.

A file is written to a temporary name in the same folder and renamed into place, so an
interrupted run never leaves a half-written output behind. `-` means stdout.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import IO, Iterable, Iterator, Mapping, Sequence

from cnntool.io.scratch import scratch_file
from cnntool.io.untrusted import csv_cell

FORMATS = ("jsonl", "csv", "table")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the name carries our PID and host, so that a run killed here leaves a file that the next
    # one can recognize as stale (io.scratch.clean_stale)
    handle, temp = scratch_file(path.parent, path.name, ".part")
    try:  # on the descriptor, not the name: nothing planted there since mkstemp is followed
        os.fchmod(handle, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual ones
    finally:
        os.close(handle)
    try:
        yield Path(temp)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def open_output(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Open `path` for writing atomically; `-` is stdout (not closed afterwards)."""
    if str(path) == "-":
        yield sys.stdout.buffer if "b" in mode else sys.stdout
        return
    with atomic_path(path) as temp:
        with open(temp, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as handle:
            yield handle


def save_image(image, path: str | Path) -> None:
    """Save a PIL image atomically (format from the suffix; PNG is lossless)."""
    path = Path(path)
    with atomic_path(path) as temp:
        image.save(temp, format=_pil_format(path))


def _pil_format(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    return {"jpg": "JPEG", "jpeg": "JPEG", "tif": "TIFF"}.get(suffix, suffix.upper() or "PNG")


def _plain(value):
    """JSON-ready: tuples to lists, NaN/inf to None, numpy/torch scalars to Python numbers."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def jsonl_line(record: Mapping) -> str:
    return _json(_plain(record), separators=(",", ":"))


_C1 = re.compile("[\x7f-\x9f]")


def _json(value, **options) -> str:
    """JSON text without a raw control character: json escapes C0 itself; DEL and C1 (which
    a terminal may obey, e.g. U+009B, a CSI) are escaped here too. Lossless: a reader gets the
    same strings back."""
    return _C1.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(value, ensure_ascii=False, **options))


def _cell(value) -> str:
    """A CSV cell: numbers as they are, text never a formula (io.untrusted.csv_cell), lists and
    dicts as JSON."""
    if isinstance(value, (dict, list, tuple)):
        return csv_cell(_json(_plain(value), separators=(",", ":")))
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


def plain(value):
    """JSON-ready values (tuples to lists, NaN/inf to None, numpy/torch scalars to numbers)."""
    return _plain(value)


def write_json(path: str | Path, record: Mapping) -> None:
    """A JSON document, indented, written atomically (`-`: stdout)."""
    with open_output(path) as handle:
        handle.write(_json(_plain(record), indent=2) + "\n")
