"""core/allocator: large freed blocks are reused instead of faulted in afresh (glibc only)."""

import os
import subprocess
import sys

import pytest

from cnntool.core.allocator import keep_large_blocks

GLIBC = (getattr(os, "confstr", lambda _: "")("CS_GNU_LIBC_VERSION") or "").startswith("glibc")

# five 48 MB blocks (over glibc's 32 MB ceiling for mmap) from malloc, written and freed: the
# page faults it costs, before and after (a child process: malloc's thresholds are
# process-wide). torch's CPU tensors come from the same malloc (benchmarks/malloc_bench.py:
# a lite0 scan's kernel time 5.6 -> 1.3 s)
FAULTS = """
import ctypes, resource
from cnntool.core.allocator import keep_large_blocks

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

def faults(size=48 << 20):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(block)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

faults()  # the interpreter's own first-use allocations
default = faults()
kept = keep_large_blocks({})
print(default, faults(), kept)
"""


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc thresholds")
def test_freed_large_blocks_are_reused_instead_of_faulted_in_again():
    done = subprocess.run(
        [sys.executable, "-c", FAULTS], capture_output=True, text=True, timeout=120, check=True
    )
    default, kept, applied = done.stdout.split()
    pages = 5 * (48 << 20) // os.sysconf("SC_PAGE_SIZE")
    assert applied == "True"
    assert int(default) >= 0.9 * pages  # every block's pages fault in, every time
    assert int(kept) <= 0.3 * pages  # the first block's pages, then the same block again


@pytest.mark.parametrize(
    "environ",
    [
        {"CNNTOOL_MALLOC": "system"},
        {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"},
        {"MALLOC_TRIM_THRESHOLD_": "0"},
        {"MALLOC_MMAP_THRESHOLD_": "131072"},
    ],
)
def test_the_users_own_malloc_setting_or_the_opt_out_is_left_alone(environ):
    assert keep_large_blocks(environ) is False
