"""Classify images: top-k classes with softmax probabilities, per image."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

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


def label_index(dataset: DataSet, index: int, class_names: Sequence[str] | None) -> int | None:
    """The dataset's label as a class index of the model, when the two label spaces agree."""
    label = dataset.labels[index]
    if label is None or class_names is None:
        return None
    if isinstance(label, int):
        same_space = dataset.label_names is None or list(dataset.label_names) == list(class_names)
        return label if same_space and 0 <= label < len(class_names) else None
    try:
        return list(class_names).index(label)
    except ValueError:
        return None


@torch.no_grad()
def predict(model: LoadedModel, stream: BatchStream, top: int = 5) -> Iterator[Prediction]:
    """Predictions in dataset order; unreadable images are skipped (see `stream.skipped`)."""
    module = model.module
    top = max(1, top)
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
                             label_index=label_index(stream.dataset, item, model.class_names),
                             classes=classes)
