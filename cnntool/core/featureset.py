"""A dataset's features as arrays: one row per image, with its path and label."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FeatureSet:
    """Features of a dataset as stored in a features .npz: `features` (N, D) float32 (may be a
    memory map), `paths` (N), `labels` (N) int with -1 for none, `label_names`, and where the
    features come from (`model`, `layer`, `pooling`; empty strings when unknown)."""

    features: np.ndarray
    paths: list[str]
    labels: np.ndarray
    label_names: list[str]
    model: str = ""
    layer: str = ""
    pooling: str = ""

    def label_name(self, row: int) -> str | None:
        label = int(self.labels[row])
        if label < 0:
            return None
        return self.label_names[label] if label < len(self.label_names) else str(label)


def integer_labels(
    labels: Sequence, label_names: Sequence[str] | None
) -> tuple[np.ndarray, list[str]]:
    """A DataSet's labels (ints with names, folder names, or None) -> (int array with -1 for
    none, names). Folder names are numbered in sorted order."""
    if label_names is not None and all(
        lab is None or isinstance(lab, (int, np.integer)) for lab in labels
    ):
        names = [str(n) for n in label_names]
        ints = [-1 if lab is None else int(lab) for lab in labels]
        known = max(ints, default=-1)
        names += [str(i) for i in range(len(names), known + 1)]  # ids past the names: own names
        return np.array(ints, dtype=np.int64), names
    names = sorted({str(lab) for lab in labels if lab is not None})
    number = {name: i for i, name in enumerate(names)}
    return np.array(
        [-1 if lab is None else number[str(lab)] for lab in labels], dtype=np.int64
    ), names
