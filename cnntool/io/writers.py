"""Files written atomically (records on a stream, JSON Lines / CSV / tables, are records.py's).

A file is written to a temporary name in the same folder and renamed into place, so an
interrupted run never leaves a half-written output behind. `-` means stdout.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

from cnntool.errors import OutputError, os_error_sentence
from cnntool.io.records import json_text, plain
from cnntool.io.scratch import name_max, scratch_file


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.
    The temporary file is removed whatever happens; a failure to write it or `path` (a full
    disk, a read-only folder, a name too long) is an OutputError sentence that names `path`."""
    path = Path(path)
    if _special(path):  # /dev/null, /dev/full, a FIFO: written in place, never replaced by a file
        try:
            yield path
        except OSError as exc:
            if isinstance(exc, BrokenPipeError) or not _names(exc, path):
                raise
            raise OutputError(os_error_sentence(exc, path, "write")) from exc
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # the name carries our PID and host, so that a run killed here leaves a file that the
        # next one can recognize as stale (io.scratch.clean_stale)
        handle, temp = scratch_file(path.parent, path.name, ".part")
    except OSError as exc:
        raise OutputError(os_error_sentence(exc, path, "write")) from exc
    try:
        try:  # on the descriptor, not the name: nothing planted there since mkstemp is followed
            os.fchmod(handle, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual ones
        finally:
            os.close(handle)
        yield Path(temp)
        os.replace(temp, path)
    except OSError as exc:
        if isinstance(exc, BrokenPipeError) or not _names(exc, temp):  # another file, stdout
            raise
        raise OutputError(os_error_sentence(exc, path, "write")) from exc
    finally:
        with contextlib.suppress(OSError):  # never mask what went wrong above
            os.unlink(temp)


def check_writable(path: str | Path, *, folder: bool = False) -> None:
    """Raise now the OutputError that writing `path` (a file; with `folder`, a folder to write
    files in) would raise at the end of a long scan: no file can be created where it goes
    (read-only, no permission, not a folder) or a name in it is too long. Creates nothing: a
    scratch file in the nearest folder that exists is made and removed at once. A full disk
    shows only when the data come."""
    path = Path(path)
    if not folder and _special(path):  # /dev/null: written in place (atomic_path)
        return
    existing = path if folder else path.parent
    while not existing.is_dir() and not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        handle, temp = scratch_file(existing, path.name or "out", ".part")
    except OSError as exc:
        raise OutputError(os_error_sentence(exc, path, "write")) from exc
    os.close(handle)
    os.unlink(temp)
    if any(len(os.fsencode(part)) > name_max(existing) for part in path.parts):
        too_long = OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG))
        raise OutputError(os_error_sentence(too_long, path, "write"))


def _special(path: Path) -> bool:
    """Whether `path` is a device, FIFO or socket (renaming a file onto /dev/null would replace
    it, and root may)."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _names(exc: OSError, temp: Path) -> bool:
    """Whether `exc` is about `temp` (or about no file in particular: a write)."""
    if exc.filename is None:
        return True
    return isinstance(exc.filename, (str, bytes, os.PathLike)) and os.fsdecode(exc.filename) == str(
        temp
    )


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
    # text: a file name that is not UTF-8 ('\\udcff.png') is written as '\\udcff', so that a
    # page, a JSON or a CSV file stays UTF-8 (in JSON that is the escape of the same character)
    text = {"encoding": "utf-8", "errors": "backslashreplace", "newline": ""}
    with atomic_path(path) as temp, open(temp, mode, **({} if "b" in mode else text)) as handle:
        yield handle


def save_image(image, path: str | Path) -> None:
    """Save a PIL image atomically (format from the suffix; PNG is lossless)."""
    path = Path(path)
    with atomic_path(path) as temp:
        image.save(temp, format=_pil_format(path))


def _pil_format(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    return {"jpg": "JPEG", "jpeg": "JPEG", "tif": "TIFF"}.get(suffix, suffix.upper() or "PNG")


def write_json(path: str | Path, record: Mapping) -> None:
    """A JSON document, indented, written atomically (`-`: stdout)."""
    with open_output(path) as handle:
        handle.write(json_text(plain(record), indent=2) + "\n")
