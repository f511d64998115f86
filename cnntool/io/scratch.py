"""Scratch files named after the process that owns them, and the cleanup of leftovers.

Outputs are written to a temporary file beside them and renamed into place (writers.atomic_path);
features spool their rows to a scratch file. A run killed with SIGKILL (or by the OOM killer, or
a power cut) cannot remove those. Their names say who made them:

    .{stem}.{pid}@{host}.{random}{suffix}        e.g. .features.npz.4711@gpu01.k2j3h4x_.part

so a later run in the same folder can tell a leftover (its process is gone from this host) from
a file that another live run is still writing. `clean_stale(folder)` removes the leftovers, and
anything of ours older than a day (a run on another host sharing the folder, a recycled PID),
and says what it removed, for the command to name in a warning.
"""

from __future__ import annotations

import itertools
import os
import re
import socket
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cnntool.errors import CnnToolError

SCRATCH_SUFFIXES = (".part", ".f32")
MAX_AGE = 24 * 3600.0  # seconds after which any scratch file of ours is stale
FEATURES_STEM = "cnntool-features"

# mkstemp's random part: 8 characters of [a-z0-9_]
_RANDOM = r"[a-z0-9_]{8}"
_OWNED = re.compile(
    rf"^\.(?P<stem>.+)\.(?P<pid>\d+)@(?P<host>[A-Za-z0-9-]+)\.{_RANDOM}(?P<suffix>\.part|\.f32)$"
)
# names from before scratch files carried their owner: removed by age only
_UNOWNED = re.compile(rf"^\.(?:.+\.{_RANDOM}\.part|{FEATURES_STEM}\.{_RANDOM}\.f32)$")


def host_name() -> str:
    """This machine's name as scratch names carry it: letters, digits and '-' only."""
    name = re.sub(r"[^A-Za-z0-9-]+", "-", socket.gethostname()).strip("-")
    return name[:40] or "localhost"


def scratch_file(folder: str | Path | None, stem: str, suffix: str) -> tuple[int, Path]:
    """Create an empty scratch file (mode 0600) in `folder` (None: the system's temp folder)
    whose name carries this process's PID and host; return its open descriptor and path.
    `stem` is shortened as far as needed for the name to fit the file system's limit (an
    output name of 250 bytes is valid; its scratch name with PID, host and suffix would not be)."""
    if suffix not in SCRATCH_SUFFIXES:
        raise ValueError(f"scratch files end in {' or '.join(SCRATCH_SUFFIXES)}, not {suffix}")
    owner = f".{os.getpid()}@{host_name()}."
    room = name_max(folder) - len(f".{owner}{'x' * 8}{suffix}")  # mkstemp adds 8 characters
    handle, name = tempfile.mkstemp(
        prefix=f".{_shortened(stem, room)}{owner}",
        suffix=suffix,
        dir=None if folder is None else str(folder),
    )
    return handle, Path(name)


def open_fixed(path: str | Path, *, reuse: bool) -> int:
    """Open the scratch file at a fixed `path` (one that a resumed run must find again, such as
    the microscope's feature spool) for reading and writing, never through a link planted at its
    name and never into a file that is also linked elsewhere; return its descriptor.

    `reuse=False`: a new, empty file of ours (O_EXCL); a leftover regular file there is removed
    first (its name only: another name of the same data is left as it is). `reuse=True`: the
    file a saved state refers to, created when missing. Anything but a plain file of ours with
    one name (a symbolic link, a hard link, a folder, a FIFO) is refused in one sentence."""
    path = Path(path)
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    for _ in range(2):
        try:
            handle = os.open(path, flags | (0 if reuse else os.O_EXCL), 0o600)
        except FileExistsError:
            _refuse_unless_plain(path, os.lstat(path))
            path.unlink()  # a leftover of an interrupted run: not to be reused
            continue
        except OSError as exc:  # ELOOP: a link at the name (O_NOFOLLOW)
            _refuse_unless_plain(path, os.lstat(path), exc)
            raise
        info = os.fstat(handle)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            os.close(handle)
            _refuse_unless_plain(path, info, force=True)
        return handle
    raise CnnToolError(f"cannot create the scratch file {path}: another process keeps making it")


