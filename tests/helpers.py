"""Running `cnntool` as a user does: a separate Python process, one process or 2 torchrun ranks.

The `cnntool` and `torchrun` fixtures in conftest.py hand these runners to tests; module-scoped
fixtures and other helpers may build one directly with `CnnTool()`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Set by a launcher (torchrun, SLURM wrappers): a child that inherited them would try to join
# the launcher's process group instead of running alone.
_DISTRIBUTED_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def cli_env(**overrides: str) -> dict[str, str]:
    """The environment of a command under test: no colours, 200 columns (rich wraps nothing
    the tests look for), not part of any process group; `overrides` on top."""
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    for name in _DISTRIBUTED_VARIABLES:
        env.pop(name, None)
    env.update(overrides)
    return env


def free_port() -> int:
    """A TCP port nobody listens on now (for torchrun's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class CnnTool:
    """`python -m cnntool ARGS` in a child process; its CompletedProcess (text stdout/stderr).

    threads=1 sets OMP_NUM_THREADS=1, as torchrun gives each rank: compare a one-process run
    with a torchrun run only when both used the same number of threads (a CPU convolution may
    take another algorithm and round differently with another thread count)."""

    env: dict[str, str] = field(default_factory=cli_env)
    timeout: float = 300

    def __call__(
        self,
        *args,
        stdin: str | None = None,
        threads: int | None = None,
        cwd: str | os.PathLike | None = None,
    ) -> subprocess.CompletedProcess:
        return self._run([sys.executable, "-m", "cnntool"], args, stdin, threads, cwd)

    def torchrun(
        self, *args, nproc: int = 2, cwd: str | os.PathLike | None = None
    ) -> subprocess.CompletedProcess:
        """`python -m torch.distributed.run --nproc_per_node NPROC -m cnntool ARGS` on this
        machine (gloo on the CPU), one thread per rank; rank 0's stdout is what it prints."""
        launcher = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(nproc),
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(free_port()),
            "-m",
            "cnntool",
        ]
        return self._run(launcher, args, None, 1, cwd)

    def python(self, code: str) -> subprocess.CompletedProcess:
        """`python -c CODE` in the same environment (what a fresh interpreter imports)."""
        return self._run([sys.executable, "-c", code], (), None, None, None)

    def _run(self, command, args, stdin, threads, cwd) -> subprocess.CompletedProcess:
        env = self.env if threads is None else {**self.env, "OMP_NUM_THREADS": str(threads)}
        return subprocess.run(
            [*command, *map(str, args)],
            capture_output=True,
            text=True,
            input=stdin,
            env=env,
            timeout=self.timeout,
            cwd=cwd,
        )


def same_records(a, b, *, rel: float, abs: float) -> bool:
    """Whether two JSON records are equal: floats to `rel`/`abs` (sums merged in another order,
    as torchrun's ranks do), everything else exactly. Fails with the first difference."""
    import pytest

    if isinstance(a, dict):
        assert a.keys() == b.keys()
        return all(same_records(a[k], b[k], rel=rel, abs=abs) for k in a)
    if isinstance(a, list):
        assert len(a) == len(b)
        return all(same_records(x, y, rel=rel, abs=abs) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        assert b == pytest.approx(a, rel=rel, abs=abs)
        return True
    assert a == b
    return True
