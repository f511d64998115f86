"""Shared pytest set-up: the import path, and the fixtures that run `cnntool` as a user does.

Markers (registered in pyproject.toml): `slow` (over ~10 s on 2 CPU cores), `torchrun`
(launches torch.distributed.run), `browser` (headless Chromium). `make test` runs them all;
`pytest -m "not slow and not torchrun"` is the quick loop while editing.
"""

import os
import sys

import pytest

# Make `import cnntool` work from a checkout that is not pip-installed (plain `pytest`).
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

# `make test` runs one pytest-xdist worker per core. Each worker (and every `cnntool` it starts)
# then computes on one thread: two workers with two OpenMP threads each on two cores spend their
# time spinning and switching, not computing.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

from tests.helpers import InProcess  # noqa: E402  (needs the path above)


@pytest.fixture(scope="session")
def cnntool() -> InProcess:
    """Run `cnntool ARGS` through its entry point in this process (tests.helpers.InProcess):
    `cnntool("profile", "alexnet")`, with `stdin=`, `threads=1` or `cwd=`; a CompletedProcess.
    `cnntool.process(ARGS)` runs it in a child process where the process is the point (signals,
    closed pipes, start-up imports); `cnntool.torchrun(ARGS)` runs 2 gloo CPU ranks."""
    return InProcess()
