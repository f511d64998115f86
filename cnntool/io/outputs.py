"""Where a command may write: never inside DATA or onto an input file, and one run per output
folder at a time.

`check_outputs` is called by every command that writes files, before any work (no model is
loaded yet): an output folder inside a DATA folder (or equal to it, or holding any input file),
and an output file inside a DATA folder or that is one of the input files, are refused in one
sentence. Paths are compared resolved (links followed, `..` removed), so a link to DATA or a
second spelling of an input is caught too.

`folder_lock(folder)` is the one lock of an output folder, `FOLDER/.cnntool.lock`, whatever the
launch mode: a single process takes it, and under torchrun rank 0 takes it for its ranks (before
the process group forms; when rank 0 cannot, it exits and torchrun stops the others), so a
torchrun run and a single-process run into one folder collide as two single runs do.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from cnntool.errors import CnnToolError
from cnntool.io.resume import ScanLock

LOCK_NAME = ".cnntool.lock"

Outputs = Mapping[
    str, "str | os.PathLike | None"
]  # option name -> the path it names (None: not given)


class InputFiles:
    """What a command reads: the DATA folders (`roots`) and every input file, resolved."""

    def __add__(self, other: InputFiles) -> InputFiles:
        both = InputFiles()
        both.roots, both.files = self.roots + other.roots, self.files + other.files
        return both

    def __init__(
        self, roots: Iterable[str | os.PathLike] = (), files: Iterable[str | os.PathLike] = ()
    ):
        self.roots = [_resolved(root) for root in roots]
        parents: dict[str, str] = {}  # one realpath per folder: a dataset has few, and many files
        self.files: list[tuple[str, str]] = []  # (as given, resolved)
        for file in files:
            text = os.fspath(file)
            folder, name = os.path.split(os.path.abspath(text))
            if folder not in parents:
                parents[folder] = _resolved(folder)
            resolved = os.path.join(parents[folder], name)
            if os.path.islink(resolved):
                resolved = _resolved(resolved)
            self.files.append((text, resolved))

    @classmethod
    def of_data(cls, spec: str, dataset=None) -> InputFiles:
        """The inputs of a DATA spec opened as `dataset` (core.data.DataSet; None: not opened
        yet, the folder or file of the spec only): a folder is a root; a list file is an input
        too; an array-backed sample set has no files."""
        roots, files = [], []
        if spec != "-" and os.path.isdir(spec):
            roots.append(spec)
        elif spec != "-" and os.path.isfile(spec):
            files.append(spec)  # an image, or the list of paths itself
        if dataset is not None and getattr(dataset, "arrays", None) is None:
            files += list(dataset.paths)
        return cls(roots, files)


def check_outputs(inputs: InputFiles, *, files: Outputs = (), folders: Outputs = ()) -> None:
    """Refuse, in one sentence, an output that would land inside DATA or on an input file.

    `files` and `folders` map an option's name (`-o`, `--plot`) to the path it names."""
    for option, path in dict(folders).items():
        if path is None or os.fspath(path) == "-":
            continue
        if os.path.exists(path) and not os.path.isdir(path):
            raise CnnToolError(f"{option} {path} is a file; it must name a folder")
        target = _resolved(path)
        root = next((r for r in inputs.roots if _inside(target, r)), None)
        if root is not None:
            raise CnnToolError(
                f"{option} {path} is inside DATA ({root}): a later scan would read "
                "the outputs back and a written file could replace an input; "
                "choose a folder outside DATA"
            )
        held = next((given for given, resolved in inputs.files if _inside(resolved, target)), None)
        if held is not None:
            raise CnnToolError(
                f"{option} {path} holds input files (e.g. {held}), which its outputs "
                "could replace; choose a folder that holds no input"
            )
    for option, path in dict(files).items():
        if path is None or os.fspath(path) == "-":
            continue
        target = _resolved(path)
        # resolved paths: another spelling of an input, or a link to one, is the input (a hard
        # link is not: a write renames a new file onto the name and leaves the input's inode)
        same = next((given for given, resolved in inputs.files if resolved == target), None)
        if same is not None:
            raise CnnToolError(
                f"{option} {path} is an input file ({same}); writing it would "
                "replace the input: choose another file name"
            )
        root = next((r for r in inputs.roots if _inside(target, r)), None)
        if root is not None:
            raise CnnToolError(
                f"{option} {path} is inside DATA ({root}): a later scan would read "
                "it back as an input; choose a path outside DATA"
            )


def folder_lock(folder: str | os.PathLike) -> ScanLock:
    """The one lock of an output folder (a context manager; io.resume.ScanLock)."""
    return ScanLock(Path(folder) / LOCK_NAME)


def _resolved(path: str | os.PathLike) -> str:
    return os.path.realpath(os.path.abspath(os.fspath(path)))


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)
