"""The dataset scan of a command: load MODEL as asked, open DATA, scan this process's shard with
a progress bar, and report unreadable images in one wording (core.session does the work).

    with dataset_scan(model, model_request, data, scan, title="predict") as session:
        session.run([consumer], f"predict {session.model.name}")
        report = finish(session)        # collective; rank 0 reports skipped images
        if session.is_main: ...write...
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

from cnntool.cli import console
from cnntool.cli.options import ModelRequest, ScanOptions
from cnntool.core.session import ScanReport, ScanSession

UPSCALE_WARNING = 2.0  # warn when images are enlarged more than this on average


@contextlib.contextmanager
def dataset_scan(spec: str, request: ModelRequest, data: str, options: ScanOptions, *,
                 limit: int | None = None, loaded=None) -> Iterator[ScanSession]:
    """A ScanSession for a command (`loaded`: a model the command already loaded)."""
    from cnntool.core.data import open_data

    if _other_rank():
        console.silence_rank()  # rank 0 speaks for the scan
    dataset = open_data(data, max_pixels=options.max_pixels).spread(limit)  # before the model: cheap
    if loaded is None:
        loaded = request.load(spec)
    with ScanSession.open(loaded, dataset, batch_size=options.batch_size,
                          workers=options.workers, precision=options.precision,
                          fold_bn=options.fold_bn,
                          progress=console.progress, announce=_announce) as session:
        yield session


def finish(session: ScanSession) -> ScanReport:
    """The scan's report over every rank; rank 0 warns about unreadable and enlarged images.
    Raises DataError when nothing could be read."""
    report = session.finish()
    if session.is_main:
        report_skipped(report)
        if report.upscale > UPSCALE_WARNING:
            console.warn(f"the images were enlarged {report.upscale:.1f}× on average to reach the "
                         f"model's input ({_size(session)}): is that the input the model was "
                         "trained on? Set it with --input-size/--resize or --preprocessing")
    return report


def report_skipped(report: ScanReport) -> None:
    """The one wording of unreadable images."""
    if report.skipped:
        path, reason = report.skipped[0]
        example = reason if path in reason else f"{path}: {reason}"
        console.warn(f"skipped {len(report.skipped)} unreadable image(s) of {report.total}, "
                     f"e.g. {example}")


def _announce(text: str, warning: bool) -> None:
    (console.warn if warning else console.info)(text)


def _size(session: ScanSession) -> str:
    return "×".join(map(str, session.model.input_shape))


def _other_rank() -> bool:
    """A torchrun rank other than 0 (known from the environment before any process group)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and int(os.environ.get("RANK", "0")) != 0


def tidy(*outputs, folders: bool = False) -> None:
    """Remove scratch files that interrupted runs left where this command writes (`.part` files
    of atomic writes, features' `.f32` spools), and say what went. `outputs` are files (their
    folder is tidied) or, with `folders=True`, output folders (tidied with their subfolders)."""
    from pathlib import Path

    from cnntool.io.scratch import clean_stale

    removed = []
    for output in outputs:
        if output is None or str(output) == "-":
            continue
        where = Path(output) if folders else Path(output).parent
        removed += clean_stale(where, recursive=folders)
    if removed:
        size = sum(item.size for item in removed) / 2**20
        console.warn(f"removed {len(removed)} scratch file(s) ({size:.1f} MiB) that interrupted "
                     f"runs left behind, e.g. {removed[0].path} ({removed[0].reason})")
