"""DATA spec -> a list of images with labels -> preprocessed batches.

A DATA spec is a folder (recursive; `class/xxx.jpg` gives the label `class`), a text file of
paths (one per line), `-` for paths on stdin, or a built-in sample set (cnntool.core.samples).
Unreadable images never stop a scan: they are skipped and counted in `BatchStream.skipped`.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence, TextIO

import numpy as np
from PIL import Image

from cnntool.core import samples
from cnntool.core.images import is_image_file, load_image
from cnntool.core.preprocessing import Preprocessing
from cnntool.errors import CnnToolError, DataError, unknown_name

if TYPE_CHECKING:
    import torch


@dataclass
class DataSet:
    """Images addressed by index: a path (or `set/NNNNN` key) and a label for each.

    Array-backed sample sets keep their pixels in `arrays` (N, H, W) uint8 instead of files.
    """

    name: str
    paths: list[str]
    labels: list[int | str | None]
    label_names: list[str] | None = None
    arrays: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def head(self, count: int | None) -> "DataSet":
        """The first `count` images (all of them for None)."""
        if count is None or count >= len(self):
            return self
        arrays = None if self.arrays is None else self.arrays[:count]
        return replace(self, paths=self.paths[:count], labels=self.labels[:count], arrays=arrays)

    def load(self, index: int) -> Image.Image:
        if self.arrays is not None:
            return Image.fromarray(self.arrays[index], mode="L")
        return load_image(self.paths[index])

    def label_name(self, index: int) -> str | None:
        label = self.labels[index]
        if label is None:
            return None
        if self.label_names is not None and isinstance(label, int) and 0 <= label < len(self.label_names):
            return self.label_names[label]
        return str(label)


def open_data(spec: str, stdin: TextIO | None = None) -> DataSet:
    """Resolve a DATA spec; raise DataError when it names nothing usable."""
    if spec == "-":
        return _from_list("stdin", (stdin or sys.stdin).read().splitlines())
    if spec in samples.SAMPLE_SETS:
        return _sample_set(spec)
    path = Path(spec)
    if path.is_dir():
        return _from_folder(path)
    if path.is_file():
        if is_image_file(path):
            return DataSet(name=spec, paths=[str(path)], labels=[None])
        return _from_list(spec, path.read_text(errors="replace").splitlines())
    if "/" not in spec and "." not in spec:
        raise unknown_name("sample set or path", spec, samples.SAMPLE_SETS,
                           hint="built-in sample sets: " + ", ".join(samples.SAMPLE_SETS))
    raise DataError(f"DATA '{spec}' is not a folder, an image, a list file, '-' or a sample set")


def _from_folder(root: Path) -> DataSet:
    files = sorted(p for p in root.rglob("*") if p.is_file() and is_image_file(p))
    if not files:
        raise DataError(f"folder {root} contains no image files")
    # `root/class/xxx.jpg` -> label 'class' (the first folder under root); files at the top: none
    labels: list[int | str | None] = [
        p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else None for p in files
    ]
    return DataSet(name=str(root), paths=[str(p) for p in files], labels=labels)


def _from_list(name: str, lines: Sequence[str]) -> DataSet:
    paths = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not paths:
        raise DataError(f"the path list {name} is empty")
    return DataSet(name=name, paths=paths, labels=[None] * len(paths))


def _sample_set(name: str) -> DataSet:
    if name == "imagenet-samples":
        items = samples.imagenet_samples()
        return DataSet(name=name, paths=[p for p, _ in items], labels=[lab for _, lab in items],
                       label_names=_imagenet_categories())
    if name == "mnist-5k":
        images, labels = samples.mnist_5k()
        return DataSet(name=name, paths=[f"mnist-5k/{i:05d}" for i in range(len(images))],
                       labels=[int(v) for v in labels], label_names=[str(d) for d in range(10)],
                       arrays=images)
    if name == "faces":
        images, labels = samples.faces()
        return DataSet(name=name, paths=[f"faces/{i:03d}" for i in range(len(images))],
                       labels=[int(v) for v in labels], label_names=list(samples.FACE_LABELS),
                       arrays=images)
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
    inputs: "torch.Tensor"
    sizes: list[tuple[int, int]]


@dataclass
class BatchStream:
    """Iterate preprocessed batches; `skipped` lists (path, reason) of unreadable images."""

    dataset: DataSet
    preprocessing: Preprocessing
    batch_size: int = 32
    workers: int = 0
    normalize: bool = True
    indices: Sequence[int] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        count = len(self.indices) if self.indices is not None else len(self.dataset)
        return (count + self.batch_size - 1) // self.batch_size

    @property
    def total(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.dataset)

    def __iter__(self) -> Iterator[Batch]:
        import torch
        from torch.utils.data import DataLoader, Subset

        items: torch.utils.data.Dataset = _Preprocessed(self.dataset, self.preprocessing, self.normalize)
        if self.indices is not None:
            items = Subset(items, list(self.indices))
        loader = DataLoader(items, batch_size=self.batch_size, num_workers=self.workers,
                            collate_fn=_collate, shuffle=False)
        for good, bad in loader:
            self.skipped.extend((self.dataset.paths[index], reason) for index, reason in bad)
            if good is not None:
                yield good


class _Preprocessed:
    """A map-style dataset; an unreadable image becomes (index, None, reason), never a crash."""

    def __init__(self, dataset: DataSet, preprocessing: Preprocessing, normalize: bool):
        self.dataset, self.preprocessing, self.normalize = dataset, preprocessing, normalize

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        try:
            image = self.dataset.load(index)
        except CnnToolError as exc:
            return index, None, None, str(exc)
        pixels = self.preprocessing.to_pixels(image)
        tensor = self.preprocessing.normalize(pixels) if self.normalize else pixels
        return index, tensor, image.size, None


def _collate(records):
    import torch

    good = [r for r in records if r[1] is not None]
    bad = [(r[0], r[3]) for r in records if r[1] is None]
    batch = None
    if good:
        batch = Batch(indices=[r[0] for r in good], inputs=torch.stack([r[1] for r in good]),
                      sizes=[r[2] for r in good])
    return batch, bad
