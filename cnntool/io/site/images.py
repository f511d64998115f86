"""The images of a microscope site: JPEG patches, downscaled sources, sprite atlases.

Everything is JPEG (small; the site holds thousands of images) except what must stay exact
(filters, written by the scan as PNG). Writes are atomic, like every cnntool output.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from cnntool.io.image_map import background_colour, thumbnail
from cnntool.io.site.model import Atlas
from cnntool.io.writers import atomic_path

MAX_ATLAS_SIDE = 4096  # browsers and GPUs handle textures up to this size everywhere
JPEG_QUALITY = 88
PATCH_MIN_SIDE = 64  # tiny receptive fields (3 px in LeNet's conv1) are enlarged to this
PATCH_MAX_SIDE = 192
SOURCE_MAX_SIDE = 320


def save_jpeg(image: Image.Image, path: str | Path, quality: int = JPEG_QUALITY) -> None:
    """Save as an RGB JPEG, atomically."""
    with atomic_path(path) as temp:
        image.convert("RGB").save(temp, format="JPEG", quality=quality)


def fit(image: Image.Image, min_side: int, max_side: int) -> Image.Image:
    """Enlarged with nearest neighbour (pixels stay crisp) until the longer side reaches
    `min_side`, or reduced (bicubic) to at most `max_side`."""
    longest = max(image.size)
    if longest < min_side:
        factor = math.ceil(min_side / longest)
        return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
    if longest > max_side:
        scale = max_side / longest
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        return image.resize(size, Image.Resampling.BICUBIC)
    return image


def save_patch(
    original: Image.Image,
    box: tuple[int, int, int, int],
    path: str | Path,
    *,
    min_side: int = PATCH_MIN_SIDE,
    max_side: int = PATCH_MAX_SIDE,
) -> None:
    """The receptive-field crop `box` (x0, y0, x1, y1, may reach past the image: zero-padded)
    of the original image, as a JPEG."""
    save_jpeg(fit(original.convert("RGB").crop(box), min_side, max_side), path)


def save_source(
    original: Image.Image, path: str | Path, max_side: int = SOURCE_MAX_SIDE
) -> tuple[int, int]:
    """A downscaled copy of a whole source image (the page draws the box over it); returns the
    original's (width, height), which the box's pixels refer to."""
    save_jpeg(fit(original.convert("RGB"), min(max_side, 96), max_side), path)
    return original.size


ATLAS_PIXEL_BUDGET = (
    4 * MAX_ATLAS_SIDE * MAX_ATLAS_SIDE
)  # four full sheets: 256 MB decoded in a browser
MIN_THUMB, MAX_THUMB = 16, 64


def atlas_thumb_size(count: int) -> int:
    """A thumbnail size for `count` images: 64 px while they fit in four 4096-px sheets (16k
    images), smaller beyond (100k images: 25 px), never under 16 px; a browser decodes every
    sheet of the map, so the total stays near four sheets."""
    if count <= 0:
        return MAX_THUMB
    return int(max(MIN_THUMB, min(MAX_THUMB, math.isqrt(ATLAS_PIXEL_BUDGET // count))))


def atlas_capacity(thumb_size: int, max_side: int = MAX_ATLAS_SIDE) -> int:
    """How many thumbnails of `thumb_size` px one atlas of at most `max_side` px holds."""
    columns = _atlas_columns(thumb_size, max_side)
    return columns * columns


def atlas_slot(index: int, thumb_size: int, max_side: int = MAX_ATLAS_SIDE) -> tuple[int, int]:
    """(atlas, cell) of thumbnail `index` as `write_atlases` lays them out."""
    return divmod(index, atlas_capacity(thumb_size, max_side))


def _atlas_columns(thumb_size: int, max_side: int) -> int:
    if not 1 <= thumb_size <= max_side:
        raise ValueError(f"thumbnails must be 1 to {max_side} px, not {thumb_size}")
    return max_side // thumb_size


def write_atlases(
    folder: str | Path,
    thumbnails: Sequence[Image.Image],
    thumb_size: int,
    *,
    site_root: str | Path | None = None,
    prefix: str = "atlas",
    max_side: int = MAX_ATLAS_SIDE,
) -> list[Atlas]:
    """Pack `thumbnails` (PIL images of any size, in an indexable sequence: a lazy one that
    reads each image on demand is fine; each fitted into thumb_size², letterboxed in the
    images' own background colour) into JPEG sprite sheets of at most `max_side` px a side,
    row-major: thumbnail i is cell `atlas_slot(i)[1]` of atlas `atlas_slot(i)[0]`. The records'
    paths are relative to `site_root` (default: `folder`), with '/' separators."""
    folder = Path(folder)
    root = Path(site_root) if site_root is not None else folder
    columns = _atlas_columns(thumb_size, max_side)
    capacity = columns * columns
    background = background_colour(thumbnails.__getitem__, len(thumbnails))
    atlases = []
    for number, first in enumerate(range(0, len(thumbnails), capacity)):
        count = min(capacity, len(thumbnails) - first)
        rows = math.ceil(count / columns)
        width = min(count, columns) * thumb_size
        sheet = Image.new("RGB", (width, rows * thumb_size), background)
        for cell in range(count):
            tile = thumbnail(thumbnails[first + cell], thumb_size, background)
            sheet.paste(tile, ((cell % columns) * thumb_size, (cell // columns) * thumb_size))
        path = folder / f"{prefix}_{number:03d}.jpg"
        save_jpeg(sheet, path)
        atlases.append(
            Atlas(
                image=Path(os.path.relpath(path, root)).as_posix(),
                thumb=thumb_size,
                columns=columns,
                count=count,
            )
        )
    return atlases
