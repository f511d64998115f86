"""Classify images: top-k classes with softmax probabilities, per image."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch

from cnntool.core.class_indices import map_labels
from cnntool.core.data import Batch, BatchStream, DataSet
from cnntool.core.loading.models import LoadedModel
from cnntool.core.logits import main_output
from cnntool.core.session import Consumer


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
    finite: bool = True  # False: the logits held NaN or inf (the classes are meaningless)

    @property
    def correct(self) -> bool | None:
        """None without a label; a prediction from non-finite logits is never correct."""
        if self.label_index is None:
            return None
        return self.finite and self.classes[0].index == self.label_index

    def to_record(self) -> dict:
        record = {"path": self.path}
        if self.label is not None:
            record["label"] = self.label
        record["classes"] = [
            {"index": c.index, "name": c.name, "prob": round(c.prob, 6)} for c in self.classes
        ]
        if self.correct is not None:
            record["correct"] = self.correct
        if not self.finite:
            record["nonfinite_logits"] = True
        return record


def label_mapper(
    dataset: DataSet, class_names: Sequence[str] | None, num_outputs: int | None = None
) -> Callable[[int], int | None]:
    """index -> the dataset's label as a class index of the model, or None (core/class_indices.py:
    by name, by index, or in ImageFolder's sorted folder order). Decided once, not per image."""
    return map_labels(dataset, class_names, num_outputs)


def batch_predictions(
    model: LoadedModel,
    dataset: DataSet,
    batch: Batch,
    logits,
    top: int,
    to_class: Callable[[int], int | None],
) -> list[Prediction]:
    """The top-`top` classes of each image of `batch`, from the model's output `logits`."""
    logits = main_output(logits).float()  # e.g. aux heads: the main output comes first
    finite = torch.isfinite(logits).all(dim=1).tolist()
    probs = torch.softmax(logits, dim=1)
    values, indices = probs.topk(min(max(1, top), probs.shape[1]), dim=1)
    return [
        Prediction(
            index=item,
            path=dataset.paths[item],
            label=dataset.labels[item],
            label_index=to_class(item),
            classes=tuple(
                ClassScore(int(i), model.class_name(int(i)), float(p))
                for p, i in zip(values[row].tolist(), indices[row].tolist(), strict=True)
            ),
            finite=finite[row],
        )
        for row, item in enumerate(batch.indices)
    ]


def nonfinite_warning(count: int, total: int) -> str:
    """The one wording, for every command that classifies, of images whose logits held NaN/inf."""
    return (
        f"{count} of {total} images gave non-finite logits (NaN or inf; counted wrong): the "
        "model's arithmetic overflows on them (huge weights or inputs?)"
    )


def _mapping(model: LoadedModel, dataset: DataSet, logits):
    # the number of outputs is known from the first batch at the latest
    return map_labels(
        dataset, model.class_names, model.num_outputs or int(main_output(logits).shape[1])
    )


class PredictionConsumer(Consumer):
    """A scan consumer (core.session): each batch's predictions go to `on_predictions` when
    given (streamed, nothing kept), else into `predictions` (to gather under torchrun)."""

    needs_output = True

    def __init__(
        self,
        model: LoadedModel,
        dataset: DataSet,
        top: int = 5,
        on_predictions: Callable[[list[Prediction]], None] | None = None,
    ):
        self.model, self.dataset, self.top = model, dataset, top
        self.on_predictions = on_predictions
        self.predictions: list[Prediction] = []
        self._to_class = None

    def end(self, batch: Batch, output) -> None:
        if self._to_class is None:
            self._to_class = _mapping(self.model, self.dataset, output)
        found = batch_predictions(self.model, self.dataset, batch, output, self.top, self._to_class)
        if self.on_predictions is not None:
            self.on_predictions(found)
        else:
            self.predictions.extend(found)


@torch.no_grad()
def predict(model: LoadedModel, stream: BatchStream, top: int = 5) -> Iterator[Prediction]:
    """Predictions in dataset order; unreadable images are skipped (see `stream.skipped`)."""
    to_class = None
    for batch in stream:
        logits = model.module(batch.inputs.to(model.device))
        if to_class is None:
            to_class = _mapping(model, stream.dataset, logits)
        yield from batch_predictions(model, stream.dataset, batch, logits, top, to_class)


class PredictionTally:
    """Top-1 accuracy over the predictions seen, and the first `keep` of them (None: all, e.g.
    for a table), in constant memory otherwise."""

    def __init__(self, keep: int | None = None):
        self.keep, self.kept, self.count, self.correct, self.judged = keep, [], 0, 0, 0
        self.nonfinite = 0  # predictions from NaN/inf logits (counted wrong where labelled)

    def add(self, predictions: Iterable[Prediction]) -> None:
        for p in predictions:
            self.count += 1
            self.nonfinite += not p.finite
            if p.correct is not None:
                self.judged += 1
                self.correct += p.correct
            if self.keep is None or len(self.kept) < self.keep:
                self.kept.append(p)


def predict_session(
    session,
    top: int = 5,
    tally: PredictionTally | None = None,
    on_predictions: Callable[[list[Prediction]], None] | None = None,
) -> list[Prediction]:
    """Classify the images of a scan session (core.session; collective under torchrun).

    In one process each batch's predictions go to `tally` and `on_predictions` as they come,
    and nothing is kept. Under torchrun every rank's predictions are gathered: returned in
    dataset order (and added to `tally`) on rank 0, `on_predictions` unused."""
    stream = not session.shard.distributed

    def found(predictions: list[Prediction]) -> None:
        if tally is not None:
            tally.add(predictions)
        if on_predictions is not None:
            on_predictions(predictions)

    consumer = PredictionConsumer(
        session.model, session.dataset, top, on_predictions=found if stream else None
    )
    session.run([consumer], f"predict {session.model.name}")
    every = sorted(
        (p for part in session.gather(consumer.predictions) for p in part), key=lambda p: p.index
    )
    if tally is not None and session.is_main:
        tally.add(every)
    return every
