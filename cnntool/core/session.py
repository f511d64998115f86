"""One pass over a dataset, shared by every dataset command (predict, attack, top-patches,
features, embed, diagnose, microscope) and by their one-call Python functions.

A `ScanSession` owns what used to be written once per command: this process's shard of the
dataset (all of it, or a strided part under torchrun: see core/sharding.py), the preprocessed
batches, the progress, the forward pass with the hooks its consumers need, the gathering of
small per-rank states, and the list of unreadable images of every rank. What a scan computes
lives in `Consumer`s (tasks/): several of them share ONE forward pass per batch, which is how
the microscope measures top patches, unit statistics, features and predictions at once.

    with ScanSession.open(model, dataset, batch_size=64) as session:
        patches = TopPatchConsumer(...)                # tasks/
        session.run([patches], "top patches")
        states = session.gather(patches.state_dict())  # every rank's, on every rank
        report = session.finish()                      # collective; raises if nothing was read
        if session.is_main: ...merge and write...

A consumer declares the layers (module paths) whose outputs it observes inside the forward
hook (no clone is kept; see core.hooks.observe), and whether it needs the model's output. When
no consumer needs the output, the forward stops after the last observed layer. A consumer with
neither (an attack, which runs its own forward and backward) just gets each batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cnntool.core.data import Batch, BatchStream, DataSet
from cnntool.core.scan_options import ScanOptions
from cnntool.core.sharding import DEFAULT_TIMEOUT, Shard, distributed, gather
from cnntool.errors import DataError

if TYPE_CHECKING:
    import torch

    from cnntool.core.loading.models import LoadedModel

# (title, total) -> a context manager yielding advance(n): how a caller shows progress
ProgressFactory = Callable[[str, int], contextlib.AbstractContextManager[Callable[[int], None]]]


class Consumer:
    """What a scan feeds, batch by batch. Subclasses override what they need.

    `layers`: module paths whose output goes to `observe(layer, output)` inside the forward
    hook, at the module's first call of each forward (reduce it there: a later in-place op may
    overwrite it).
    `needs_output`: whether `end` must receive the model's output (else it may get None).
    """

    layers: Sequence[str] = ()
    needs_output: bool = False

    def begin(self, batch: Batch) -> None:
        """Before the batch's forward pass."""

    def observe(self, layer: str, output: torch.Tensor) -> None:
        """One call's output of one of `layers`."""

    def end(self, batch: Batch, output: Any) -> None:
        """After the batch's forward pass (output None when it stopped early or none ran)."""


@dataclass(frozen=True)
class ScanReport:
    """How a scan went, over every rank: images asked for, read, and the unreadable ones
    (path, reason) in path order."""

    total: int
    read: int
    skipped: tuple[tuple[str, str], ...]
    upscale: float = 1.0  # mean factor by which the read images were enlarged (< 1: shrunk)


def _no_progress(_title: str, _total: int):
    return contextlib.nullcontext(lambda _n=1: None)


