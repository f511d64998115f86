"""Running `cnntool` as a user does: through its real entry point, in this process (`InProcess`,
what the `cnntool` fixture runs), or in a separate Python process, one process or 2 torchrun
ranks (`CnnTool`).

A child process costs 15-40 s on the shared 2-core machine (interpreter, torch, torchvision
imports); the same command in this process costs what the command itself costs. Tests use a
child process only where the process is the point: exit codes from signals, closed pipes,
torchrun, start-up imports (`--help` without torch), code trust that depends on the interpreter's
start-up path (PYTHONPATH), environment variables read at import, kills. Module-scoped fixtures
and other helpers may build either runner directly: `InProcess()` or `CnnTool()`.
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import traceback
import warnings
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


@dataclass(frozen=True)
class InProcess:
    """`cnntool ARGS` in this process through the real entry point (cnntool.cli.main.main, which
    turns failures into one sentence and an exit code), as a child process would run it: the
    same environment (cli_env: NO_COLOR, 200 columns), arguments, current folder and stdin; a
    CompletedProcess with the exit code and the text of stdout and stderr (what Python code wrote
    to sys.stdout/sys.stderr, then what was written to file descriptors 1 and 2 directly).

    The process-wide state a command may change is put back after it (see `_isolated`), so one
    run cannot leak into the next test. `torchrun()` and `python()` start child processes, as
    they must; `process` runs ARGS in a child process (CnnTool) where a test needs one."""

    env: dict[str, str] = field(default_factory=cli_env)
    process: CnnTool = field(default_factory=CnnTool)

    def __call__(
        self,
        *args,
        stdin: str | None = None,
        threads: int | None = None,
        cwd: str | os.PathLike | None = None,
    ) -> subprocess.CompletedProcess:
        from click.testing import CliRunner

        from cnntool.cli.main import main

        argv = [str(a) for a in args]
        env = self.env if threads is None else {**self.env, "OMP_NUM_THREADS": str(threads)}
        code = 0
        with (
            _isolated(env, cwd, threads, argv),
            _descriptors_captured() as raw,
            CliRunner().isolation(input=stdin) as (out, err, _),
        ):
            _as_a_fresh_process()
            try:
                main(argv)
            except SystemExit as exc:
                code = _exit_status(exc.code)
            except BaseException:  # noqa: BLE001 - what the interpreter prints for an escape
                sys.stderr.write(traceback.format_exc())
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
            stdout, stderr = out.getvalue(), err.getvalue()
        if code != 0:  # what a process's exit frees: a failed scan's loader processes, its model
            gc.collect()
        return subprocess.CompletedProcess(
            ["cnntool", *argv], code, _text(stdout + raw[1]), _text(stderr + raw[2])
        )

    def torchrun(self, *args, nproc: int = 2, cwd=None) -> subprocess.CompletedProcess:
        """2 ranks are 2 processes: CnnTool.torchrun."""
        return self.process.torchrun(*args, nproc=nproc, cwd=cwd)

    def python(self, code: str) -> subprocess.CompletedProcess:
        """A fresh interpreter: CnnTool.python."""
        return self.process.python(code)


def _exit_status(code) -> int:
    """The exit status of a process that raised SystemExit(code), as the interpreter sets it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    sys.stderr.write(f"{code}\n")
    return 1


def _text(data: bytes) -> str:
    """Bytes read from a pipe as subprocess.run(text=True) gives them: decoded, universal
    newlines."""
    return data.decode().replace("\r\n", "\n").replace("\r", "\n")


def _as_a_fresh_process() -> None:
    """Inside the stream isolation: what differs between a fresh `python -m cnntool` and this
    process at the moment main() starts."""
    import click.formatting

    from cnntool.cli import console

    # CliRunner fixes click's help width at 80; a process computes it from COLUMNS (200) as 78
    click.formatting.FORCED_WIDTH = None
    # rich reads NO_COLOR and COLUMNS when the console is made, and -q sets a module global
    console._console, console._quiet, console._silent = None, False, False
    # The interpreter's own warning filters, not pytest's (which show every DeprecationWarning),
    # and warnings printed to stderr as the interpreter prints them (main() replaces this with
    # its one-line warnings unless --debug)
    warnings.resetwarnings()
    warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
        warnings.filterwarnings("ignore", category=category, append=True)
    warnings.showwarning = _print_warning


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


@contextlib.contextmanager
def _isolated(env: dict[str, str], cwd, threads: int | None, argv: list[str]):
    """Set the environment, current folder, sys.argv and torch's thread count of a run, and put
    back everything process-wide a run may change: those, os.environ as a whole, the signal
    handlers, the warning filters and hooks, torch's random generator, grad mode and
    determinism flags, numpy's and Python's random state, sys.path, the console's globals, and
    the modules of user files imported with --trust-code."""
    import numpy as np
    import torch

    from cnntool.cli import console

    saved_environ = dict(os.environ)
    saved_cwd = os.getcwd()
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    saved_modules = set(sys.modules)
    saved_signals = {s: signal.getsignal(s) for s in _catchable_signals()}
    saved_threads = torch.get_num_threads()
    saved_grad = torch.is_grad_enabled()
    saved_deterministic = _deterministic()
    saved_dtype = torch.get_default_dtype()
    saved_matmul = torch.get_float32_matmul_precision()
    saved_random, saved_numpy = random.getstate(), np.random.get_state()
    saved_console = (console._console, console._quiet, console._silent)
    try:
        _replace_environ(env)
        if cwd is not None:
            os.chdir(cwd)
        sys.argv = [str(Path(__file__).resolve().parent.parent / "cnntool" / "__main__.py"), *argv]
        if threads is not None:
            torch.set_num_threads(threads)
        with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
            torch.seed()  # a fresh process starts from a random seed, not from the last run's
            yield
    finally:
        _replace_environ(saved_environ)
        os.chdir(saved_cwd)
        sys.argv, sys.path[:] = saved_argv, saved_path
        for name in set(sys.modules) - saved_modules:
            if name.startswith("cnntool_user_"):  # a --trust-code FILE.py, run afresh each time
                del sys.modules[name]
        for number, handler in saved_signals.items():
            if signal.getsignal(number) is not handler and handler is not None:
                signal.signal(number, handler)
        # each setter only where the run changed it (use_deterministic_algorithms imports
        # torch._dynamo, a second's work that a run that never touched it need not cost)
        if torch.get_num_threads() != saved_threads:
            torch.set_num_threads(saved_threads)
        torch.set_grad_enabled(saved_grad)
        if _deterministic() != saved_deterministic:
            torch.use_deterministic_algorithms(
                saved_deterministic[0], warn_only=saved_deterministic[1]
            )
        if torch.get_default_dtype() != saved_dtype:
            torch.set_default_dtype(saved_dtype)
        if torch.get_float32_matmul_precision() != saved_matmul:
            torch.set_float32_matmul_precision(saved_matmul)
        random.setstate(saved_random)
        np.random.set_state(saved_numpy)
        console._console, console._quiet, console._silent = saved_console


def _deterministic() -> tuple[bool, bool]:
    import torch

    return (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )


def _catchable_signals() -> list[signal.Signals]:
    return [s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP)]


def _replace_environ(env: dict[str, str]) -> None:
    for name in set(os.environ) - set(env):
        del os.environ[name]
    for name, value in env.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


@contextlib.contextmanager
def _descriptors_captured():
    """File descriptors 1 and 2 pointed at temporary files for the duration: what C code
    (or a forked loader process) writes there directly. Yields {1: bytes, 2: bytes}, filled
    when the block ends."""
    captured: dict[int, bytes] = {1: b"", 2: b""}
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        files, saved = {1: out, 2: err}, {}
        try:
            for fd, file in files.items():
                saved[fd] = os.dup(fd)
                os.dup2(file.fileno(), fd)
            yield captured
        finally:
            for fd, original in saved.items():
                os.dup2(original, fd)
                os.close(original)
                files[fd].seek(0)
                captured[fd] = files[fd].read()


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
