"""Every mistake a user can make becomes a CnnToolError: one clear sentence, exit code 1."""

from __future__ import annotations

import difflib
import errno
import os
from collections.abc import Iterable


class CnnToolError(Exception):
    """A failure the user can fix. Its message is one sentence shown without a traceback."""

    exit_code = 1


class ModelLoadError(CnnToolError):
    """A model spec, checkpoint or architecture that cannot be loaded."""


class UntrustedCodeError(ModelLoadError):
    """Loading would execute code from a file, and the user did not say it may."""


class UnknownNameError(CnnToolError):
    """A model, layer, class or sample-set name that does not exist."""


class DataError(CnnToolError):
    """A DATA spec that yields no usable image."""


class InputSizeError(CnnToolError):
    """An input too small (or malformed) for the model."""


class OutputError(CnnToolError):
    """An output that cannot be written: a full disk, a read-only folder, a name too long…"""


class DistributedError(CnnToolError):
    """The ranks of a distributed scan lost each other (a rank died, hung or never came).
    `waited`: the seconds a rank waited in vain, when that is what happened."""

    def __init__(self, message: str, waited: float | None = None):
        super().__init__(message)
        self.waited = waited


# What an errno means to a user, in the words of one sentence (os_error_sentence). Others get
# the system's own text (strerror), lower-cased.
_ERRNO_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENAMETOOLONG: "the name is too long",
    errno.EFBIG: "the file is larger than the file system or a size limit (ulimit -f) allows",
    errno.ELOOP: "symbolic link loop",
    errno.ENOENT: "no such file or folder",
    errno.ENOTDIR: "a part of the path is not a folder",
    errno.EISDIR: "it is a folder",
    errno.EIO: "input/output error (a failing disk or network file system?)",
}
# errnos that only writing meets: the sentence says "cannot write" whatever the caller did
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


def os_error_reason(exc: BaseException) -> str:
    """Why a file operation failed, in a few lower-case words without the path: an OSError by
    its errno ('the disk is full'), else its own text or the exception's first line."""
    if isinstance(exc, OSError) and exc.errno in _ERRNO_REASONS:
        return _ERRNO_REASONS[exc.errno]
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror  # '[Errno 13] Permission denied: …' -> 'permission denied'
    else:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:1].lower() + text[1:]


def os_error_sentence(
    exc: OSError, path: str | os.PathLike | None = None, action: str | None = None
) -> str:
    """The one sentence for a failed file operation: 'cannot write out.npz: the disk is full
    (errno 28)'. `path` defaults to the exception's own file name; `action` to 'write' for the
    errnos only writing meets and 'open' for the others."""
    if path is None:
        path = exc.filename
    if action is None:
        action = "write" if exc.errno in _WRITE_ERRNOS else "open"
    if path is None:
        where = ""  # a write to a stream: 'cannot write: the disk is full (errno 28)'
    else:
        where = " " + (
            os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else str(path)
        )
    code = f" (errno {exc.errno})" if exc.errno else ""
    return f"cannot {action}{where}: {os_error_reason(exc)}{code}"


def close_matches(name: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """Candidates that look like `name`: those containing it first ('panda' -> 'giant panda'),
    then difflib's look-alikes ('resnet181' -> 'resnet18')."""
    candidates = list(candidates)
    lowered = name.lower()
    containing = [c for c in candidates if lowered and lowered in c.lower()]
    containing.sort(key=lambda c: -difflib.SequenceMatcher(None, lowered, c.lower()).ratio())
    hits = containing[:n]
    for cand in difflib.get_close_matches(name, candidates, n=n, cutoff=0.6):
        if len(hits) >= n:
            break
        if cand not in hits:
            hits.append(cand)
    return hits


def unknown_name(
    kind: str, name: str, candidates: Iterable[str], hint: str = ""
) -> UnknownNameError:
    """An UnknownNameError whose sentence names close matches (and where to look)."""
    matches = close_matches(name, candidates)
    msg = f"unknown {kind} '{name}'"
    if matches:
        msg += "; did you mean " + ", ".join(f"'{m}'" for m in matches) + "?"
    if hint:
        msg += f" ({hint})"
    return UnknownNameError(msg)


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message for a one-sentence error (see `shorten`)."""
    text = str(exc).strip()
    return shorten(text.splitlines()[0] if text else type(exc).__name__, limit)


def shorten(line: str, limit: int) -> str:
    """`line`, or when it is longer than `limit` its first whole words marked with '…' (a
    message cut mid-word reads as a different word)."""
    if len(line) <= limit:
        return line
    return line[:limit].rsplit(" ", 1)[0].rstrip(" ,;:") + " …"
