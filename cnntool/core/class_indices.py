"""What people call a class, as the model's class index: a class named on the command line
(`class_index`: "207" or "golden retriever") and a data set's labels (`map_labels`). Where the
model's class names come from is loading/class_names.py's.

A data set's labels are mapped once per scan and said in a line.

Labels are folder names (`class/xxx.jpg`) or integers (sample sets, with `label_names`). They
map onto the model's outputs:
- by name, when the model has class names (folder 'cat' -> the class called 'cat');
- integer labels directly, when the data set and the model name their classes alike (or
  neither has names and the counts agree);
- folder names in sorted order, when the model has no class names and there are exactly as
  many folders as outputs: that is how torchvision's ImageFolder numbered them for training
  (also when the model has class names and no folder is one of them, e.g. WordNet ids against
  readable names: then with a warning).
Anything else maps to nothing, and the description says why (no accuracy is better than a
wrong one). Folder names that are not the model's class names (some of them, or all of them
when the sorted order is used instead) also give a `warning`: the accuracy rests on a guess,
or leaves those images out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cnntool.core.data import DataSet
from cnntool.errors import CnnToolError, unknown_name


@dataclass(frozen=True)
class LabelMapping:
    """`mapping(i)`: image i's label as a class index, or None. `description`: one line.
    `warning`: one line when folder names are not the model's class names (None when they are,
    or when there are no folder names)."""

    labels: tuple[int | None, ...]
    description: str
    warning: str | None = None

    def __call__(self, index: int) -> int | None:
        return self.labels[index]

    @property
    def mapped(self) -> int:
        return sum(label is not None for label in self.labels)


def map_labels(
    dataset: DataSet, class_names: Sequence[str] | None, num_outputs: int | None = None
) -> LabelMapping:
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


def _folder_names(
    labels, folders: list[str], names: list[str] | None, count: int | None
) -> LabelMapping:
    if names is not None:
        by_name = {name: i for i, name in reversed(list(enumerate(names)))}
        folded = {name.lower(): i for i, name in reversed(list(enumerate(names)))}
        index = {f: by_name.get(f, folded.get(f.lower())) for f in folders}
        matched = [f for f in folders if index[f] is not None]
        if matched:
            unmatched = [f for f in folders if index[f] is None]
            text = (
                f"labels: {len(matched)} of {len(folders)} folder names matched to the "
                "model's class names"
            )
            warning = None
            if unmatched:
                text += f" (not: {_few(unmatched)})"
                warning = (
                    f"{len(unmatched)} of {len(folders)} folder names are not the model's "
                    f"class names ({_few(unmatched)}; the model's: {_few(names)}): their "
                    "images are left out of the accuracy; rename the folders or give "
                    "--classes FILE"
                )
            return LabelMapping(
                tuple(index.get(label) if isinstance(label, str) else None for label in labels),
                text,
                warning,
            )
        if count != len(folders):
            return LabelMapping(
                (None,) * len(labels),
                f"labels: no folder name ({', '.join(folders[:3])}…) is one of "
                "the model's class names, so no accuracy",
                f"no folder name is one of the model's class names (folders "
                f"{_few(folders)}; the model's: {_few(names)}), so no accuracy; "
                "rename the folders or give --classes FILE",
            )
        reason = "no folder name is one of the model's class names, but"
    else:
        if count is None or count != len(folders):
            outputs = "an unknown number of" if count is None else str(count)
            return LabelMapping(
                (None,) * len(labels),
                f"labels: {len(folders)} folders, the model has no class names "
                f"and {outputs} outputs, so no accuracy (give --classes FILE)",
            )
        reason = "the model has no class names, and"
    position = {f: i for i, f in enumerate(folders)}
    order = f"{folders[0]} = 0 … {folders[-1]} = {len(folders) - 1}"
    warning = None
    if names is not None:
        pairs = ", ".join(f"{f} = {names[i]}" for i, f in enumerate(folders[:3]))
        warning = (
            f"the folder names are not the model's class names (folders {_few(folders)}; "
            f"the model's: {_few(names)}): the accuracy takes the folders in sorted order "
            f"as class indices ({pairs}…), a guess that holds only if the model was trained "
            "on these folders; rename them or give --classes FILE if not"
        )
    return LabelMapping(
        tuple(position[label] if isinstance(label, str) else None for label in labels),
        f"labels: {reason} its {count} outputs match the {len(folders)} folders, taken in "
        f"sorted order as torchvision's ImageFolder numbers them ({order})",
        warning,
    )


def _few(names: Sequence[str], shown: int = 3) -> str:
    """'a, b, c, …': the first `shown` names."""
    return ", ".join(names[:shown]) + (", …" if len(names) > shown else "")


def _integers(dataset: DataSet, names: list[str] | None, count: int | None) -> LabelMapping:
    labels, label_names = dataset.labels, dataset.label_names
    same = names is None or label_names is None or list(label_names) == names
    if label_names is not None and names is not None and not same:
        by_name = {name: i for i, name in reversed(list(enumerate(names)))}
        mapped = tuple(
            by_name.get(label_names[label])
            if isinstance(label, int) and 0 <= label < len(label_names)
            else None
            for label in labels
        )
        if any(m is not None for m in mapped):
            return LabelMapping(
                mapped, f"labels: {dataset.name}'s class names matched to the model's"
            )
        return LabelMapping(
            (None,) * len(labels),
            f"labels: {dataset.name}'s classes are not the model's, so no accuracy",
        )
    if count is None:
        return LabelMapping(
            (None,) * len(labels),
            "labels: the model's number of outputs is unknown, so labels are not compared",
        )
    mapped = tuple(
        label if isinstance(label, int) and 0 <= label < count else None for label in labels
    )
    return LabelMapping(
        mapped, f"labels: {dataset.name}'s class indices are the model's ({count} outputs)"
    )


# --- a class named on the command line ------------------------------------------------------------


def class_index(
    spec: str | int, class_names: Sequence[str] | None, num_classes: int | None = None
) -> int:
    """The class index for `spec`: a digit string is an index (for MNIST, whose class names are
    the digits, both readings agree); a name is matched case-insensitively, close names are
    suggested."""
    text = str(spec).strip()
    count = num_classes if num_classes is not None else (len(class_names) if class_names else None)
    if text.lstrip("-").isdigit():
        index = int(text)
        if index < 0 or (count is not None and index >= count):
            span = f"0 to {count - 1}" if count else "0 or more"
            raise CnnToolError(f"class {index} is out of range; the model's classes are {span}")
        return index
    if class_names is None:
        raise CnnToolError(f"the model has no class names, so give the class '{text}' as an index")
    lowered = [name.lower() for name in class_names]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    raise unknown_name("class", text, class_names)
