"""Resume states of long scans: a file in the output folder that records what was scanned, and a
lock so that two runs never share (or delete) one state.

A state is saved with a `key` (the scan's settings) and a fingerprint of the dataset (every
path with its size and modification time, or the pixels of an array-backed sample set), so
`--resume` refuses a state whose settings or files changed instead of merging stale hits. The
lock is a file created exclusively beside the state, holding the owner's host and PID; a lock
whose owner is gone (another boot, a dead PID) is taken over.
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
    digest.update(f"{dataset.name}\n{len(dataset)}\n".encode())
    if getattr(dataset, "arrays", None) is not None:
        digest.update(dataset.arrays.tobytes())
        return digest.hexdigest()
    for path in dataset.paths:
        try:
            stat = os.stat(path)
            digest.update(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}\tmissing\n".encode())
    return digest.hexdigest()


class ScanLock:
    """An exclusive lock on an output folder's resume state (a context manager)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.held = False

    def __enter__(self) -> "ScanLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                handle = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = _owner(self.path)
                if owner is not None and _alive(*owner):
                    raise CnnToolError(
                        f"another cnntool run (PID {owner[1]} on {owner[0]}) is scanning into "
                        f"{self.path.parent}; wait for it to finish, or write to another -o") from None
                self.path.unlink(missing_ok=True)  # its owner is gone: take it over
                continue
            with os.fdopen(handle, "w") as file:
                file.write(f"{socket.gethostname()}\n{os.getpid()}\n")
            self.held = True
            return self
        raise CnnToolError(f"cannot lock {self.path}; remove it if no cnntool run is using "
                           f"{self.path.parent}")

    def __exit__(self, *exc) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _owner(path: Path) -> tuple[str, int] | None:
    try:
        host, pid = path.read_text().split()[:2]
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
            raise CnnToolError(f"the resume state {self.path} is empty or corrupt ({type(exc).__name__}); "
                               "remove it, or drop --resume to start afresh") from None
        if not isinstance(saved, dict) or saved.get("key") != self.key:
            other = saved.get("key") if isinstance(saved, dict) else None
            raise CnnToolError(f"{self.path} belongs to another scan ({other}); remove it or "
                               "drop --resume")
        if saved.get("fingerprint") != self.fingerprint:
            raise CnnToolError(f"{self.path} was saved for other files: the dataset's images "
                               "changed since (size, time or list); drop --resume to scan afresh")
        return saved["state"]

    def save(self, state: Any) -> None:
        import torch

        from cnntool.io.writers import atomic_path

        with atomic_path(self.path) as temp:
            torch.save({"key": self.key, "fingerprint": self.fingerprint, "state": state}, temp)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class ResumableScan:
    """One rank's resumable scan into an output folder: its StateFile `.NAME-state.pt` and its
    ScanLock `.NAME.lock` (`.rankR` before the suffix under torchrun). A saved object is
    `{item: the scan's state, "next": images of the shard done}`; `checkpoint` saves it every
    `every` batches during the scan, `done` once the shard is in. A context manager: the lock
    is held inside."""

    def __init__(self, folder: str | Path, name: str, key: dict, session, *, every: int = 20,
                 item: str = "state"):
        self.shard = session.shard
        suffix = f".rank{self.shard.rank}" if self.shard.distributed else ""
        self.file = StateFile(folder, f".{name}-state{suffix}.pt", key,
                              dataset_fingerprint(session.dataset))
        self.lock = ScanLock(Path(folder) / f".{name}{suffix}.lock")
        self.session, self.every, self.item, self.batches = session, every, item, 0

    def __enter__(self) -> "ResumableScan":
        self.lock.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.lock.__exit__(*exc)

    def load(self) -> tuple[Any | None, int]:
        """The saved state and where the scan goes on; (None, 0) without a state file."""
        saved = self.file.load()
        return (saved[self.item], int(saved["next"])) if saved else (None, 0)

    def checkpoint(self, state):
        """The session's `on_batch`: saves `state()` every `every` batches."""
        def on_batch(batch) -> None:
            self.batches += 1
            if self.batches % self.every == 0:
                self.file.save({self.item: state(), "next": self.shard.resume_position(
                    batch.indices[-1])})
        return on_batch

    def done(self, state: Any) -> None:
        """The whole shard is in: saved, so that a failure while writing resumes without
        scanning again (nothing when no batch was scanned or the state is None)."""
        if self.batches and state is not None:
            self.file.save({self.item: state, "next": self.session.count()})
