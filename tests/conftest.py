"""Shared pytest set-up: the import path, and the fixtures that run `cnntool` as a user does.

Markers (registered in pyproject.toml): `slow` (over ~10 s on 2 CPU cores), `torchrun`
(launches torch.distributed.run), `browser` (headless Chromium). `make test` runs them all;
`pytest -m "not slow and not torchrun"` is the quick loop while editing.
"""

import os
import subprocess
import sys
from pathlib import Path

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


@pytest.fixture(scope="session")
def own_model_trained(tmp_path_factory) -> tuple[Path, float]:
    """examples/own_model/train.py's output folder and the test accuracy it printed. It trains
    for seconds, once per test run: the xdist workers share the folder (test_own_model and
    test_own_model_cli only read it)."""
    from filelock import FileLock

    basetemp = tmp_path_factory.getbasetemp()
    shared = basetemp.parent if os.environ.get("PYTEST_XDIST_WORKER") else basetemp  # this run's
    out, accuracy = shared / "own_model_trained", shared / "own_model_trained.accuracy"
    with FileLock(str(shared / "own_model_trained.lock")):
        if not accuracy.exists():
            out.mkdir(exist_ok=True)
            done = subprocess.run(
                [sys.executable, os.path.join(_ROOT, "examples", "own_model", "train.py"), out],
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert done.returncode == 0, done.stderr
            accuracy.write_text(done.stderr.split("classes: ")[1].split("%")[0])
    return out, float(accuracy.read_text()) / 100
