"""DATA spec -> a list of images with labels -> preprocessed batches.

A DATA spec is a folder (recursive, through links to folders; `class/xxx.jpg` gives the label
`class`), a text file of paths (one per line), `-` for paths on stdin, or a built-in sample set
(cnntool.core.samples). Unreadable images never stop a scan: they are skipped and counted.

Two lists of (path, reason) hold them. `DataSet.skipped`: what listing a folder could not take
(dangling links, link loops, FIFOs and other non-regular files). `BatchStream.skipped`: the
images of one pass that could not be read (broken, truncated, over `max_pixels`, not a regular
file). A report over a whole scan is `dataset.skipped + (every rank's) stream.skipped`, the
former counted once, not once per rank: see `DataSet.all_skipped`.
"""

from __future__ import annotations

import functools
import os
import stat
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np
from PIL import Image

from cnntool.core import samples
from cnntool.core.images import (
    crop_pixels,
    file_kind,
    is_image_file,
    load_image,
    load_pixels,
    unopenable_reason,
)
from cnntool.core.preprocessing import Preprocessing
from cnntool.core.scan_options import ScanOptions
from cnntool.errors import CnnToolError, DataError, unknown_name

if TYPE_CHECKING:
    import torch


@dataclass
class DataSet:
    """Images addressed by index: a path (or `set/NNNNN` key) and a label for each.

    Array-backed sample sets keep their pixels in `arrays` (N, H, W) uint8 instead of files.
    `skipped`: (path, reason) of entries that listing the DATA found but could not take (they
    have no index). `max_pixels`: images whose header claims more are refused (None: Pillow's
    limit).
    """

    name: str
    paths: list[str]
    labels: list[int | str | None]
    label_names: list[str] | None = None
    arrays: np.ndarray | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    max_pixels: int | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def spread(self, count: int | None) -> DataSet:
        """`count` images spread evenly over the set (every len/count-th, in order), or all of
        it: the head of a sorted set (mnist-5k is sorted by digit) would show only a few
        classes, so this is what `--limit N` takes."""
        if count is None or count >= len(self):
            return self
        picks = [i * len(self) // count for i in range(count)]
        arrays = None if self.arrays is None else self.arrays[picks]
        return replace(
            self,
            paths=[self.paths[i] for i in picks],
            labels=[self.labels[i] for i in picks],
            arrays=arrays,
        )

    def head(self, count: int | None) -> DataSet:
        """The first `count` images (all of them for None)."""
        if count is None or count >= len(self):
            return self
        arrays = None if self.arrays is None else self.arrays[:count]
        return replace(self, paths=self.paths[:count], labels=self.labels[:count], arrays=arrays)

    def _check(self, index: int) -> None:
        if not 0 <= index < len(self):  # a negative index would silently count from the end
            raise CnnToolError(
                f"image {index} is past the end of {self.name} ({len(self)} images, "
                "numbered from 0)"
            )

    def load(self, index: int) -> Image.Image:
        """The whole image (a DataError sentence when it cannot be read)."""
        self._check(index)
        if self.arrays is not None:
            return Image.fromarray(self.arrays[index], mode="L")
        return load_image(self.paths[index], self.max_pixels)

    def load_pixels(
        self, index: int, preprocessing: Preprocessing, draft: bool = True
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        """The model input in [0, 1] (C, H, W) and the original (w, h), decoding no more than
        the model needs (core.images.load_pixels)."""
        self._check(index)
        if self.arrays is not None:
            image = Image.fromarray(self.arrays[index], mode="L")
            return crop_pixels(image, preprocessing), image.size
        return load_pixels(
            self.paths[index], preprocessing, max_pixels=self.max_pixels, draft=draft
        )

    def all_skipped(self, unreadable: Iterable[tuple[str, str]] = ()) -> list[tuple[str, str]]:
        """This DATA's listing-time skips and `unreadable` (e.g. the merged `stream.skipped` of
        every rank), in path order: everything a scan's report must count."""
        return sorted([*self.skipped, *unreadable])

    def label_name(self, index: int) -> str | None:
        label = self.labels[index]
        if label is None:
            return None
        if (
            self.label_names is not None
            and isinstance(label, int)
            and 0 <= label < len(self.label_names)
        ):
            return self.label_names[label]
        return str(label)


def open_data(spec: str, stdin: TextIO | None = None, *, max_pixels: int | None = None) -> DataSet:
    """Resolve a DATA spec; raise DataError when it names nothing usable. Images whose header
    claims more than `max_pixels` pixels will be skipped (None: Pillow's limit)."""
    return replace(_open_data(spec, stdin), max_pixels=max_pixels)


def _open_data(spec: str, stdin: TextIO | None) -> DataSet:
    if spec == "-":
        return _from_list("stdin", _lines(stdin or sys.stdin))
    if spec in samples.SAMPLE_SETS:
        return _sample_set(spec)
    path = Path(spec)
    if path.is_dir():
        return _from_folder(path)
    if path.is_file():
        if is_image_file(path):
            return DataSet(name=spec, paths=[str(path)], labels=[None])
        return _from_list(spec, _names(path.read_bytes()))
    if not path.exists() and os.path.islink(path):
        raise DataError(f"DATA '{spec}' is a dangling symbolic link")
    if "/" not in spec and "." not in spec:
        raise unknown_name(
            "sample set or path",
            spec,
            samples.SAMPLE_SETS,
            hint="built-in sample sets: " + ", ".join(samples.SAMPLE_SETS),
        )
    raise DataError(f"DATA '{spec}' is not a folder, an image, a list file, '-' or a sample set")


def _from_folder(root: Path) -> DataSet:
    files, skipped = walk_images(root)
    if not files:
        detail = (
            f" ({len(skipped)} skipped, e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        )
        raise DataError(f"folder {root} contains no readable image files{detail}")
    # `root/class/xxx.jpg` -> label 'class' (the first folder under root); files at the top: none
    labels: list[int | str | None] = [
        p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else None for p in files
    ]
    return DataSet(name=str(root), paths=[str(p) for p in files], labels=labels, skipped=skipped)


def walk_images(root: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """The image files under `root` (sorted) and the entries that could be images but cannot
    be read as files, with the reason (sorted): dangling links, link loops, FIFOs, sockets,
    devices, folders that cannot be listed.

    Links to folders are followed, except back into a folder being walked (a loop). An entry
    "could be an image" when its name has an image suffix, or none at all (a broken link
    without a suffix may have pointed at a folder of images); others (notes.txt) are not
    images and are left out without a word, as before.
    """
    files: list[Path] = []
    skipped: list[tuple[str, str]] = []
    top = os.stat(root)
    pending = [(root, frozenset({(top.st_dev, top.st_ino)}))]  # folder, the folders above it
    while pending:
        folder, above = pending.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as exc:
            skipped.append((str(folder), f"cannot list the folder: {unopenable_reason(exc)}"))
            continue
        for entry in entries:
            path = Path(entry.path)
            try:
                info = os.stat(entry.path)  # through links
            except OSError as exc:
                if _could_be_image(path):
                    skipped.append((str(path), unopenable_reason(exc, link=entry.is_symlink())))
                continue
            if stat.S_ISDIR(info.st_mode):
                key = (info.st_dev, info.st_ino)
                if key in above:
                    skipped.append(
                        (str(path), "symbolic link loop (links back to a folder above it)")
                    )
                else:
                    pending.append((path, above | {key}))
            elif stat.S_ISREG(info.st_mode):
                if is_image_file(path):
                    files.append(path)
            elif _could_be_image(path):
                skipped.append((str(path), f"not a regular file ({file_kind(info.st_mode)})"))
    return sorted(files), sorted(skipped)


def _could_be_image(path: Path) -> bool:
    return is_image_file(path) or not path.suffix


def _names(data: bytes) -> list[str]:
    """A path list's lines as file names: bytes that are not UTF-8 are kept as the file
    system keeps them (os.fsdecode: surrogateescape), so such a name opens its file."""
    return [os.fsdecode(line) for line in data.splitlines()]


def _lines(stream: TextIO) -> list[str]:
    """The lines of a text stream of paths (stdin): its bytes as file names where it has them."""
    buffer = getattr(stream, "buffer", None)
    return _names(buffer.read()) if buffer is not None else stream.read().splitlines()


def _from_list(name: str, lines: Sequence[str]) -> DataSet:
    entries = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not entries:
        raise DataError(f"the path list {name} is empty")
    # a NUL byte cannot be in a file name: skipped and counted now (nothing could open it)
    paths = [entry for entry in entries if "\x00" not in entry]
    skipped = [(entry, "the name contains a NUL byte") for entry in entries if "\x00" in entry]
    if not paths:
        raise DataError(
            f"the path list {name} names no file that could exist "
            f"({len(skipped)} entries with a NUL byte)"
        )
    return DataSet(name=name, paths=paths, labels=[None] * len(paths), skipped=sorted(skipped))


def _sample_set(name: str) -> DataSet:
    if name == "imagenet-samples":
        items = samples.imagenet_samples()
        return DataSet(
            name=name,
            paths=[p for p, _ in items],
            labels=[lab for _, lab in items],
            label_names=_imagenet_categories(),
        )
    if name == "mnist-5k":
        images, labels = samples.mnist_5k()
        return DataSet(
            name=name,
            paths=[f"mnist-5k/{i:05d}" for i in range(len(images))],
            labels=[int(v) for v in labels],
            label_names=[str(d) for d in range(10)],
            arrays=images,
        )
    if name == "faces":
        images, labels = samples.faces()
        return DataSet(
            name=name,
            paths=[f"faces/{i:03d}" for i in range(len(images))],
            labels=[int(v) for v in labels],
            label_names=list(samples.FACE_LABELS),
            arrays=images,
        )
    paths = samples.photos()
    return DataSet(name=name, paths=paths, labels=[None] * len(paths))


def _imagenet_categories() -> list[str]:
    from torchvision.models import AlexNet_Weights  # metadata only; no download

    return list(AlexNet_Weights.IMAGENET1K_V1.meta["categories"])


# ---------------------------------------------------------------------------------------------
# Batches


@dataclass
class Batch:
    """A preprocessed batch: `inputs` (B, C, H, W) and, per item, its index and original size."""

    indices: list[int]
    inputs: torch.Tensor
    sizes: list[tuple[int, int]]

    def pin_memory(self) -> Batch:
        """The batch with `inputs` in page-locked memory. The DataLoader calls this (it pins
        only tensors and the types that have this method) when it runs with pin_memory."""
        return replace(self, inputs=self.inputs.pin_memory())


@dataclass
class BatchStream:
    """Iterate preprocessed batches; `skipped` lists (path, reason) of the images of the latest
    pass that could not be read (the listing's own skips are in `dataset.skipped`).

    `workers`: loader processes; None picks them from the core count (`auto_workers`). With
    workers, they stay up between passes (persistent) until `close()`, each keeping a few
    batches ready (`prefetch_factor`). `device`: where the batches will go; for CUDA they come
    in pinned memory, so that `batch.inputs.to(device, non_blocking=True)` overlaps the copy.
    `draft`: let JPEGs much larger than the model input decode at a reduced scale (see
    core.images.load_pixels); False gives exactly Preprocessing.to_pixels.
    """

    dataset: DataSet
    preprocessing: Preprocessing
    batch_size: int = ScanOptions.batch_size
    workers: int | None = 0
    normalize: bool = True
    indices: Sequence[int] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    device: Any = None
    draft: bool = True
    _loader: Any = field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        count = len(self.indices) if self.indices is not None else len(self.dataset)
        return (count + self.batch_size - 1) // self.batch_size

    @property
    def total(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.dataset)

    @property
    def worker_count(self) -> int:
        """The loader processes this stream uses (`workers`, or the automatic choice)."""
        return auto_workers(len(self), self.device) if self.workers is None else self.workers

    @property
    def pin_memory(self) -> bool:
        """Whether batches come in page-locked memory (a CUDA target)."""
        import torch

        return (
            self.device is not None
            and torch.device(self.device).type == "cuda"
            and torch.cuda.is_available()
        )

    def __iter__(self) -> Iterator[Batch]:
        del self.skipped[:]  # in place: a reference taken before the pass sees this pass's
        for good, bad in self._data_loader():
            self.skipped.extend((self.dataset.paths[index], reason) for index, reason in bad)
            if good is not None:
                yield good

    def close(self) -> None:
        """Stop the loader processes (a later pass starts new ones)."""
        self._loader = None  # the DataLoader's iterator shuts its workers down when released

    def __enter__(self) -> BatchStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _data_loader(self):
        from torch.utils.data import DataLoader, Dataset, Subset

        if self._loader is not None:
            return self._loader
        # a map-style dataset by its __len__ and __getitem__: subclassing torch's Dataset would
        # import torch with this module
        items: Dataset = _Preprocessed(self.dataset, self.preprocessing, self.draft)
        if self.indices is not None:
            items = Subset(items, list(self.indices))
        workers = self.worker_count
        collate = functools.partial(_collate, self.preprocessing if self.normalize else None)
        loader = DataLoader(
            items,
            batch_size=self.batch_size,
            num_workers=workers,
            collate_fn=collate,
            shuffle=False,
            pin_memory=self.pin_memory,
            persistent_workers=workers > 0,
            prefetch_factor=_prefetch(workers) if workers else None,
        )
        if workers:
            self._loader = loader  # its worker processes serve the next pass too
        return loader


def auto_workers(batches: int, device: Any = None, cores: int | None = None) -> int:
    """How many loader processes to use for `batches` batches when the user names none.

    0 on a one-core machine or for a single batch: a worker costs a process start (and a
    copy of the dataset's paths) that one batch never pays back. On a CPU target the forward
    pass uses the cores too, so half of them decode (at most 8). With an accelerator decoding
    is the bottleneck (an H200 runs lite0 at ~9,000 images/s; 15 workers decode ~900 640×480
    JPEGs/s, 8 workers ~570): all cores but the main process's (at most 32). Never more
    workers than batches.
    """
    cores = cores if cores is not None else _usable_cores()
    if cores <= 1 or batches <= 1:
        return 0
    on_cpu = device is None or str(device).split(":")[0] == "cpu"
    wanted = min(max(1, cores // 2), 8) if on_cpu else min(cores - 1, 32)
    return max(0, min(wanted, batches))


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may run on (taskset, cgroups)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _prefetch(workers: int) -> int:
    """Batches each worker keeps ready: about 8 in flight in all, at least 2 per worker."""
    return max(2, 8 // workers)


class _Preprocessed:
    """A map-style dataset of [0, 1] pixels; an unreadable image becomes
    (index, None, None, reason), never a crash (and never a worker traceback)."""

    def __init__(self, dataset: DataSet, preprocessing: Preprocessing, draft: bool):
        self.dataset, self.preprocessing, self.draft = dataset, preprocessing, draft

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        try:
            pixels, size = self.dataset.load_pixels(index, self.preprocessing, self.draft)
        except CnnToolError as exc:
            return index, None, None, str(exc)
        return index, pixels, size, None


def _collate(normalizing: Preprocessing | None, records):
    """The readable records as one Batch (normalized by `normalizing` if given: one operation
    per batch, not per image), and (index, reason) of the others."""
    import torch

    good = [r for r in records if r[1] is not None]
    bad = [(r[0], r[3]) for r in records if r[1] is None]
    batch = None
    if good:
        inputs = torch.stack([r[1] for r in good])
        if normalizing is not None:
            inputs = normalizing.normalize(inputs)
        batch = Batch(indices=[r[0] for r in good], inputs=inputs, sizes=[r[2] for r in good])
    return batch, bad


def path_loader(paths: Sequence[str]):
    """row -> PIL image for paths as a features file stores them: image files, and sample-set
    items by their `set/NNNNN` key (mnist-5k and faces are arrays, not files)."""
    opened: dict = {}

    def load(row: int) -> Image.Image:
        path = paths[row]
        prefix = path.split("/", 1)[0]
        if prefix in samples.SAMPLE_SETS and not Path(path).exists():
            if prefix not in opened:
                sample_set = open_data(prefix)
                opened[prefix] = (sample_set, {p: i for i, p in enumerate(sample_set.paths)})
            sample_set, index = opened[prefix]
            if path in index:
                return sample_set.load(index[path])
        return load_image(path)

    return load
