"""The .npz files: a layer's features (`cnntool features`) and a 2-D map's coordinates
(`cnntool embed -o`). Strings are stored as unicode arrays, so reading needs no pickle."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cnntool.core.featureset import FeatureSet
from cnntool.errors import CnnToolError


def write_npz(
    handle,
    features: np.ndarray,
    paths: Sequence[str],
    labels: np.ndarray,
    label_names: Sequence[str],
    *,
    model: str,
    layer: str,
    pooling: str,
) -> None:
    """Write a features .npz to an open binary file (np.savez streams a memory map in 16 MiB
    pieces, so `features` need not fit in memory). Strings are stored as unicode arrays, so
    reading needs no pickle."""
    np.savez(
        handle,
        features=features,
        paths=np.array(list(paths), dtype=str),
        labels=np.asarray(labels, dtype=np.int64),
        label_names=np.array(list(label_names), dtype=str),
        model=np.array(model),
        layer=np.array(layer),
        pooling=np.array(pooling),
    )


def save_features(path: str | Path, features: FeatureSet) -> str:
    """A FeatureSet as a features .npz file (atomic: a temporary file renamed when complete);
    what was written, in words."""
    from cnntool.io.writers import atomic_path

    with atomic_path(path) as temp, open(temp, "wb") as handle:
        write_npz(
            handle,
            features.features,
            features.paths,
            features.labels,
            features.label_names,
            model=features.model,
            layer=features.layer,
            pooling=features.pooling,
        )
    return (
        f"wrote {path}: {len(features.paths)} images × {features.features.shape[1]} features of "
        f"{features.model} {features.layer} ({features.pooling} pooling)"
    )


def read_npz(path: str | Path) -> FeatureSet:
    """A features .npz written by `cnntool features` (or by hand: only `features` is required;
    paths default to row numbers, labels to -1). Mistakes become one-sentence errors."""
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise CnnToolError(f"features file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            stored = set(data.files)
            if "features" not in stored:
                raise CnnToolError(
                    f"{path} has no 'features' array "
                    f"(it has: {', '.join(sorted(stored)) or 'nothing'})"
                )
            features = np.asarray(data["features"], dtype=np.float32)
            count = features.shape[0] if features.ndim else 0
            paths = (
                [str(p) for p in data["paths"]]
                if "paths" in stored
                else [str(i) for i in range(count)]
            )
            labels = (
                np.asarray(data["labels"], dtype=np.int64)
                if "labels" in stored
                else np.full(count, -1, dtype=np.int64)
            )
            names = [str(n) for n in data["label_names"]] if "label_names" in stored else []
            meta = {
                key: str(data[key]) if key in stored else ""
                for key in ("model", "layer", "pooling")
            }
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise CnnToolError(f"cannot read {path} as a features .npz ({exc})") from None
    if features.ndim != 2:
        raise CnnToolError(
            f"'features' in {path} must be (images, dims), not shape {features.shape}"
        )
    if len(paths) != count or len(labels) != count:
        raise CnnToolError(
            f"{path} has {count} feature rows but {len(paths)} paths and {len(labels)} labels"
        )
    return FeatureSet(features=features, paths=paths, labels=labels, label_names=names, **meta)


def read_feature_file(path: str | Path):
    """A features .npz for `cnntool embed --features`: its FeatureSet, row -> the PIL image of that
    row (core.data.path_loader), and the file as the map's source."""
    from cnntool.core.data import path_loader

    feature_set = read_npz(path)
    return feature_set, path_loader(feature_set.paths), str(path)


def write_coordinates(
    handle,
    coords: np.ndarray,
    feature_set: FeatureSet,
    *,
    method: str,
    engine: str | None,
    perplexity: float | None,
    seed: int,
) -> None:
    """A map's coordinates (N, 2) with the paths and labels of its features, to an open binary
    file."""
    np.savez(
        handle,
        coords=coords,
        paths=np.array(feature_set.paths, dtype=str),
        labels=np.asarray(feature_set.labels, dtype=np.int64),
        label_names=np.array(feature_set.label_names, dtype=str),
        method=np.array(method),
        engine=np.array(engine or ""),
        perplexity=np.array(perplexity or 0.0),
        seed=np.array(seed),
    )
