"""Resume states of long scans: a file in the output folder that records what was scanned, and a
lock so that two runs never share (or delete) one state.

A state is saved with a `key` (the scan's settings, and everything about the model that changes
its numbers: a digest of the weights, the preprocessing, precision, BatchNorm folding; see
tasks.resumable.model_settings), a fingerprint of the dataset (every path with its size and
modification time, or the pixels of an array-backed sample set) and the STATE_FORMAT it was
written in, so `--resume` refuses a state whose settings, model or files changed, naming what
changed, instead of merging stale hits (the files are checked first). The lock is a file
created exclusively beside the state, holding the owner's host and PID; a lock whose owner is
gone (another boot, a dead PID) is taken over.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path
from typing import Any

from cnntool.errors import CnnToolError


def dataset_fingerprint(dataset) -> str:
    """A digest of what a scan reads: paths with size and mtime (files), or the pixels
    (array-backed sample sets). Any changed, added or removed file changes it."""
    digest = hashlib.sha256()
    digest.update(_bytes(f"{dataset.name}\n{len(dataset)}\n"))
    if getattr(dataset, "arrays", None) is not None:
        digest.update(dataset.arrays.tobytes())
        return digest.hexdigest()
    for path in dataset.paths:
        try:
            stat = os.stat(path)
            digest.update(_bytes(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}\n"))
        except (OSError, ValueError):  # ValueError: a name no file can have (a NUL byte)
            digest.update(_bytes(f"{path}\tmissing\n"))
    return digest.hexdigest()


def _bytes(text: str) -> bytes:
    """UTF-8 that never fails: a file name that is not UTF-8 reaches us with its bytes escaped
    as surrogates (b'\\xff.jpg' -> '\\udcff.jpg'), which plain .encode() refuses."""
    return text.encode("utf-8", "surrogatepass")


class ScanLock:
    """An exclusive lock on an output folder's resume state (a context manager)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.held = False
        self.replaced: tuple[str, int] | None = None  # (host, PID) of a dead owner taken over

    def __enter__(self) -> ScanLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                handle = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = _owner(self.path)
                if owner is not None and _alive(*owner):
                    raise CnnToolError(
                        f"another cnntool run (PID {owner[1]} on {owner[0]}) is scanning into "
                        f"{self.path.parent}; wait for it to finish, or write to another -o"
                    ) from None
                self.path.unlink(missing_ok=True)  # its owner is gone: take it over
                self.replaced = owner or ("?", 0)
                continue
            with os.fdopen(handle, "w") as file:
                file.write(f"{socket.gethostname()}\n{os.getpid()}\n")
            self.held = True
            return self
        raise CnnToolError(
            f"cannot lock {self.path}; remove it if no cnntool run is using {self.path.parent}"
        )

    def __exit__(self, *exc) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _owner(path: Path) -> tuple[str, int] | None:
    try:  # never through a link planted at the lock's name
        handle = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(handle, "rb") as file:
            host, pid = file.read(4096).decode(errors="replace").split()[:2]
        return host, int(pid)
    except (OSError, ValueError):
        return None


def _alive(host: str, pid: int) -> bool:
    """Whether the process is running (a lock from another host is assumed alive)."""
    if host != socket.gethostname():
        return True
    if pid == os.getpid():
        return False  # a lock left by this very process: a stale one with a reused PID
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# What a state holds and means: 2 since its key covers the model's weights, preprocessing,
# precision and BatchNorm folding, and images are decoded upright (EXIF orientation). A state of
# another format is refused rather than merged.
STATE_FORMAT = 2

# How a changed field of a key is named to the user (other fields: "the FIELD changed")
_FIELD_NAMES = {
    "weights": "the weights changed",
    "preprocessing": "the preprocessing changed",
    "precision": "the precision changed",
    "fold_bn": "BatchNorm folding changed",
    "max_pixels": "--max-pixels changed",
    "class_names": "the class names changed",
    "images": "the number of images changed",
    "world": "the number of ranks changed",
    "data": "the data changed",
}


