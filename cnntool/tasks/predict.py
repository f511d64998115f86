"""Classify images: top-k classes with softmax probabilities, per image."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch

from cnntool.core.data import BatchStream, DataSet
from cnntool.core.labels import map_labels
from cnntool.core.models import LoadedModel, main_output


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


def label_mapper(dataset: DataSet, class_names: Sequence[str] | None,
                 num_outputs: int | None = None) -> Callable[[int], int | None]:
    """index -> the dataset's label as a class index of the model, or None (core/labels.py:
    by name, by index, or in ImageFolder's sorted folder order). Decided once, not per image."""
    return map_labels(dataset, class_names, num_outputs)


@torch.no_grad()
def predict(model: LoadedModel, stream: BatchStream, top: int = 5) -> Iterator[Prediction]:
    """Predictions in dataset order; unreadable images are skipped (see `stream.skipped`)."""
    module = model.module
    top = max(1, top)
    to_class = None
    for batch in stream:
        logits = main_output(module(batch.inputs.to(model.device)))  # aux heads: the main one
        if to_class is None:  # the number of outputs is known from the first batch at the latest
            to_class = map_labels(stream.dataset, model.class_names,
                                  model.num_outputs or int(logits.shape[1]))
        probs = torch.softmax(logits.float(), dim=1)
        values, indices = probs.topk(min(top, probs.shape[1]), dim=1)
        for row, item in enumerate(batch.indices):
            classes = tuple(ClassScore(int(i), model.class_name(int(i)), float(p))
                            for p, i in zip(values[row].tolist(), indices[row].tolist()))
            yield Prediction(index=item, path=stream.dataset.paths[item],
                             label=stream.dataset.labels[item],
                             label_index=to_class(item),
                             classes=classes)
