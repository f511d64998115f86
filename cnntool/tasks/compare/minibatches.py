"""The scan of `compare`: both models see the same images in the same minibatches.

Minibatches: the N images of DATA are split into K = ⌈N / M⌉ minibatches, minibatch k holding
images k, k + K, k + 2K, … (M = `--minibatch`). Strided, not consecutive: a dataset sorted by
class (an image folder, mnist-5k) gives every minibatch every class, as a shuffle would, and
the split is the same on every run. Under torchrun rank r scans minibatches r, r + R, … whole
(R ranks), so a minibatch is never split between ranks and its HSIC₁ is the one a single process
computes; the per-minibatch values are gathered and summed in minibatch order (cka.HsicSums).

Per scan batch (`--batch-size` images, fed to both models): each model's layer outputs are
copied as rows (layers.LayerRows) into their minibatch's buffers on the device, inside the
forward hook; once a minibatch is complete its Gram matrices and HSIC₁ values are computed and
its buffers freed. Memory: one minibatch's rows of every layer (M × the layers' widths; two
minibatches' when a batch straddles them), whatever the size of DATA.

Two models with the same preprocessing get the same input tensors. Otherwise each reads the
images with its own (a second stream over the same indices, in step with the first); an image
that only one of them could read is left out of both.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cnntool.core.session import Consumer, ScanSession, feed
from cnntool.errors import CnnToolError
from cnntool.tasks.compare.cka import KERNELS, MIN_IMAGES, HsicSums, MinibatchHsic, minibatch_hsic
from cnntool.tasks.compare.layers import LayerRows, layer_rows, output_shapes, resolved_layers

DEFAULT_MINIBATCH = 256  # Nguyen et al. 2021's minibatch


@dataclass(frozen=True)
class CompareSettings:
    """What `compare` computes: the kernels, images per minibatch (M), how maps become rows
    (layers.layer_rows: "auto", "none" or a grid side), and σ of the RBF kernel as a multiple of
    the median distance."""

    kernels: tuple[str, ...] = KERNELS
    minibatch: int = DEFAULT_MINIBATCH
    pool: str | int = "auto"
    rbf_sigma: float = 1.0

    def __post_init__(self):
        unknown = [k for k in self.kernels if k not in KERNELS]
        if unknown or not self.kernels:
            name = unknown[0] if unknown else ""
            raise CnnToolError(f"unknown kernel '{name}'; use linear or rbf")
        if self.minibatch < MIN_IMAGES:
            raise CnnToolError(
                f"a minibatch needs at least {MIN_IMAGES} images (HSIC₁ divides by n − 3)"
            )
        if not (self.rbf_sigma > 0 and math.isfinite(self.rbf_sigma)):
            raise CnnToolError("the RBF σ multiplier must be a positive number")


@dataclass(frozen=True)
class Minibatches:
    """`total` images split into `count` strided minibatches (see the module docstring)."""

    total: int
    count: int

    @classmethod
    def of(cls, total: int, size: int) -> Minibatches:
        return cls(total, max(1, -(-total // size)))

    def of_index(self, index: int) -> int:
        return index % self.count

    def members(self, k: int) -> range:
        return range(k, self.total, self.count)

    def indices_for(self, shard) -> list[int]:
        """The dataset indices a rank scans: its whole minibatches, one after the other."""
        return [i for k in range(shard.rank, self.count, shard.world_size) for i in self.members(k)]

    def describe(self) -> str:
        small, large = self.total // self.count, -(-self.total // self.count)
        size = f"{small}" if small == large else f"{small}–{large}"
        return f"{self.count} minibatch{'es' if self.count > 1 else ''} of {size} images"


class MinibatchCollector:
    """Rows in, one MinibatchHsic out per complete minibatch (`done`).

    Each minibatch being filled has one buffer per layer and side (A, and B unless A is compared
    with itself) of its size × the layer's width, on the device; a layer's output is copied
    straight into it (LayerRows.write) inside the forward hook. A scan batch may end one
    minibatch and begin the next (rows come in scan order, each minibatch's consecutively):
    `begin(indices)` says where its rows go, `end()` computes and frees every minibatch that the
    batch completed. A minibatch with fewer than 4 readable images is dropped (`dropped`)."""

    def __init__(
        self,
        minibatches: Minibatches,
        settings: CompareSettings,
        sides: Sequence[Sequence[LayerRows]],
        device,
    ):
        self.minibatches, self.settings, self.device = minibatches, settings, device
        self.sides = [list(side) for side in sides]
        self.open: dict[int, _Filling] = {}
        self.segments: list[tuple[int, int, int, int]] = []  # (minibatch, start, end, offset)
        self.done: list[MinibatchHsic] = []
        self.dropped = 0

    def begin(self, indices: Sequence[int]) -> None:
        """The next batch's rows are these dataset indices (those both models read)."""
        self.segments = []
        start = 0
        while start < len(indices):
            k, end = self.minibatches.of_index(indices[start]), start
            while end < len(indices) and self.minibatches.of_index(indices[end]) == k:
                end += 1
            if k not in self.open:
                size = len(self.minibatches.members(k))
                self.open[k] = _Filling(
                    [
                        [torch.empty(size, layer.width, device=self.device) for layer in side]
                        for side in self.sides
                    ]
                )
            self.segments.append((k, start, end, self.open[k].filled))
            start = end

    def write(self, side: int, layer: int, output: torch.Tensor) -> None:
        """One layer's output for the batch (its kept rows, in `begin`'s order)."""
        plan = self.sides[side][layer]
        for k, start, end, offset in self.segments:
            rows = self.open[k].buffers[side][layer][offset : offset + end - start]
            plan.write(rows, output[start:end])

    def end(self) -> None:
        """After the batch's forward passes: count its rows, finish what it completed."""
        for k, start, end, offset in self.segments:
            self.open[k].filled = offset + end - start
        last = self.segments[-1][0] if self.segments else None
        for k in [k for k in self.open if k != last]:
            self.finish(k)

    def finish(self, k: int | None = None) -> None:
        """Turn minibatch `k` (None: every open one) into its HSIC₁ values and free its rows."""
        for key in list(self.open) if k is None else [k]:
            filling = self.open.pop(key)
            if filling.filled < MIN_IMAGES:
                self.dropped += 1
                continue
            sides = [[buffer[: filling.filled] for buffer in side] for side in filling.buffers]
            self.done.append(
                minibatch_hsic(
                    key,
                    sides[0],
                    sides[1] if len(sides) > 1 else None,
                    self.settings.kernels,
                    self.settings.rbf_sigma,
                    in_place=True,
                )
            )


@dataclass
class _Filling:
    buffers: list[list[torch.Tensor]]  # [side][layer]: minibatch size × layer width
    filled: int = 0


class RowsConsumer(Consumer):
    """A scan consumer handing each observed layer's output to the collector: `targets` maps a
    layer to its (side, position) in the collector (one layer may feed both sides). `keep`:
    the positions of the batch's rows to keep (None: all)."""

    def __init__(self, targets: dict[str, list[tuple[int, int]]], collector: MinibatchCollector):
        self.targets, self.collector = targets, collector
        self.layers = tuple(targets)
        self.keep: list[int] | None = None
        self.seen: set[str] = set()

    def begin(self, batch) -> None:
        self.seen = set()

    def observe(self, layer: str, output: torch.Tensor) -> None:
        self.seen.add(layer)
        if self.keep is not None:
            output = output[self.keep]
        for side, position in self.targets[layer]:
            self.collector.write(side, position, output)

    def check(self) -> None:
        missing = [name for name in self.layers if name not in self.seen]
        if missing:
            raise CnnToolError(f"layer {missing[0]} did not run in the forward pass")


@dataclass(frozen=True)
class CkaResult:
    """CKA of every pair of layers (`values[kernel]`: layers_a × layers_b; NaN where a layer does
    not vary over DATA), over `images` images in `minibatches` minibatches."""

    model_a: str
    model_b: str
    layers_a: tuple[LayerRows, ...]
    layers_b: tuple[LayerRows, ...]
    self_compare: bool
    settings: CompareSettings
    values: dict[str, np.ndarray]
    images: int
    minibatches: int
    dropped: int  # minibatches with fewer than 4 readable images
    unpaired: int  # images that only one of the two models could read

    @property
    def names_a(self) -> list[str]:
        return [layer.name for layer in self.layers_a]

    @property
    def names_b(self) -> list[str]:
        return [layer.name for layer in self.layers_b]

    def best_matches(self, kernel: str) -> list[int | None]:
        """For each layer of A, the column of B's most similar layer (None: no defined value).
        Against itself, a layer's own column does not count (it is 1)."""
        found = []
        for row, values in enumerate(self.values[kernel]):
            shown = np.array(values, dtype=float)
            if self.self_compare:
                shown[row] = np.nan
            found.append(None if np.isnan(shown).all() else int(np.nanargmax(shown)))
        return found

    def undefined_layers(self) -> list[str]:
        """Layers whose CKA is undefined with every other layer (they do not vary over DATA)."""
        values = self.values[self.settings.kernels[0]]
        rows = [self.names_a[i] for i in range(values.shape[0]) if np.isnan(values[i]).all()]
        columns = [self.names_b[j] for j in range(values.shape[1]) if np.isnan(values[:, j]).all()]
        return list(dict.fromkeys(rows + ([] if self.self_compare else columns)))


def second_session(session: ScanSession, model, announce=None) -> ScanSession:
    """A session for MODEL_B beside MODEL_A's: the same shard, batches and options, on the same
    device (under torchrun, this rank's)."""
    if model.device != session.device:
        model.module = model.module.to(session.device)
        model.device = session.device
    return session.beside(model, announce)


def plan_layers(loaded, names: Sequence[str] | None, pool, what: str) -> list[LayerRows]:
    """The LayerRows of the named layers of a model (None: the default layers)."""
    paths = resolved_layers(loaded.module, names)
    shapes = output_shapes(loaded, paths, what)
    return [layer_rows(path, shapes[path], pool) for path in paths]


def plan_sides(
    session: ScanSession,
    other: ScanSession | None,
    layers_a: Sequence[str] | None,
    layers_b: Sequence[str] | None,
    pool,
    what: tuple[str, str],
) -> tuple[list[LayerRows], list[LayerRows] | None]:
    """The rows (named layers of session's model, None: the default ones) and the columns (of
    other's model; against itself, None unless `layers_b` names other layers of the same model).
    `what`: the two models as the user named them, for errors."""
    rows = plan_layers(session.model, layers_a, pool, what[0])
    if other is not None:
        return rows, plan_layers(other.model, layers_b, pool, what[1])
    return rows, (plan_layers(session.model, layers_b, pool, what[0]) if layers_b else None)


def compare(
    session: ScanSession,
    other: ScanSession | None,
    layers_a: Sequence[LayerRows],
    layers_b: Sequence[LayerRows] | None,
    settings: CompareSettings,
    *,
    title: str = "compare",
) -> CkaResult:
    """Minibatch CKA of every layer of `layers_a` (of session's model) with every layer of
    `layers_b` (of other's model; `other` None: the same model against itself, `layers_b` None
    meaning `layers_a`). Collective under torchrun: every rank gets the result."""
    minibatches = Minibatches.of(len(session.dataset), settings.minibatch)
    session.indices = minibatches.indices_for(session.shard)
    if other is not None:
        other.indices = session.indices
    self_compare = other is None and (layers_b is None or list(layers_b) == list(layers_a))
    layers_b = list(layers_a) if layers_b is None else list(layers_b)
    sides = [layers_a] if self_compare else [layers_a, layers_b]
    collector = MinibatchCollector(minibatches, settings, sides, session.device)
    unpaired = _scan(session, other, collector, title)
    parts = session.gather((collector.done, collector.dropped, unpaired))
    done = [part for rank_done, _, _ in parts for part in rank_done]
    dropped = sum(p[1] for p in parts)
    if not done:
        raise CnnToolError(
            f"no minibatch had {MIN_IMAGES} readable images (of both models): CKA needs them"
        )
    sums = HsicSums.of(done, settings.kernels)
    return CkaResult(
        model_a=session.model.name,
        model_b=(other or session).model.name,
        layers_a=tuple(layers_a),
        layers_b=tuple(layers_b),
        self_compare=self_compare,
        settings=settings,
        values={kernel: sums.cka(kernel) for kernel in settings.kernels},
        images=sums.images,
        minibatches=sums.minibatches,
        dropped=dropped,
        unpaired=sum(p[2] for p in parts),
    )


def _scan(session, other, collector: MinibatchCollector, title: str) -> int:
    """Feed this rank's minibatches to both models and the collector; the count of images only
    one of the models could read."""
    targets: list[dict[str, list[tuple[int, int]]]] = [{}, {}]
    for side, layers in enumerate(collector.sides):
        model = 0 if other is None else side  # against itself, one forward feeds both sides
        for position, layer in enumerate(layers):
            targets[model].setdefault(layer.name, []).append((side, position))
    rows_a = RowsConsumer(targets[0], collector)
    rows_b = None if other is None else RowsConsumer(targets[1], collector)
    unpaired = 0
    with contextlib.ExitStack() as stack:
        prepared_a = stack.enter_context(session.prepared(keep=rows_a.layers))
        prepared_b = (
            None if other is None else stack.enter_context(other.prepared(keep=rows_b.layers))
        )
        batches = session.batches(title)
        if other is None or other.model.preprocessing == session.model.preprocessing:
            pairs: Iterable = ((batch, batch) for batch in batches)
        else:
            stream = stack.enter_context(other.stream())
            pairs = paired(batches, stream, session.shard_indices(), session.batch_size)
        for batch_a, batch_b in pairs:
            if batch_b is None:
                unpaired += len(batch_a.indices)
                continue
            rows_a.keep, keep_b, indices = _common(batch_a.indices, batch_b.indices)
            unpaired += len(batch_a.indices) + len(batch_b.indices) - 2 * len(indices)
            if not indices:
                continue
            collector.begin(indices)
            feed(session.module, [batch_a], [rows_a], device=session.device, prepared=prepared_a)
            rows_a.check()
            if rows_b is not None:
                rows_b.keep = keep_b
                feed(other.module, [batch_b], [rows_b], device=other.device, prepared=prepared_b)
                rows_b.check()
            collector.end()
        collector.finish()
    return unpaired


def _common(a: Sequence[int], b: Sequence[int]):
    """Positions in `a` and in `b` of the indices both hold (None: all), and those indices."""
    if list(a) == list(b):
        return None, None, list(a)
    shared = set(a) & set(b)
    keep_a = [k for k, i in enumerate(a) if i in shared]
    keep_b = [k for k, i in enumerate(b) if i in shared]
    return keep_a, keep_b, [a[k] for k in keep_a]


def paired(
    batches_a: Iterable, batches_b: Iterable, order: Sequence[int], batch_size: int
) -> Iterator[tuple]:
    """Batches of two streams over the same `order` of indices, matched by the chunk of `order`
    they come from: (batch of A, batch of B, or None where B could read nothing of the chunk; a
    stream yields no batch for such a chunk)."""
    position = {index: k for k, index in enumerate(order)}

    def chunk_of(batch) -> int:
        return position[batch.indices[0]] // batch_size

    others = iter(batches_b)
    pending = next(others, None)
    for batch in batches_a:
        chunk = chunk_of(batch)
        while pending is not None and chunk_of(pending) < chunk:
            pending = next(others, None)
        if pending is not None and chunk_of(pending) == chunk:
            yield batch, pending
            pending = next(others, None)
        else:
            yield batch, None
