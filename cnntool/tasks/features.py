"""A layer's features for a whole dataset: one row of floats per image.

The output of a layer is reduced to a vector per image (`pool`): global average or max pooling
over the spatial positions of a (B, C, H, W) map, or the whole map flattened (C·H·W values);
a layer that already gives vectors (B, D) is kept as it is.

Memory: 100k images of a 4096-wide layer are 1.6 GB of float32, and flattening a conv map is
more. So rows are never held for the whole dataset: each batch is appended to a scratch file
(`FeatureSpool`), which is read back as a memory map when the scan is done. Under torchrun each
rank spools its own strided shard (rank r has dataset items r, r + N, ...), and `assemble`
brings the rows to rank 0 a chunk at a time, in dataset order, so the result is the same as one
process's and no rank ever holds more than one chunk of another rank's rows. Scratch files are
the one place where a task touches the disk: the result itself is too large to be a return
value.

Non-finite values (NaN/inf: a diverged model, a broken layer) are counted per image while
scanning, so that a caller can name the images instead of failing later in t-SNE.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from cnntool.core.featureset import FeatureSet, integer_labels
from cnntool.core.session import Consumer, ScanSession, feed
from cnntool.errors import CnnToolError, OutputError, os_error_sentence

POOLINGS = ("avg", "max", "flatten")
_CHUNK_BYTES = 32 * 2**20  # rows per round of `assemble`: about 32 MiB of float32 per rank


def pool(activations, pooling: str):
    """(B, C, H, W…) -> (B, C) by global average or max over every axis after the channels, or
    (B, C·H·W…) flattened; (B, D) is returned as is (float32, contiguous)."""
    if pooling not in POOLINGS:
        raise CnnToolError(f"unknown pooling '{pooling}'; use one of {', '.join(POOLINGS)}")
    if activations.ndim < 2:
        raise CnnToolError(
            f"features need a layer with (batch, features...) output, not shape "
            f"{tuple(activations.shape)}"
        )
    activations = activations.float()
    if activations.ndim == 2 or pooling == "flatten":
        return activations.reshape(activations.shape[0], -1).contiguous()
    spatial = activations.flatten(2)  # (B, C, positions)
    pooled = spatial.mean(dim=2) if pooling == "avg" else spatial.amax(dim=2)
    return pooled.contiguous()


class FeatureSpool:
    """Rows appended batch by batch to a raw float32 scratch file, with their dataset indices.

    The width D is fixed by the first batch. `rows()` maps the file back (read-only, nothing is
    loaded until touched); `close()` deletes the file. Usable as a context manager.
    """

    def __init__(self, folder: str | Path | None = None):
        from cnntool.io.scratch import FEATURES_STEM, scratch_file  # a name a later run can clean

        try:
            handle, self.path = scratch_file(folder, FEATURES_STEM, ".f32")
        except OSError as exc:
            where = tempfile.gettempdir() if folder is None else folder
            raise OutputError(os_error_sentence(exc, where, "write a scratch file in")) from exc
        self._file = os.fdopen(handle, "w+b")  # mapped back through this descriptor, not the name
        self.indices: list[int] = []  # dataset index of each row, in the order written
        self.width: int | None = None
        self.nonfinite: list[int] = []  # dataset indices of rows with NaN or inf

    def __len__(self) -> int:
        return len(self.indices)

    def append(self, indices: Sequence[int], rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[0] != len(indices):
            raise ValueError(f"expected ({len(indices)}, D) rows, got {rows.shape}")
        if self.width is None:
            self.width = rows.shape[1]
        elif rows.shape[1] != self.width:
            raise CnnToolError(
                f"the layer gave {rows.shape[1]} features for some images and "
                f"{self.width} for others; use --pooling avg or max for inputs of "
                "different sizes"
            )
        bad = ~np.isfinite(rows).all(axis=1)
        if bad.any():
            self.nonfinite.extend(int(i) for i, b in zip(indices, bad, strict=True) if b)
        with self._writing():
            self._file.write(rows.tobytes())
        self.indices.extend(int(i) for i in indices)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """A failed write of the scratch file (a full disk…) as one OutputError sentence."""
        try:
            yield
        except OSError as exc:
            raise OutputError(os_error_sentence(exc, self.path, "write the scratch file")) from exc

    def rows(self) -> np.ndarray:
        """All rows so far, (len, D) float32, memory-mapped from the scratch file."""
        with self._writing():
            self._file.flush()
        if not self.indices:
            return np.zeros((0, self.width or 0), dtype=np.float32)
        return np.memmap(
            self._file, dtype=np.float32, mode="r", shape=(len(self.indices), self.width)
        )

    def allocate(self, indices: Sequence[int], width: int, nonfinite: Sequence[int]) -> np.ndarray:
        """Size an empty spool for `indices` rows of `width` and return it as a writable memory
        map (to fill out of order, as `assemble` does)."""
        if self.indices:
            raise ValueError("allocate needs an empty spool")
        self.indices, self.width, self.nonfinite = list(indices), width, list(nonfinite)
        size = 4 * len(self.indices) * width
        with self._writing():
            self._file.truncate(size)
            self._file.flush()
            if size and hasattr(os, "posix_fallocate"):
                # reserve the blocks now: a memory map that runs out of disk is a SIGBUS (no
                # sentence, no cleanup), a failed reservation an OSError
                try:
                    os.posix_fallocate(self._file.fileno(), 0, size)
                except OSError as exc:
                    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                        raise
        if not self.indices or not width:
            return np.zeros((len(self.indices), width), dtype=np.float32)
        return np.memmap(self._file, dtype=np.float32, mode="r+", shape=(len(self.indices), width))

    def close(self) -> None:
        """Close and delete the scratch file. Closing flushes what is still buffered, which
        fails again on a full disk: that data was going to be deleted anyway, and the error that
        stopped the scan was raised already, so the file goes whatever happens."""
        try:
            if not self._file.closed:
                self._file.close()
        except OSError:
            pass
        finally:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> FeatureSpool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FeatureConsumer(Consumer):
    """A scan consumer (core.session) that appends each image's pooled `layer` output to `sink`
    (a FeatureSpool, or anything with `append(indices, rows)`)."""

    def __init__(self, layer: str, pooling: str, sink):
        if pooling not in POOLINGS:
            raise CnnToolError(f"unknown pooling '{pooling}'; use one of {', '.join(POOLINGS)}")
        self.layers, self.pooling, self.sink = (layer,), pooling, sink
        self._indices: Sequence[int] = ()

    def begin(self, batch) -> None:
        self._indices = batch.indices

    def observe(self, layer: str, output) -> None:
        self.sink.append(self._indices, pool(output.detach(), self.pooling).cpu().numpy())


def extract(
    model,
    layer: str,
    batches: Iterable,
    spool: FeatureSpool,
    *,
    pooling: str = "avg",
    device=None,
    on_batch: Callable | None = None,
) -> FeatureSpool:
    """Run `model` over `batches` (data.Batch) and append each image's pooled `layer` output to
    `spool`. The forward stops after the layer. `on_batch(batch)` is called after each batch."""
    feed(model, batches, [FeatureConsumer(layer, pooling, spool)], device=device, on_batch=on_batch)
    return spool


def scan_features(
    session: ScanSession, layer: str, pooling: str, spool: FeatureSpool, merged: FeatureSpool
) -> tuple[FeatureSet, list[int], list[int]] | None:
    """A layer's features for the session's dataset: this shard's rows into `spool`, every
    rank's assembled in dataset order into `merged` on rank 0 (collective).

    Returns, on rank 0, (the FeatureSet of the readable images, the dataset index of each of its
    rows, the dataset indices of rows with NaN/inf features); None on the other ranks.
    """
    from cnntool.core.layers import resolve_layer

    name = resolve_layer(session.module, layer)[0]
    session.run([FeatureConsumer(name, pooling, spool)], f"features {name}")
    result = assemble(spool, session.shard, merged)
    if not session.is_main:
        return None
    dataset = session.dataset
    labels, names = integer_labels(dataset.labels, dataset.label_names)
    features = FeatureSet(
        features=result.rows(),
        paths=[dataset.paths[i] for i in result.indices],
        labels=labels[result.indices],
        label_names=names,
        model=session.model.name,
        layer=name,
        pooling=pooling,
    )
    return features, list(result.indices), list(result.nonfinite)


@contextlib.contextmanager
def spooled_features(
    session: ScanSession, layer: str, pooling: str, folder: str | Path | None = None
) -> Iterator[tuple[FeatureSet, list[int], list[int]] | None]:
    """`scan_features` with its two spools in `folder` (None: a temporary folder), open until
    the block ends (the FeatureSet's rows are a memory map of the merged spool)."""
    with contextlib.ExitStack() as stack:
        if folder is None:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="cnntool-features-"))
        spool = stack.enter_context(FeatureSpool(folder))
        merged = stack.enter_context(FeatureSpool(folder))
        yield scan_features(session, layer, pooling, spool, merged)


