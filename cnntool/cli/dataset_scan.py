"""The dataset scan of a command: load MODEL as asked, open DATA, scan this process's shard with
a progress bar, and report unreadable images in one wording (core.session does the work):

    with dataset_scan(model, model_request, data, scan) as session:
        session.run([consumer], f"predict {session.model.name}")
        report = finish(session)  # collective; rank 0 warns, then `if session.is_main:` writes
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from cnntool.cli import console
from cnntool.cli.options import ModelRequest, ScanOptions
from cnntool.core.data import open_data
from cnntool.core.session import ScanReport, ScanSession, report_warnings
from cnntool.core.sharding import launched_by_torchrun
from cnntool.errors import DistributedError
from cnntool.io.outputs import InputFiles, Outputs, check_outputs, folder_lock
from cnntool.io.scratch import clean_outputs
from cnntool.io.writers import check_writable


@contextlib.contextmanager
def dataset_scan(
    spec: str,
    request: ModelRequest,
    data: str,
    options: ScanOptions,
    *,
    limit: int | None = None,
    loaded=None,
    load=None,
    files: Outputs | None = None,
    folders: Outputs | None = None,
) -> Iterator[ScanSession]:
    """A ScanSession for a command (`loaded`: a model the command already loaded; `load`: how
    to load MODEL instead of `request.load(spec)`, called where that would be).

    `files` and `folders` name what the command writes (option -> path, None: not given). Before
    the model loads they are checked against DATA (io.outputs.check_outputs), the parents of the
    files are made, and then, by rank 0 or the one process, each folder is locked for the whole
    scan and the stale scratch files of every output are removed (`tidy`)."""
    main = not (launched_by_torchrun() and int(os.environ["RANK"]) != 0)
    if not main:
        console.silence_rank()  # rank 0 speaks for the scan
    dataset = open_data(data, max_pixels=options.max_pixels)  # before the model: cheap
    files, folders = dict(files or {}), dict(folders or {})
    check_outputs(InputFiles.of_data(data, dataset), files=files, folders=folders)
    if main:  # an output that cannot be written (read-only, a name too long) fails now
        tidy(*files.values())
        tidy(*folders.values(), folders=True)
    for path in files.values():
        if path is not None and str(path) != "-":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if main:
            for folder in folders.values():
                if folder is not None:
                    stack.enter_context(locked(folder))
        if loaded is None:
            loaded = load() if load is not None else request.load(spec)
        try:
            with ScanSession.open(
                loaded,
                dataset.spread(limit),
                batch_size=options.batch_size,
                workers=options.workers,
                precision=options.precision,
                fold_bn=options.fold_bn,
                dist_timeout=options.dist_timeout,
                progress=console.progress,
                announce=console.say,
            ) as session:
                yield session
        except DistributedError as exc:
            if exc.waited is None:
                raise
            raise DistributedError(
                f"{exc} (--dist-timeout or CNNTOOL_DIST_TIMEOUT sets the wait)", exc.waited
            ) from exc


def guard(
    inputs: InputFiles, *, files: Outputs | None = None, folders: Outputs | None = None
) -> None:
    """For a command without a dataset scan: refuse outputs inside DATA or on an input
    (io.outputs.check_outputs), then remove the stale scratch files where it writes."""
    check_outputs(inputs, files=files or {}, folders=folders or {})
    tidy(*(files or {}).values())
    tidy(*(folders or {}).values(), folders=True)


@contextlib.contextmanager
def locked(folder) -> Iterator[None]:
    """Hold the one lock of an output folder (io.outputs.folder_lock): a second run into it,
    whatever its launch mode, fails in one sentence naming this one. A lock whose process is
    gone (on this host) is taken over with a warning."""
    lock = folder_lock(folder)
    with lock:
        if lock.replaced:
            host, pid = lock.replaced
            console.warn(
                f"took over the lock {lock.path} of cnntool process {pid} on {host}, "
                "which is no longer running"
            )
        yield


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
    output that cannot be written (read-only, a name too long) is an error now, not after the
    scan."""
    for output in outputs:
        if output is not None and str(output) != "-":
            check_writable(output, folder=folders)
    line = clean_outputs(outputs, folders=folders)
    if line:
        console.warn(line)


def say_labels(session: ScanSession):
    """How DATA's labels map onto the model's classes (a core.class_indices.LabelMapping, for the
    summary); a warning when the folder names are not the model's class names."""
    from cnntool.core.class_indices import map_labels

    mapping = map_labels(session.dataset, session.model.class_names, session.model.num_outputs)
    if mapping.warning:
        console.warn(mapping.warning)
    return mapping


class OrderedRecords:
    """A scan's per-image records on stdout in dataset order: written at once by a single
    process; under torchrun kept by each rank and written by rank 0 after the gather."""

    def __init__(self, session: ScanSession, writer) -> None:
        self.session, self.writer, self.kept = session, writer, []

    def add(self, index: int, record) -> None:
        if self.session.shard.distributed:
            self.kept.append((index, record))
        else:
            self.writer.write(record)

    def gather(self, counts: tuple[int, ...]) -> tuple[int, ...] | None:
        """Every rank's `counts` summed (rank 0, after writing the kept records in order);
        None on the other ranks."""
        parts = self.session.gather((counts, self.kept))
        if not self.session.is_main:
            return None
        for _, record in sorted((r for _, kept in parts for r in kept), key=lambda item: item[0]):
            self.writer.write(record)
        return tuple(map(sum, zip(*(c for c, _ in parts), strict=True)))
