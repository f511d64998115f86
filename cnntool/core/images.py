"""Reading images of any common mode into RGB or grayscale PIL images."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from cnntool.errors import DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def to_standard_mode(image: Image.Image) -> Image.Image:
    """Convert 16-bit, 32-bit, palette, RGBA, CMYK… images to 8-bit 'RGB' or 'L'.

    16-bit grayscale ('I;16', 'I') is rescaled by its dtype range, not clipped, so a 16-bit
    scan keeps its contrast. Transparent pixels are composited on black.
    """
    mode = image.mode
    if mode in ("RGB", "L"):
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image)
        if mode.startswith("I;16"):
            scale = 65535.0
        elif mode == "I":
            scale = 65535.0 if array.max(initial=0) > 255 else 255.0
        else:  # float images: assume [0, 1]
            scale = 1.0
        array = np.clip(array.astype(np.float64) / scale, 0.0, 1.0)
        return Image.fromarray((array * 255.0 + 0.5).astype(np.uint8), mode="L")
    if mode == "1":
        return image.convert("L")
    if mode in ("LA", "La"):
        return _composite(image).convert("L")
    if mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
        return _composite(image) if image.mode == "RGBA" else image
    if mode in ("RGBA", "RGBa"):
        return _composite(image)
    return image.convert("RGB")


def _composite(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
    composited = Image.alpha_composite(background, rgba).convert("RGB")
    # A 4-channel model reads the file's own (straight) RGBA back: preprocessing.with_alpha.
    composited.info[STRAIGHT_RGBA] = rgba
    return composited


# Where a composited image keeps its original RGBA, for 4-channel models.
STRAIGHT_RGBA = "cnntool.straight_rgba"


def load_image(path: str | Path) -> Image.Image:
    """Open an image file fully (truncated files fail here, not later) in 'RGB' or 'L' mode."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            return to_standard_mode(image)
    except FileNotFoundError:
        raise DataError(f"image file {path} does not exist") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a folder, not an image file") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot read image {path}: {_reason(exc)}") from None


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:1].lower() + text[1:]


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES
