"""tests.helpers.InProcess, the runner behind the `cnntool` fixture: a command run in this process
answers what a child process answers, and leaves nothing of itself behind for the next test."""

import os
import signal
import sys
import warnings

import pytest
import torch

from tests.helpers import CnnTool, InProcess


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],  # click's help, wrapped at the width a process computes from COLUMNS
        ["profil", "alexnet"],  # a usage error: exit 2 and click's message
        ["layers", "lenet5-mnist"],  # a table on stdout, status lines on stderr
        ["layers", "alexnett"],  # a user error: exit 1 and one sentence
    ],
    ids=lambda args: " ".join(args),
)
def test_in_process_answers_what_a_child_process_answers(args):
    child = CnnTool()(*args)
    here = InProcess()(*args)
    assert (here.returncode, here.stdout, here.stderr) == (
        child.returncode,
        child.stdout,
        child.stderr,
    )


def test_stdin_reaches_the_command(tmp_path):
    from PIL import Image

    Image.new("L", (28, 28), 0).save(tmp_path / "blank.png")
    result = InProcess()(
        "predict", "lenet5-mnist", "-", "--format", "csv", "-q", stdin=f"{tmp_path}/blank.png\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].startswith(f"{tmp_path}/blank.png,")


def test_a_run_leaves_the_process_as_it_found_it(tmp_path):
    from PIL import Image

    from cnntool.cli import console

    (tmp_path / "data").mkdir()
    for k in range(4):
        Image.new("L", (28, 28), 60 * k).save(tmp_path / "data" / f"{k}.png")
    environ, cwd, argv, path = dict(os.environ), os.getcwd(), sys.argv[:], sys.path[:]
    filters, show = warnings.filters[:], warnings.showwarning
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGPIPE, signal.SIGCHLD)}
    threads, grad = torch.get_num_threads(), torch.is_grad_enabled()
    rng = torch.get_rng_state()
    # what an earlier test in this worker left there (a library call may have made a console)
    console_state = (console._console, console._quiet, console._silent)
    # -q makes the console quiet, threads and cwd are set for the run, and 2 loader processes
    # (torch's DataLoader sets a SIGCHLD handler) read the 2 batches
    result = InProcess()(
        *("predict", "lenet5-mnist", "data", "--batch-size", "2", "--workers", "2", "-q"),
        threads=3,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 4
    assert (console._console, console._quiet, console._silent) == console_state
    assert (dict(os.environ), os.getcwd(), sys.argv, sys.path) == (environ, cwd, argv, path)
    assert (warnings.filters, warnings.showwarning) == (filters, show)
    assert {s: signal.getsignal(s) for s in handlers} == handlers
    assert (torch.get_num_threads(), torch.is_grad_enabled()) == (threads, grad)
    assert torch.equal(torch.get_rng_state(), rng)


def test_an_escaping_exception_is_a_traceback_and_exit_1():
    result = InProcess()("layers", "alexnett", "--debug")  # --debug lets the error through
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "alexnett" in result.stderr.splitlines()[-1]
