"""A data set's labels as the model's class indices, decided once per scan and said in a line.

Labels are folder names (`class/xxx.jpg`) or integers (sample sets, with `label_names`). They
map onto the model's outputs:
- by name, when the model has class names (folder 'cat' -> the class called 'cat');
- integer labels directly, when the data set and the model name their classes alike (or
  neither has names and the counts agree);
- folder names in sorted order, when the model has no class names and there are exactly as
  many folders as outputs: that is how torchvision's ImageFolder numbered them for training.
Anything else maps to nothing, and the description says why (no accuracy is better than a
wrong one).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from cnntool.core.data import DataSet


@dataclass(frozen=True)
class LabelMapping:
    """`index_of(i)`: image i's label as a class index, or None. `description`: one line."""

    labels: tuple[int | None, ...]
    description: str

    def index_of(self, index: int) -> int | None:
        return self.labels[index]

    def __call__(self, index: int) -> int | None:
        return self.labels[index]

    @property
    def mapped(self) -> int:
        return sum(label is not None for label in self.labels)


def map_labels(dataset: DataSet, class_names: Sequence[str] | None,
               num_outputs: int | None = None) -> LabelMapping:
    """How `dataset`'s labels map onto a model with `class_names` and `num_outputs` outputs."""
    labels = dataset.labels
    names = list(class_names) if class_names is not None else None
    count = num_outputs if num_outputs is not None else (len(names) if names else None)
    if all(label is None for label in labels):
        return LabelMapping((None,) * len(labels), "the images have no labels")
    strings = sorted({label for label in labels if isinstance(label, str)})
    if strings:
        return _folder_names(labels, strings, names, count)
    return _integers(dataset, names, count)


def _folder_names(labels, folders: list[str], names: list[str] | None,
                  count: int | None) -> LabelMapping:
    if names is not None:
        by_name = {name: i for i, name in reversed(list(enumerate(names)))}
        folded = {name.lower(): i for i, name in reversed(list(enumerate(names)))}
        index = {f: by_name.get(f, folded.get(f.lower())) for f in folders}
        matched = [f for f in folders if index[f] is not None]
        if matched:
            unmatched = [f for f in folders if index[f] is None]
            text = (f"labels: {len(matched)} of {len(folders)} folder names matched to the "
                    "model's class names")
            if unmatched:
                text += f" (not: {', '.join(unmatched[:3])}{', …' if len(unmatched) > 3 else ''})"
            return LabelMapping(tuple(index.get(label) if isinstance(label, str) else None
                                      for label in labels), text)
        if count != len(folders):
            return LabelMapping((None,) * len(labels),
                                f"labels: no folder name ({', '.join(folders[:3])}…) is one of "
                                "the model's class names, so no accuracy")
        reason = "no folder name is one of the model's class names, but"
    else:
        if count is None or count != len(folders):
            outputs = "an unknown number of" if count is None else str(count)
            return LabelMapping((None,) * len(labels),
                                f"labels: {len(folders)} folders, the model has no class names "
                                f"and {outputs} outputs, so no accuracy (give --classes FILE)")
        reason = "the model has no class names, and"
    position = {f: i for i, f in enumerate(folders)}
    return LabelMapping(
        tuple(position[label] if isinstance(label, str) else None for label in labels),
        f"labels: {reason} its {count} outputs match the {len(folders)} folders, taken in "
        "sorted order as torchvision's ImageFolder numbers them "
        f"({folders[0]} = 0 … {folders[-1]} = {len(folders) - 1})")


def _integers(dataset: DataSet, names: list[str] | None, count: int | None) -> LabelMapping:
    labels, label_names = dataset.labels, dataset.label_names
    same = (names is None or label_names is None or list(label_names) == names)
    if label_names is not None and names is not None and not same:
        by_name = {name: i for i, name in reversed(list(enumerate(names)))}
        mapped = tuple(by_name.get(label_names[label]) if isinstance(label, int)
                       and 0 <= label < len(label_names) else None for label in labels)
        if any(m is not None for m in mapped):
            return LabelMapping(mapped, f"labels: {dataset.name}'s class names matched to the "
                                        "model's")
        return LabelMapping((None,) * len(labels), f"labels: {dataset.name}'s classes are not "
                                                   "the model's, so no accuracy")
    if count is None:
        return LabelMapping((None,) * len(labels), "labels: the model's number of outputs is "
                                                   "unknown, so labels are not compared")
    mapped = tuple(label if isinstance(label, int) and 0 <= label < count else None
                   for label in labels)
    return LabelMapping(mapped, f"labels: {dataset.name}'s class indices are the model's "
                                f"({count} outputs)")