def _refuse_unless_plain(
    path: Path, info: os.stat_result, exc: OSError | None = None, force: bool = False
) -> None:
    if stat.S_ISLNK(info.st_mode):
        kind = "a symbolic link"
    elif not stat.S_ISREG(info.st_mode):
        kind = "not a regular file"
    elif info.st_nlink != 1:
        kind = "a file with another name (a hard link)"
    elif force or exc is not None:
        kind = "not usable"
    else:
        return
    raise CnnToolError(
        f"the scratch file {path} is {kind}; cnntool never writes through it (its "
        "target stays untouched): remove it and run again"
    )


def name_max(folder: str | Path | None) -> int:
    """The longest file name (bytes) that `folder`'s file system takes: 255 on most."""
    try:
        return os.pathconf(tempfile.gettempdir() if folder is None else folder, "PC_NAME_MAX")
    except (OSError, ValueError):  # the folder does not exist (yet), or no such limit is known
        return 255


def _shortened(stem: str, room: int) -> str:
    """`stem` cut to at most `room` bytes in the file system's encoding (whole characters; at
    least one)."""
    if len(os.fsencode(stem)) <= room:
        return stem
    # the number of whole characters whose encoding fits in `room` bytes
    sizes = itertools.accumulate(len(os.fsencode(character)) for character in stem)
    fits = next(i for i, size in enumerate(sizes) if size > room)
    return stem[: max(fits, 1)]


@dataclass(frozen=True)
class Owner:
    """The process that made a scratch file: its PID on `host`."""

    pid: int
    host: str


def scratch_owner(name: str) -> Owner | None:
    """Who made the scratch file called `name`; None for an older name without an owner (or a
    name that is not one of ours)."""
    match = _OWNED.match(name)
    return Owner(int(match["pid"]), match["host"]) if match else None


def is_scratch_name(name: str) -> bool:
    return bool(_OWNED.match(name) or _UNOWNED.match(name))


@dataclass(frozen=True)
class Removed:
    """A stale scratch file that `clean_stale` removed: where, how large, and why it was stale."""

    path: Path
    size: int
    reason: str  # "process 4711 is gone" or "older than a day"


def clean_stale(
    folder: str | Path,
    *,
    max_age: float = MAX_AGE,
    now: float | None = None,
    recursive: bool = False,
) -> list[Removed]:
    """Remove the scratch files in `folder` that no live run owns: those whose owner PID no
    longer runs on this host, and any older than `max_age` seconds. Files of live processes,
    other people's files and links are left alone; so is a folder that does not exist.
    Returns what was removed, in path order."""
    now = time.time() if now is None else now
    removed: list[Removed] = []
    folders = [Path(folder)]
    while folders:
        current = folders.pop()
        try:
            entries = list(os.scandir(current))
        except OSError:  # missing, not a folder, unreadable: nothing of ours to clean
            continue
        for entry in entries:
            if recursive and entry.is_dir(follow_symlinks=False):
                folders.append(Path(entry.path))
                continue
            if not entry.name.startswith(".") or not is_scratch_name(entry.name):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISREG(info.st_mode):
                continue
            reason = _stale(entry.name, info.st_mtime, now, max_age)
            if reason is None:
                continue
            try:
                os.unlink(entry.path)
            except FileNotFoundError:  # another run cleaned it first
                continue
            except OSError:  # not ours to remove (permissions): leave it
                continue
            removed.append(Removed(Path(entry.path), info.st_size, reason))
    return sorted(removed, key=lambda item: item.path)


def clean_outputs(outputs, *, folders: bool = False) -> str | None:
    """Remove the stale scratch files where a command writes `outputs` (files: their folder;
    with `folders=True` output folders, with their subfolders; None and '-' are skipped), and
    return the warning that says what went, or None when nothing did."""
    removed: list[Removed] = []
    for output in outputs:
        if output is not None and str(output) != "-":
            removed += clean_stale(
                Path(output) if folders else Path(output).parent, recursive=folders
            )
    if not removed:
        return None
    size = sum(item.size for item in removed) / 2**20
    return (
        f"removed {len(removed)} scratch file(s) ({size:.1f} MiB) that interrupted runs left "
        f"behind, e.g. {removed[0].path} ({removed[0].reason})"
    )


def _stale(name: str, mtime: float, now: float, max_age: float) -> str | None:
    owner = scratch_owner(name)
    if owner is not None and owner.host == host_name() and not process_alive(owner.pid):
        return f"process {owner.pid} is gone"
    if now - mtime > max_age:
        return "older than a day" if max_age == MAX_AGE else f"older than {max_age:g} s"
    return None


def process_alive(pid: int) -> bool:
    """Whether a process with this PID runs on this machine (signal 0 tests, sends nothing)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    except OSError:
        return True
    return True
