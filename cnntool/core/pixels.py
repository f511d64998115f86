"""Pixel-level helpers that image decoding (images.py) and preprocessing (preprocessing.py) share:
the resampling filters by name, an image in the mode a model takes, and the straight RGBA that
a composited image keeps for 4-channel models. Depends on nothing else in cnntool, so both can
import it at the top without importing each other.
"""

from __future__ import annotations

from PIL import Image

PIL_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}

# Where a composited image (images.to_standard_mode) keeps its original RGBA, for 4-channel models.
STRAIGHT_RGBA = "cnntool.straight_rgba"


def in_mode(image: Image.Image, mode: str) -> Image.Image:
    """`image` in PIL mode 'L', 'RGB' or 'RGBA' (see with_alpha)."""
    if mode == "RGBA":
        return with_alpha(image)
    return image if image.mode == mode else image.convert(mode)


def with_alpha(image: Image.Image) -> Image.Image:
    """The image as 'RGBA' for a 4-channel model: RGB plus the file's own alpha plane when it
    had one (RGBA/LA PNG, TIFF with alpha, transparent palette: images.py keeps the straight
    RGBA beside the black-composited RGB it returns), else an opaque one."""
    straight = image.info.get(STRAIGHT_RGBA)
    if straight is not None and straight.size == image.size:
        return straight
    return image if image.mode == "RGBA" else image.convert("RGBA")


def crop_padded(image: Image.Image, left: int, top: int, width: int, height: int) -> Image.Image:
    """Crop a box that may extend past the image; the outside is filled with zeros (black)."""
    return image.crop((left, top, left + width, top + height))