def what_changed(saved: dict, now: dict) -> str:
    """'the preprocessing changed (mean (0.1, 0.1, 0.1) -> (0.5, 0.5, 0.5)), the precision
    changed (fp32 -> bf16)': every top-level field of two keys that differs, old -> new."""
    parts = []
    for field in [*now, *(f for f in saved if f not in now)]:
        old, new = saved.get(field, _ABSENT), now.get(field, _ABSENT)
        if old == new:
            continue
        name = _FIELD_NAMES.get(field, f"the {field.replace('_', ' ')} changed")
        if isinstance(old, dict) and isinstance(new, dict):
            inner = [
                f"{k} {_shown(old.get(k, _ABSENT))} -> {_shown(new.get(k, _ABSENT))}"
                for k in [*new, *(k for k in old if k not in new)]
                if old.get(k, _ABSENT) != new.get(k, _ABSENT)
            ]
            parts.append(f"{name} ({', '.join(inner)})")
        elif field == "weights" and isinstance(old, str) and isinstance(new, str):
            parts.append(f"{name} (digest {old[:12]}… -> {new[:12]}…)")
        else:
            parts.append(f"{name} ({_shown(old)} -> {_shown(new)})")
    return ", ".join(parts) or "its settings differ"


class _Absent:
    def __repr__(self) -> str:
        return "not recorded"


_ABSENT = _Absent()


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_shown(v) for v in value) + ")"
    if isinstance(value, float):
        return f"{value:g}"
    text = repr(value) if value is _ABSENT else str(value)
    return text if len(text) <= 60 else text[:57] + "…"


class StateFile:
    """One rank's resume state in a folder: the saved object, with the scan's key and the
    dataset's fingerprint, written atomically."""

    def __init__(self, folder: str | Path, name: str, key: dict, fingerprint: str):
        self.path = Path(folder) / name
        self.key, self.fingerprint = key, fingerprint

    def load(self) -> Any | None:
        """The saved object, None when there is no state; refuses another scan's state."""
        import pickle
        import zipfile

        import torch

        if not self.path.exists():
            return None
        try:
            saved = torch.load(self.path, weights_only=True)
        except (EOFError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, OSError) as exc:
            raise CnnToolError(
                f"the resume state {self.path} is empty or corrupt ({type(exc).__name__}); "
                "remove it, or drop --resume to start afresh"
            ) from None
        if not isinstance(saved, dict) or "key" not in saved or "state" not in saved:
            raise CnnToolError(
                f"{self.path} is not a cnntool resume state; remove it, or drop "
                "--resume to start afresh"
            )
        if saved.get("format", 1) != STATE_FORMAT:
            raise CnnToolError(
                f"{self.path} was saved by another version of cnntool (state format "
                f"{saved.get('format', 1)}, this one reads {STATE_FORMAT}); drop "
                "--resume to start afresh"
            )
        if saved.get("fingerprint") != self.fingerprint:
            raise CnnToolError(
                f"{self.path} was saved for other files: the dataset's images "
                "changed since (size, time or list); drop --resume to scan afresh"
            )
        if saved["key"] != self.key:
            raise CnnToolError(
                f"{self.path} was saved by a scan with other settings: "
                f"{what_changed(saved['key'], self.key)}; drop --resume to start "
                "afresh (the new scan replaces this state)"
            )
        return saved["state"]

    def save(self, state: Any) -> None:
        import torch

        from cnntool.io.writers import atomic_path

        with atomic_path(self.path) as temp:
            torch.save(
                {
                    "format": STATE_FORMAT,
                    "key": self.key,
                    "fingerprint": self.fingerprint,
                    "state": state,
                },
                temp,
            )

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class ResumeFiles:
    """One rank's files of a resumable scan into `folder`, named after `stem`:
    `.STEM-state[.rankR].pt` (the state) and scratch files such as `.STEM-features[.rankR].f32`
    (the rank suffix only under torchrun). The folder's lock is io.outputs.folder_lock's."""

    def __init__(self, folder: str | Path, stem: str, rank: int = 0, distributed: bool = False):
        self.folder, self.stem = Path(folder), stem
        self.suffix = f".rank{rank}" if distributed else ""

    def path(self, name: str) -> Path:
        """'PART.EXT' -> .STEM-PART[.rankR].EXT; '.EXT' -> .STEM[.rankR].EXT."""
        part, ext = name.rsplit(".", 1)
        return self.folder / f".{self.stem}{'-' + part if part else ''}{self.suffix}.{ext}"

    def state(self, key: dict, dataset) -> StateFile:
        """The state file of the scan `key` over `dataset` (fingerprinted)."""
        return StateFile(self.folder, self.path("state.pt").name, key, dataset_fingerprint(dataset))

    def remove(self, *names: str) -> None:
        """Remove the state and the scratch files `names` ('features.f32', …) once done."""
        for name in ("state.pt", *names):
            self.path(name).unlink(missing_ok=True)
