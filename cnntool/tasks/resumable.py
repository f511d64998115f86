"""A resumable pass of one rank over its shard (microscope, top-patches): where it goes on from a
saved state, and its state saved every N batches and once the whole shard is in (so that a
failure while writing resumes without scanning again). The state file is the caller's (an
io.resume.StateFile, or anything with `load()` and `save(obj)`); this module neither prints nor
writes by itself.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from cnntool.core.session import Consumer, ScanSession


class Resumable:
    """`saved`: the state loaded on `resume` (None without one), the consumers' snapshot plus
    'next', the position in the shard to go on from (`start`)."""

    def __init__(self, state_file, *, resume: bool, every: int):
        self.state_file, self.every = state_file, every
        self.saved: Any | None = state_file.load() if resume else None
        self.missing = resume and self.saved is None  # --resume, but no state to resume from
        self.start = int(self.saved["next"]) if self.saved else 0

    def describe(self) -> str | None:
        """What to tell the user: resuming where, or (`missing`, a warning) that there is no state."""
        if self.missing:
            return f"no state file {self.state_file.path}: starting from the beginning"
        return f"resuming after {self.start} images" if self.saved else None

    def run(self, session: ScanSession, consumers: Sequence[Consumer], title: str,
            snapshot: Callable[[], dict | None], *, resumed: int = 0) -> None:
        """`session.run` from `start`, saving `{**snapshot(), "next": …}` as it goes (nothing
        while `snapshot()` is None). The session announces where it goes on from, and counts the
        `resumed` images that the saved state already holds as read."""
        said = self.describe()
        if said:
            session.announce(said, self.missing)
        session.read += resumed
        shard, batches = session.shard, 0

        def on_batch(batch) -> None:
            nonlocal batches
            batches += 1
            if batches % self.every == 0:
                self._save(snapshot, shard.resume_position(batch.indices[-1]))

        session.run(consumers, title, start=self.start, on_batch=on_batch)
        if batches:
            self._save(snapshot, session.count())

    def _save(self, snapshot: Callable[[], dict | None], position: int) -> None:
        state = snapshot()
        if state is not None:
            self.state_file.save({**state, "next": position})
