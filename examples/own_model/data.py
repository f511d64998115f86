"""Built-in training data for the own-model example: 32-px patches of the sample photos that
scikit-image, scikit-learn and matplotlib ship, labelled with the photo they come from.

Patches for training come from the left three quarters of each photo, test patches from the
right quarter, so the test measures something the model did not see. Nothing is downloaded.

    python examples/own_model/data.py OUT/data    # writes OUT/data/test/<class>/NNN.png

"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from cnntool.core.samples import photos

PATCH = 32
SHORT_SIDE = 128  # each photo is shrunk first, so a patch shows a recognizable part of it


def photo_classes() -> list[tuple[str, np.ndarray]]:
    """(class name, H×W×3 uint8 photo at SHORT_SIDE px) for every installed colour photo."""
    classes = []
    for path in photos():
        image = Image.open(path)
        if image.mode != "RGB":  # the grayscale camera man would be too easy to spot
            continue
        width, height = image.size
        scale = SHORT_SIDE / min(width, height)
        image = image.resize(
            (round(width * scale), round(height * scale)), Image.Resampling.BILINEAR
        )
        name = Path(path).stem.replace("_left", "")
        classes.append((name, np.asarray(image)))
    return sorted(classes)


def patches(split: str, per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(N×32×32×3 uint8 patches, N labels, class names) from the 'train' or 'test' part."""
    rng = np.random.default_rng(seed if split == "train" else seed + 1)
    images, labels, names = [], [], []
    for label, (name, photo) in enumerate(photo_classes()):
        names.append(name)
        height, width = photo.shape[:2]
        cut = width * 3 // 4
        low, high = (0, cut - PATCH) if split == "train" else (cut, width - PATCH)
        for _ in range(per_class):
            x = int(rng.integers(low, high + 1))
            y = int(rng.integers(0, height - PATCH + 1))
            images.append(photo[y : y + PATCH, x : x + PATCH])
            labels.append(label)
    return np.stack(images), np.array(labels), names


def write_test_folder(folder: str | Path, per_class: int = 25) -> list[str]:
    """The test patches as PNG files in one folder per class; returns the class names."""
    images, labels, names = patches("test", per_class)
    folder = Path(folder)
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        target = folder / names[label]
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(target / f"{index:04d}.png")
    return names


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "own-model-out/data")
    names = write_test_folder(out / "test")
    train, _, _ = patches("train", 400)
    pixels = train.reshape(-1, 3) / 255.0
    print(
        f"{out / 'test'}: {len(names)} classes ({', '.join(names)}); training patches' "
        f"mean {np.round(pixels.mean(0), 4).tolist()}, std {np.round(pixels.std(0), 4).tolist()}"
    )
