"""Classify images: top-k classes with softmax probabilities, per image."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch

from cnntool.core.data import BatchStream, DataSet
from cnntool.core.models import LoadedModel


@dataclass(frozen=True)
class ClassScore:
    index: int
    name: str | None
    prob: float


@dataclass(frozen=True)
class Prediction:
    index: int
    path: str
    label: int | str | None
    label_index: int | None  # the label as an index into the model's classes, when it maps
    classes: tuple[ClassScore, ...]

    @property
    def correct(self) -> bool | None:
        return None if self.label_index is None else self.classes[0].index == self.label_index

    def to_record(self) -> dict:
        record = {"path": self.path}
        if self.label is not None:
            record["label"] = self.label
        record["classes"] = [{"index": c.index, "name": c.name, "prob": round(c.prob, 6)}
                             for c in self.classes]
        if self.correct is not None:
            record["correct"] = self.correct
        return record


def label_mapper(dataset: DataSet, class_names: Sequence[str] | None) -> Callable[[int], int | None]:
    """index -> the dataset's label as a class index of the model, when the two label spaces
    agree (None otherwise). The comparison of the label spaces is made once, not per image."""
    if class_names is None:
        return lambda index: None
    names = list(class_names)
    same_space = dataset.label_names is None or list(dataset.label_names) == names
    by_name = {name: i for i, name in reversed(list(enumerate(names)))}

    def mapped(index: int) -> int | None:
        label = dataset.labels[index]
        if label is None:
            return None
        if isinstance(label, int):
            return label if same_space and 0 <= label < len(names) else None
        return by_name.get(label)

    return mapped


@torch.no_grad()
def predict(model: LoadedModel, stream: BatchStream, top: int = 5) -> Iterator[Prediction]:
    """Predictions in dataset order; unreadable images are skipped (see `stream.skipped`)."""
    module = model.module
    top = max(1, top)
    to_class = label_mapper(stream.dataset, model.class_names)
    for batch in stream:
        logits = module(batch.inputs.to(model.device))
        if isinstance(logits, (tuple, list)):  # e.g. aux heads: the main output comes first
            logits = logits[0]
        probs = torch.softmax(logits.float(), dim=1)
        values, indices = probs.topk(min(top, probs.shape[1]), dim=1)
        for row, item in enumerate(batch.indices):
            classes = tuple(ClassScore(int(i), model.class_name(int(i)), float(p))
                            for p, i in zip(values[row].tolist(), indices[row].tolist()))
            yield Prediction(index=item, path=stream.dataset.paths[item],
                             label=stream.dataset.labels[item],
                             label_index=to_class(item),
                             classes=classes)