def assemble(spool: FeatureSpool, shard, into: FeatureSpool | None = None) -> FeatureSpool | None:
    """Every rank's rows in one spool on rank 0, in dataset order; collective (all ranks call
    it, each with its own spool).

    Rank 0 gets back a spool whose `indices` are the sorted dataset indices of all the rows and
    whose `nonfinite` lists every rank's; the other ranks get None. One process returns its own
    spool (already in order: batches come in index order). Under torchrun the rows go into
    `into` (an empty spool of rank 0's) `_CHUNK_BYTES` at a time through core.sharding.gather, so no
    rank holds more than one chunk of each rank's rows.
    """
    from cnntool.core.sharding import gather

    if not shard.distributed and spool.indices == sorted(spool.indices):
        return spool
    parts = gather(
        {"indices": spool.indices, "width": spool.width, "nonfinite": spool.nonfinite}, shard
    )
    widths = {p["width"] for p in parts if p["width"] is not None}
    if len(widths) > 1:
        raise CnnToolError(f"the ranks' feature widths differ: {sorted(widths)}")
    width = widths.pop() if widths else 0
    indices = sorted(i for p in parts for i in p["indices"])
    position = {index: row for row, index in enumerate(indices)}
    out = None
    if shard.is_main:
        if into is None:
            raise ValueError("rank 0 needs a spool to assemble into")
        out = into.allocate(indices, width, sorted(i for p in parts for i in p["nonfinite"]))
    mine = spool.rows()
    chunk = max(1, _CHUNK_BYTES // max(4 * width, 1))
    longest = max(len(p["indices"]) for p in parts)
    for start in range(0, longest, chunk):
        pieces = gather(np.array(mine[start : start + chunk]), shard)
        if out is None:
            continue
        for part, piece in zip(parts, pieces, strict=True):
            targets = [position[i] for i in part["indices"][start : start + chunk]]
            if targets:
                out[targets] = piece
    del mine
    if out is None:
        return None
    if isinstance(out, np.memmap):
        out.flush()
    del out
    return into


def check_finite(features: np.ndarray, paths: Sequence[str], shown: int = 3) -> None:
    """Raise one sentence naming the images whose features contain NaN or inf."""
    bad = np.flatnonzero(~np.isfinite(features).all(axis=1))
    if bad.size:
        raise CnnToolError(nonfinite_message([paths[i] for i in bad[:shown]], int(bad.size)))


def nonfinite_message(first_paths: Sequence[str], count: int) -> str:
    more = f" and {count - len(first_paths)} more" if count > len(first_paths) else ""
    return (
        f"{count} image(s) have NaN or infinite features: {', '.join(first_paths)}{more} "
        "(the model or layer overflows on them)"
    )