@dataclass
class ScanSession:
    """One process's part of a dataset scan. Build it with `ScanSession.open`."""

    model: LoadedModel
    dataset: DataSet
    shard: Shard = field(default_factory=Shard)
    batch_size: int = ScanOptions.batch_size
    workers: int | None = 0
    progress: ProgressFactory = _no_progress
    stream_options: dict = field(default_factory=dict)  # more BatchStream keywords
    precision: str = "fp32"  # core.runtime: fp32 (exact) | tf32 | bf16 | fp16
    channels_last: bool | str = "auto"  # core.runtime's rule: where convolutions dominate
    fold_bn: bool = False  # BatchNorm folded into the convolution before it (not observed ones)
    announce: Callable[[str, bool], None] = lambda _text, _warning: None  # how it runs, once
    # this rank's dataset indices in the order scanned (None: the shard's strided part); a scan
    # whose pieces must not be split between ranks (compare's minibatches) sets its own
    indices: list[int] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)  # this rank's
    read: int = 0  # readable images of this rank
    upscale_sum: float = 0.0  # sum over read images of (resized width / original width)
    _passes: int = 0  # passes over the shard begun so far: only the first one is counted
    _announced: bool = False

    @classmethod
    @contextlib.contextmanager
    def open(
        cls,
        model: LoadedModel,
        dataset: DataSet,
        *,
        dist_timeout: float = DEFAULT_TIMEOUT,
        **options,
    ) -> Iterator[ScanSession]:
        """A session over `dataset`: the whole of it, or under torchrun this rank's shard (the
        process group lives as long as the block; CUDA ranks use cuda:LOCAL_RANK; a rank waits
        `dist_timeout` seconds for the others before a DistributedError)."""
        with distributed(model.device, dist_timeout) as shard:
            if shard.device is not None and shard.device != model.device:
                model.module = model.module.to(shard.device)
                model.device = shard.device
            yield cls(model=model, dataset=dataset, shard=shard, **options)

    @property
    def module(self):
        return self.model.module

    @property
    def device(self):
        return self.model.device

    @property
    def is_main(self) -> bool:
        return self.shard.is_main

    def count(self, start: int = 0) -> int:
        """Images of this shard after its first `start`."""
        return len(self.shard_indices(start))

    def shard_indices(self, start: int = 0) -> list[int]:
        """This rank's dataset indices in scan order (`indices`, or the shard's strided part),
        after the first `start`."""
        if self.indices is not None:
            return list(self.indices)[start:]
        return self.shard.indices(len(self.dataset), start)

    def beside(self, model: LoadedModel, announce=None) -> ScanSession:
        """A session for a second model over the same shard, indices, batches and options
        (compare feeds two models the same images); `announce`: its own (default: this one's)."""
        return ScanSession(
            model=model,
            dataset=self.dataset,
            shard=self.shard,
            batch_size=self.batch_size,
            workers=self.workers,
            progress=self.progress,
            stream_options=dict(self.stream_options),
            precision=self.precision,
            channels_last=self.channels_last,
            fold_bn=self.fold_bn,
            announce=announce or self.announce,
            indices=self.indices,
        )

    def stream(self, *, start: int = 0, normalize: bool = True) -> BatchStream:
        """Preprocessed batches of this shard (after its first `start` images), in index order."""
        return BatchStream(
            self.dataset,
            self.model.preprocessing,
            batch_size=self.batch_size,
            workers=self.workers,
            normalize=normalize,
            indices=self.shard_indices(start),
            device=self.device,
            **self.stream_options,
        )

    def batches(self, title: str, *, start: int = 0, normalize: bool = True) -> Iterator[Batch]:
        """This shard's batches with a progress bar that also counts the unreadable images;
        the first pass adds them to `skipped` and its images to `read` (a later pass, such as
        an attack after a scan, reads the same images again)."""
        first = not self._passes  # a later pass (an attack after a scan) reads the same images
        self._passes += 1
        with (
            self.stream(start=start, normalize=normalize) as stream,
            self.progress(title, stream.total) as advance,
        ):
            counted = 0
            for batch in stream:
                fresh = len(stream.skipped) - counted
                counted = len(stream.skipped)
                if first:
                    self.read += len(batch.indices)
                    self.upscale_sum += sum(self._upscale(size) for size in batch.sizes)
                yield batch
                advance(len(batch.indices) + fresh)
            advance(len(stream.skipped) - counted)
            if first:
                self.skipped.extend(stream.skipped)

    def _upscale(self, size: tuple[int, int]) -> float:
        width, height = size
        return self.model.preprocessing.resized_size(width, height)[0] / max(width, 1)

    @contextlib.contextmanager
    def prepared(self, *, needs_grad: bool = False, keep: Sequence[str] = ()) -> Iterator[Any]:
        """The model prepared for this scan (core.runtime: channels-last where it pays, the
        precision asked for, BatchNorm folded but for the layers in `keep` whose own output is
        observed, parameters frozen), put back exactly as it was afterwards. Run forwards (and
        an attack's backward) inside `prepared.forward()`."""
        from cnntool.core.runtime import prepare_for_scan

        with prepare_for_scan(
            self.module,
            self.device,
            needs_grad=needs_grad,
            precision=self.precision,
            channels_last=self.channels_last,
            fold_bn=self.fold_bn,
            keep=keep,
            inference_mode=False,  # consumers' states stay ordinary tensors
            example_input_shape=self.model.input_shape,
        ) as prepared:
            if not self._announced:
                self._announced = True
                self.announce(f"forward pass: {prepared.describe()}", False)
                if prepared.precision_note:
                    self.announce(prepared.precision_note, True)
            yield prepared

    def run(
        self,
        consumers: Sequence[Consumer],
        title: str,
        *,
        start: int = 0,
        normalize: bool = True,
        on_batch: Callable[[Batch], None] | None = None,
    ) -> None:
        """Feed every batch of this shard (after its first `start` images) to `consumers`."""
        with self.prepared(keep=[layer for c in consumers for layer in c.layers]) as prepared:
            feed(
                self.module,
                self.batches(title, start=start, normalize=normalize),
                consumers,
                device=self.device,
                on_batch=on_batch,
                prepared=prepared,
            )

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order (collective). Keep it small: states, not maps."""
        return gather(obj, self.shard)

    def finish(self) -> ScanReport:
        """The report over every rank (collective: every rank calls it). Raises DataError when
        not a single image of the dataset could be read."""
        parts = self.gather((self.read, self.upscale_sum, list(self.skipped)))
        read = sum(part[0] for part in parts)
        # the listing's own skips (dangling links, FIFOs…) are the same on every rank: once
        unreadable = (item for part in parts for item in part[2])
        report = ScanReport(
            total=len(self.dataset) + len(self.dataset.skipped),
            read=read,
            skipped=tuple(self.dataset.all_skipped(unreadable)),
            upscale=sum(part[1] for part in parts) / read if read else 1.0,
        )
        if report.read == 0 and report.total:
            raise DataError(none_readable(report.total, self.dataset.name))
        return report


def none_readable(total: int, name: str) -> str:
    """The one wording of a scan that read nothing."""
    return f"none of the {total} images in {name} could be read"


UPSCALE_WARNING = 2.0  # warn when images are enlarged more than this on average


def report_warnings(report: ScanReport, input_shape: Sequence[int]) -> list[str]:
    """What a scan's report warns about, in one wording for every command: the unreadable
    images (their count, the first one), images enlarged more than UPSCALE_WARNING× on average."""
    lines = []
    if report.skipped:
        path, reason = report.skipped[0]
        example = reason if path in reason else f"{path}: {reason}"
        lines.append(
            f"skipped {len(report.skipped)} unreadable image(s) of {report.total}, e.g. {example}"
        )
    if report.upscale > UPSCALE_WARNING:
        lines.append(
            f"the images were enlarged {report.upscale:.1f}× on average to reach the model's "
            f"input ({'×'.join(map(str, input_shape))}): is that the input the model was "
            "trained on? Set it with --input-size/--resize or --preprocessing"
        )
    return lines


def feed(
    module,
    batches: Iterable[Batch],
    consumers: Sequence[Consumer],
    *,
    device=None,
    on_batch: Callable[[Batch], None] | None = None,
    prepared=None,
) -> None:
    """The scan loop: each batch to every consumer, with one forward pass (no grad) when any of
    them observes a layer or needs the output; it stops after the last observed layer when
    none needs the output. A module called several times per forward (ResNet's shared `relu`)
    is observed at its first call. `prepared` (core.runtime.PreparedModel) sets the inputs'
    layout and the forward's autograd mode and precision; else a plain no_grad forward."""
    import torch

    from cnntool.core.hooks import observe

    observed: set[str] = set()  # layers already seen in this forward

    def first_call(layer: str, output) -> None:
        if layer not in observed:
            observed.add(layer)
            for consumer in watchers[layer]:
                consumer.observe(layer, output)

    watchers: dict[str, list[Consumer]] = {}
    for consumer in consumers:
        for layer in consumer.layers:
            watchers.setdefault(layer, []).append(consumer)
    callbacks = {layer: [lambda output, _l=layer: first_call(_l, output)] for layer in watchers}
    needs_output = any(c.needs_output for c in consumers)
    forward = bool(callbacks) or needs_output
    with observe(module, callbacks, stop_early=not needs_output) as observer:
        for batch in batches:
            observed.clear()
            for consumer in consumers:
                consumer.begin(batch)
            output = None
            if forward and prepared is not None:
                with prepared.forward():
                    output = observer.run(prepared.inputs(batch.inputs))
            elif forward:
                with torch.no_grad():
                    output = observer.run(batch.inputs.to(device, non_blocking=True))
            for consumer in consumers:  # outside no_grad: an attack takes its own gradients
                consumer.end(batch, output)
            if on_batch is not None:
                on_batch(batch)
