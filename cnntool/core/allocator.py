"""Keep large freed blocks for reuse (glibc's malloc; the command line only).

glibc hands every allocation above its mmap threshold (at most 32 MB by default) to the kernel
with mmap and gives it back with munmap when freed. A CNN on the CPU allocates and frees
activations of that size every layer (lite0 at batch 32: 51 MB for one 112×112×32 map), so
each one arrives as fresh pages that fault in one by one: on the 2-core machine a third of a
lite0 scan's time was the kernel's (benchmarks/malloc_bench.py). Raising the thresholds keeps
such blocks in the heap, where the next layer reuses them. The process then gives less memory
back while it runs (peak RSS +20% on that scan), which is right for a command that scans and
exits; a library user's process is left alone (only `cnntool.cli.main` calls this).

`CNNTOOL_MALLOC=system` keeps glibc's defaults; so does any malloc setting of the user's own
(GLIBC_TUNABLES naming a malloc threshold, MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_).
"""

from __future__ import annotations

import ctypes
import os

# mallopt's parameter numbers (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# blocks up to 1 GiB come from the heap; up to 1 GiB free at its top is kept, not trimmed
_THRESHOLD = 1 << 30
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


_applied = False


def keep_large_blocks(environ=os.environ) -> bool:
    """Raise glibc's mmap and trim thresholds for this process unless `environ` opts out;
    True when they are raised, False when `environ` opts out or they cannot be. A second call
    (in-process runs of the command line) changes nothing."""
    global _applied
    if environ.get("CNNTOOL_MALLOC", "").lower() == "system":
        return False
    tunables = environ.get("GLIBC_TUNABLES", "")
    if any(name in environ for name in _USER_SETTINGS) or "threshold" in tunables:
        return False
    if _applied:
        return True
    if not _glibc():
        return False
    try:
        # the process's own symbols hold libc's (ctypes.util.find_library would start ldconfig
        # on every command's start-up)
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # no symbol table to read, or a libc without mallopt
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt answers 1 when it took the value (an older glibc may refuse one above 32 MB)
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, _THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _THRESHOLD)
    )
    return _applied


def _glibc() -> bool:
    """Whether this process runs on glibc (musl, macOS and Windows have no such thresholds)."""
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError, AttributeError):  # the name is unknown off glibc
        return False
