"""A resumable pass of one rank over its shard (microscope, top-patches): where it goes on from a
saved state, and its state saved every N batches and once the whole shard is in (so that a
failure while writing resumes without scanning again). The state file is the caller's (an
io.resume.StateFile, or anything with `load()` and `save(obj)`); this module neither prints nor
writes by itself.

`model_settings(session)` is the part of a state's key that says which numbers the scan
computes besides its own options: the weights (a digest of the state dict), every field of the
preprocessing, the precision, BatchNorm folding and the decode limit. Each command adds its own
options (layer, units, top…) to it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from cnntool.core.session import Consumer, ScanSession


def model_settings(session: ScanSession) -> dict:
    """What a resumed scan must share with the saved one for their numbers to merge: the model's
    weights (`weights_digest`), its preprocessing (every field), the forward's precision and
    BatchNorm folding, and `--max-pixels` (which images are read). Not the device: a state
    saved on one machine resumes on another (channels-last and the device move numbers by
    float rounding only)."""
    import dataclasses

    preprocessing = {
        name: list(value) if isinstance(value, tuple) else value
        for name, value in dataclasses.asdict(session.model.preprocessing).items()
    }
    return dict(
        weights=weights_digest(session.module),
        preprocessing=preprocessing,
        precision=session.precision,
        fold_bn=bool(session.fold_bn),
        max_pixels=session.dataset.max_pixels,
    )


def weights_digest(module) -> str:
    """A SHA-256 of every tensor of `module`'s state dict (name, dtype, shape and bytes; buffers
    such as BatchNorm's running statistics included). It is the loaded weights that count, so
    a checkpoint rewritten with the same tensors keeps its digest and one rewritten at the same
    path with other tensors does not. About 0.1 s per 100 MB of weights on one core."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    for name, value in module.state_dict().items():
        if not isinstance(value, torch.Tensor):  # a module's extra state
            digest.update(f"{name}\t{value!r}\n".encode())
            continue
        tensor = value.detach()
        if tensor.layout != torch.strided:
            tensor = tensor.to_dense()
        if tensor.is_quantized:
            tensor = tensor.int_repr()
        digest.update(f"{name}\t{tensor.dtype}\t{tuple(tensor.shape)}\n".encode())
        if tensor.numel():
            flat = tensor.to("cpu").contiguous().reshape(-1)
            digest.update(flat.view(torch.uint8).numpy().data)
    return digest.hexdigest()


class Resumable:
    """`saved`: the state loaded on `resume` (None without one), the consumers' snapshot plus
    'next', the position in the shard to go on from (`start`)."""

    def __init__(self, state_file, *, resume: bool, every: int):
        self.state_file, self.every = state_file, every
        self.saved: Any | None = state_file.load() if resume else None
        self.missing = resume and self.saved is None  # --resume, but no state to resume from
        self.start = int(self.saved["next"]) if self.saved else 0

    def describe(self) -> str | None:
        """What to tell the user: resuming where, or (`missing`, a warning) that there is no
        state."""
        if self.missing:
            return f"no state file {self.state_file.path}: starting from the beginning"
        return f"resuming after {self.start} images" if self.saved else None

    def run(
        self,
        session: ScanSession,
        consumers: Sequence[Consumer],
        title: str,
        snapshot: Callable[[], dict | None],
        *,
        resumed: int = 0,
    ) -> None:
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
