"""Sharded dataset scans: one process, or one shard per rank under `torchrun`.

A scan is "batches of my shard in, a small running state per rank, one merge at the end".
Commands that scan a dataset (top-patches; embed and attack can use the same pieces) do:

    with distributed(device) as shard:              # a no-op outside torchrun
        stream = shard_stream(dataset, preprocessing, shard, batch_size=..., workers=...)
        for batch in stream: ...update a running state on the device...
        states = gather(state, shard)               # every rank's state, on every rank
        if shard.is_main: ...merge the states and write the outputs (rank 0 only)...

Shards are strided (rank r takes items r, r + N, r + 2N, ...), so ranks stay balanced whatever
order the dataset has, and a merge that orders results by (value, dataset index) gives exactly
what one process would. Under torchrun the process group uses gloo on CPU and NCCL on CUDA;
each rank picks `cuda:LOCAL_RANK`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from cnntool.core.data import BatchStream, DataSet
from cnntool.core.preprocessing import Preprocessing
from cnntool.core.scan_options import ScanOptions
from cnntool.errors import DistributedError

# How long a rank waits for the others (to join, and at every collective) before it gives up.
# torch's default is 30 minutes: under torchrun its agent stops the survivors of a dead rank at
# once, but ranks started by srun or mpirun wait that long for a peer that is gone. A scan's
# ranks meet only to join, after their shards and to merge small states; what a rank does
# between (its shard) is not waited on. So the wait covers starting up (loading the model,
# listing DATA) and the difference between the shards' times: 10 minutes is long for that on a
# healthy job and short next to 30 of idle accelerators. Slower start-ups raise it
# (--dist-timeout, CNNTOOL_DIST_TIMEOUT).
DEFAULT_TIMEOUT = ScanOptions.dist_timeout


@dataclass(frozen=True)
class Shard:
    """Which part of a dataset this process scans: items rank, rank + world_size, ..."""

    rank: int = 0
    world_size: int = 1
    device: Any = None  # torch.device this rank computes on
    timeout: float = DEFAULT_TIMEOUT  # seconds this rank waits for the others

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes outputs and talks to the user."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def indices(self, total: int, start: int = 0) -> list[int]:
        """This shard's dataset indices, skipping the first `start` of them (to resume)."""
        return list(range(self.rank, total, self.world_size))[start:]

    def resume_position(self, last_index: int) -> int:
        """The `start` that goes on after the image with dataset index `last_index` (the last
        of a batch): the count of this shard's images up to and including it."""
        return (last_index - self.rank) // self.world_size + 1


def launched_by_torchrun() -> bool:
    """torchrun (torch.distributed.run) sets WORLD_SIZE and RANK for every process it starts."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


@contextlib.contextmanager
def distributed(device, timeout: float = DEFAULT_TIMEOUT) -> Iterator[Shard]:
    """The Shard of this process; under torchrun, also a process group for its lifetime.

    `device` is a torch.device from resolve_device. Under torchrun a CUDA device becomes
    `cuda:LOCAL_RANK` (one GPU per rank) with NCCL; anything else uses gloo. `timeout`: seconds
    a rank waits for the others, to join or at a collective, before a DistributedError.
    """
    import datetime

    import torch

    if not launched_by_torchrun():
        yield Shard(0, 1, device)
        return
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    created = not dist.is_initialized()
    if created:
        with _peers(os.environ.get("RANK", "?"), timeout, joining=True):
            dist.init_process_group(
                backend="nccl" if device.type == "cuda" else "gloo",
                timeout=datetime.timedelta(seconds=timeout),
            )
    try:
        yield Shard(dist.get_rank(), dist.get_world_size(), device, timeout)
    finally:
        if created:
            dist.destroy_process_group()


@contextlib.contextmanager
def _peers(rank, timeout: float, joining: bool = False) -> Iterator[None]:
    """Rank `rank` waiting for the others (`joining`: to form the group): a timeout, or a peer
    that went away, becomes a DistributedError sentence instead of torch's or gloo's message."""
    try:
        yield
    except RuntimeError as exc:  # torch.distributed's DistError and gloo's errors are RuntimeErrors
        text = str(exc).lower()
        if "timed out" in text or "timeout" in text:
            raise DistributedError(
                f"rank {rank} waited {timeout:g} s for the other ranks; one of them may have died",
                timeout,
            ) from exc
        if any(
            words in text
            for words in ("closed by peer", "reset by peer", "broken pipe", "connection refused")
        ):
            raise DistributedError(
                f"rank {rank} lost its connection to the other ranks; one of them may have died"
            ) from exc
        if joining and type(exc).__name__.startswith("Dist"):  # DistNetworkError: EADDRINUSE…
            where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DistributedError(
                f"rank {rank} could not join the other ranks at {where} ({first})"
            ) from exc
        raise


def shard_stream(
    dataset: DataSet,
    preprocessing: Preprocessing,
    shard: Shard,
    *,
    batch_size: int,
    workers: int,
    start: int = 0,
    normalize: bool = True,
) -> BatchStream:
    """Preprocessed batches of this shard's images (after its first `start`), in index order."""
    return BatchStream(
        dataset,
        preprocessing,
        batch_size=batch_size,
        workers=workers,
        normalize=normalize,
        indices=shard.indices(len(dataset), start),
    )


def gather(obj: Any, shard: Shard) -> list[Any]:
    """Every rank's `obj`, in rank order (collective: all ranks must call it).

    Objects travel pickled (all_gather_object), so keep them small: running states, not
    activations. Move tensors to the CPU first so that the merge does not depend on the device.
    """
    if not shard.distributed:
        return [obj]
    import torch.distributed as dist

    gathered: list[Any] = [None] * shard.world_size
    with _peers(shard.rank, shard.timeout):
        dist.all_gather_object(gathered, obj)
    return gathered


def barrier(shard: Shard) -> None:
    """Wait for every rank (e.g. before rank 0 reads what the others finished)."""
    if shard.distributed:
        import torch.distributed as dist

        with _peers(shard.rank, shard.timeout):
            dist.barrier()


def merged_skipped(skipped: Sequence[tuple[str, str]], shard: Shard) -> list[tuple[str, str]]:
    """The unreadable images of all ranks, in path order."""
    return sorted(item for part in gather(list(skipped), shard) for item in part)
