"""The dataset scan of a command: load MODEL as asked, open DATA, scan this process's shard with
a progress bar, and report unreadable images in one wording (core.session does the work):

    with dataset_scan(model, model_request, data, scan) as session:
        session.run([consumer], f"predict {session.model.name}")
        report = finish(session)  # collective; rank 0 warns, then `if session.is_main:` writes
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

from cnntool.cli import console
from cnntool.cli.options import ModelRequest, ScanOptions
from cnntool.core.data import open_data
from cnntool.core.session import ScanReport, ScanSession, report_warnings
from cnntool.core.sharding import launched_by_torchrun
from cnntool.errors import DistributedError
from cnntool.io.scratch import clean_outputs
from cnntool.io.writers import check_writable


@contextlib.contextmanager
def dataset_scan(spec: str, request: ModelRequest, data: str, options: ScanOptions, *,
                 limit: int | None = None, loaded=None) -> Iterator[ScanSession]:
    """A ScanSession for a command (`loaded`: a model the command already loaded)."""
    if launched_by_torchrun() and int(os.environ["RANK"]) != 0:
        console.silence_rank()  # rank 0 speaks for the scan
    dataset = open_data(data, max_pixels=options.max_pixels).spread(limit)  # before the model: cheap
    if loaded is None:
        loaded = request.load(spec)
    try:
        with ScanSession.open(loaded, dataset, batch_size=options.batch_size, workers=options.workers,
                              precision=options.precision, fold_bn=options.fold_bn,
                              dist_timeout=options.dist_timeout,
                              progress=console.progress, announce=console.say) as session:
            yield session
    except DistributedError as exc:
        if exc.waited is None:
            raise
        raise DistributedError(f"{exc} (--dist-timeout or CNNTOOL_DIST_TIMEOUT sets the wait)",
                               exc.waited) from exc


def finish(session: ScanSession) -> ScanReport:
    """The scan's report over every rank; rank 0 warns about unreadable and enlarged images.
    Raises DataError when nothing could be read."""
    report = session.finish()
    if session.is_main:
        for line in report_warnings(report, session.model.input_shape):
            console.warn(line)
    return report


def tidy(*outputs, folders: bool = False) -> None:
    """Remove the scratch files that interrupted runs left where this command writes `outputs`
    (files; with `folders=True` folders: io.scratch.clean_outputs), and say what went. An
    output that cannot be written (read-only, a name too long) is an error now, not after the scan."""
    for output in outputs:
        if output is not None and str(output) != "-":
            check_writable(output, folder=folders)
    line = clean_outputs(outputs, folders=folders)
    if line:
        console.warn(line)
