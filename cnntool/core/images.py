"""Reading images of any common mode into RGB or grayscale PIL images, safely.

Only regular files are opened (a FIFO would block a scan forever), and an image whose header
claims more than `max_pixels` pixels (default: Pillow's limit, MAX_IMAGE_PIXELS) is refused
before anything is decoded, with a DataError sentence instead of Pillow's
DecompressionBombError or its warning on stderr.

`load_pixels` decodes only as much as the model needs: a JPEG much larger than the model's
input is decoded at a reduced DCT scale (Pillow's `draft`), and only the center-crop region is
resampled (`resize(box=...)`), so a 1×5000 strip never becomes a 256×1,280,000 image on the
way to 224×224. The original size is kept for mapping boxes back.

Every image is turned upright by its EXIF orientation (a phone's portrait photo is stored
sideways with a tag that says so), here and nowhere else: sizes, boxes, crops and thumbnails
are all in the upright image's pixels. The bounded decode asks the JPEG decoder for the stored
(sideways) size, then turns the reduced image.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import stat
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cnntool.core.pixels import PIL_FILTERS, STRAIGHT_RGBA, in_mode
from cnntool.errors import DataError, os_error_reason

if TYPE_CHECKING:
    import torch

    from cnntool.core.preprocessing import Preprocessing

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}

# What Pillow raises on broken or hostile files (besides OSError for truncated data).
_DECODE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    struct.error,
    Image.DecompressionBombError,
    MemoryError,
)

# Pillow reads its bomb limit from a module global at every open. We switch its own check off
# for the duration of one open-and-decode (and apply ours, with the caller's limit), under a
# lock so that two of our threads never race on the global, and put the value back after.
_PILLOW_LIMIT_LOCK = threading.Lock()
_switched_off: list = []  # Pillow's limit while our open has it switched off


def _after_fork_in_child() -> None:
    """A process forked (DataLoader workers) while another thread was inside an open would
    inherit a held lock and Pillow's check switched off: give the child a fresh lock and the
    real limit back."""
    global _PILLOW_LIMIT_LOCK
    _PILLOW_LIMIT_LOCK = threading.Lock()
    if _switched_off:
        Image.MAX_IMAGE_PIXELS = _switched_off.pop()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
# A JPEG is decoded at a reduced DCT scale only down to twice the resized size, so that the
# resize filter still does real antialiasing: on the sample photos (upscaled 2.5-8× and saved
# at quality 90) that keeps the model input within 0.3 gray levels on average (at most 9) of a
# full decode, where decoding down to 1× the resized size drifts 0.8 on average (at most 43).
DRAFT_MARGIN = 2


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
        # NaN (float TIFFs) becomes black: a NaN cast to uint8 is undefined (and numpy warns)
        array = np.clip(np.nan_to_num(array.astype(np.float64) / scale, nan=0.0), 0.0, 1.0)
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
    # A 4-channel model reads the file's own (straight) RGBA back: pixels.with_alpha.
    composited.info[STRAIGHT_RGBA] = rgba
    return composited


def load_image(path: str | Path, max_pixels: int | None = None) -> Image.Image:
    """Open an image file fully (truncated files fail here, not later) in 'RGB' or 'L' mode.

    `max_pixels`: refuse images whose header claims more pixels (None: Pillow's limit).
    Every failure is a DataError sentence.
    """
    with opened_image(path, max_pixels) as image:
        image.load()
        return to_standard_mode(upright(image, _orientation(image)))


def load_pixels(
    path: str | Path,
    preprocessing: Preprocessing,
    *,
    max_pixels: int | None = None,
    draft: bool = True,
) -> tuple[torch.Tensor, tuple[int, int]]:
    """The model input in [0, 1] (C, H, W) for an image file, and the file's original (w, h).

    `preprocessing.to_pixels(load_image(path))`, decoded only as far as needed: with `draft`, a
    JPEG at least 4 times the resized size (both sides) is decoded at 1/2, 1/4 or 1/8 scale,
    never below twice the resized size (see DRAFT_MARGIN for how close that stays); without
    it the result is the same to the bit (see crop_pixels for huge resized sizes).
    """
    with opened_image(path, max_pixels) as image:
        orientation = _orientation(image)
        sideways = orientation in _SIDEWAYS
        original = image.size[::-1] if sideways else image.size  # upright (w, h)
        scale = _draft(image, preprocessing, sideways) if draft else 1.0
        image.load()
        image = upright(image, orientation)
        return crop_pixels(to_standard_mode(image), preprocessing, original, scale), original


# EXIF orientations (tag 0x0112) that store the image turned by 90° (width and height swapped)
_SIDEWAYS = {5, 6, 7, 8}
_ORIENTATION_TAG = 0x0112


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation of an opened image (1: upright, also when there is none or it is
    unreadable). A JPEG's is read from its header, before anything is decoded."""
    try:
        value = image.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001  (a broken EXIF block is not a broken image)
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def upright(image: Image.Image, orientation: int | None = None) -> Image.Image:
    """`image` (loaded) turned upright by its EXIF `orientation` (read from it when None):
    PIL's ImageOps.exif_transpose, skipped (no copy) for an upright image."""
    if orientation is None:
        orientation = _orientation(image)
    if orientation == 1:
        return image
    turned = ImageOps.exif_transpose(image)
    return image if turned is None else turned


def _draft(image: Image.Image, preprocessing: Preprocessing, sideways: bool = False) -> float:
    """Ask a JPEG decoder for a reduced DCT scale that leaves at least DRAFT_MARGIN times the
    resized size; return how many original pixels one decoded pixel spans (1.0 when nothing was
    reduced). `sideways`: the file stores the image turned by 90° (EXIF orientation 5-8), so the
    decoder is asked for the resized size turned the same way."""
    width, height = image.size[::-1] if sideways else image.size  # upright
    resized_width, resized_height = preprocessing.resized_size(width, height)
    if (
        image.format != "JPEG"
        or width < 2 * DRAFT_MARGIN * resized_width
        or height < 2 * DRAFT_MARGIN * resized_height
    ):  # 1/2 scale at least, or nothing
        return 1.0
    stored_width = image.size[0]
    wanted = (DRAFT_MARGIN * resized_width, DRAFT_MARGIN * resized_height)
    drafted = image.draft(image.mode, wanted[::-1] if sideways else wanted)
    if drafted is None:  # not a single-tile baseline image, or already drafted
        return 1.0
    return stored_width / drafted[1][2]  # the same along either side


@contextlib.contextmanager
def opened_image(path: str | Path, max_pixels: int | None = None) -> Iterator[Image.Image]:
    """A lazily opened image (header read, pixels not yet decoded) of a regular file within
    `max_pixels`; decode it inside the block. Any failure, then or inside, is a DataError."""
    path = Path(path)
    with _regular_file(path) as handle, _PILLOW_LIMIT_LOCK:
        pillow_limit = Image.MAX_IMAGE_PIXELS
        limit = pillow_limit if max_pixels is None else max_pixels
        _switched_off.append(pillow_limit)
        Image.MAX_IMAGE_PIXELS = None
        try:
            with Image.open(handle) as image:
                _check_size(path, image.size, limit)
                yield image
        except DataError:
            raise
        except _DECODE_ERRORS as exc:
            raise DataError(f"cannot read image {path}: {os_error_reason(exc)}") from None
        finally:
            Image.MAX_IMAGE_PIXELS = pillow_limit
            _switched_off.clear()


def _check_size(path: Path, size: tuple[int, int], limit: int | None) -> None:
    width, height = size
    if limit is not None and width * height > limit:
        raise DataError(
            f"cannot read image {path}: its header claims {width}×{height} = "
            f"{width * height:,} pixels, more than the limit of {limit:,} "
            "(a decompression bomb?; --max-pixels raises the limit)"
        )


@contextlib.contextmanager
def _regular_file(path: Path) -> Iterator:
    """The file opened for reading, if it is a regular file (checked on the open descriptor,
    so nothing can swap it in between; O_NONBLOCK keeps a FIFO from blocking the open)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        if os.path.islink(path):
            raise DataError(f"cannot read image {path}: dangling symbolic link") from None
        raise DataError(f"image file {path} does not exist") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a folder, not an image file") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte, a name the encoding refuses
        raise DataError(f"cannot read image {path}: {unopenable_reason(exc)}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise DataError(f"{path} is a folder, not an image file")
        if not stat.S_ISREG(mode):
            raise DataError(f"cannot read image {path}: not a regular file ({file_kind(mode)})")
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with handle:
        yield handle


def file_kind(mode: int) -> str:
    """'a FIFO', 'a socket', … for an st_mode that is not a regular file."""
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a folder"),
    ):
        if test(mode):
            return name
    return "not a plain file"


def unopenable_reason(exc: BaseException, link: bool = False) -> str:
    """Why a file could not be opened or listed, in a few lower-case words: the one wording of
    every name a scan skips (ENAMETOOLONG, ELOOP, EACCES, a NUL byte, an encoding error…;
    `link`: the entry is a symbolic link, so ENOENT means it dangles)."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOENT and link:
        return "dangling symbolic link"
    if isinstance(exc, UnicodeError):
        return "the name is not valid in the file system's encoding"
    if isinstance(exc, ValueError) and "null" in str(exc).lower():  # os: 'embedded null byte'
        return "the name contains a NUL byte"
    return os_error_reason(exc)


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


# ---------------------------------------------------------------------------------------------
# The model's region of an image

# Up to this many pixels, the whole image is resized and then cropped: exactly what
# Preprocessing.to_pixels (and torchvision) compute. Beyond it (a 1×5000 strip resizes to
# 256×1,280,000), only a window around the crop is resampled, one axis at a time.
FULL_RESIZE_PIXELS = 4 * 2**20
# How far (in output pixels) Pillow's filters reach on either side of a sample point.
_SUPPORT = {"nearest": 0.5, "bilinear": 1.0, "bicubic": 2.0}


def crop_pixels(
    image: Image.Image,
    preprocessing: Preprocessing,
    original: tuple[int, int] | None = None,
    scale: float = 1.0,
    *,
    full_resize_pixels: int = FULL_RESIZE_PIXELS,
) -> torch.Tensor:
    """`preprocessing.to_pixels(image)` ([0, 1], C×H×W), resampling little more than the crop.

    `image` may be a reduced decode (draft) of an original of size `original` (w, h), one of
    its pixels spanning `scale` original pixels; the geometry is that of the original. When the
    resized image would have more than `full_resize_pixels`, only the crop's window is
    resampled (within one gray level of a full resize: Pillow takes that box in float32).
    """
    import torch

    width, height = original or image.size
    image = in_mode(image, preprocessing.pil_mode)
    resized = preprocessing.resized_size(width, height)
    left, top = preprocessing.crop_offset(width, height)
    crop_height, crop_width = preprocessing.crop
    box = (left, top, left + crop_width, top + crop_height)  # in resized pixels
    resample = PIL_FILTERS[preprocessing.interpolation]
    if resized[0] * resized[1] <= full_resize_pixels:
        if resized != image.size or scale != 1.0:
            image = image.resize(resized, resample, box=(0, 0, width / scale, height / scale))
        region = image.crop(box)  # Pillow fills the part outside the image with zeros
    else:
        region = _resample_window(
            image,
            resized,
            box,
            resample,
            _SUPPORT[preprocessing.interpolation],
            (width / scale, height / scale),
        )
    array = np.asarray(region, dtype=np.float32) / 255.0
    if array.ndim == 2:
        array = array[:, :, None]
    # channels first in numpy: a torch copy here would start its thread pool for one image
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def _resample_window(
    image: Image.Image,
    resized: tuple[int, int],
    box: tuple[int, int, int, int],
    resample,
    support: float,
    extent: tuple[float, float],
) -> Image.Image:
    """The crop `box` (in resized pixels, possibly past the border) of `image` resized to
    `resized`, computing only the crop: horizontal pass, then vertical, as Pillow's full resize
    does, each on a window of the source that holds the filter's whole reach."""
    crop_width, crop_height = box[2] - box[0], box[3] - box[1]
    # the part of the crop that lies inside the resized image
    x0, y0 = max(box[0], 0), max(box[1], 0)
    x1, y1 = min(box[2], resized[0]), min(box[3], resized[1])
    canvas = Image.new(image.mode, (crop_width, crop_height))
    if x1 <= x0 or y1 <= y0:
        return canvas
    columns = _window(x0, x1, resized[0], extent[0], image.width, support)
    rows = _window(y0, y1, resized[1], extent[1], image.height, support)
    window = image.crop((columns[0], rows[0], columns[1], rows[1]))
    if resample == Image.Resampling.NEAREST:
        # the source pixel under each output pixel's center (Pillow steps there by repeated
        # addition, so at an exact pixel border it may take the neighbour)
        pick_x = _nearest(x0, x1, resized[0], extent[0], columns[0], window.width)
        pick_y = _nearest(y0, y1, resized[1], extent[1], rows[0], window.height)
        window = Image.fromarray(np.asarray(window)[pick_y][:, pick_x])
    else:
        # horizontal pass (box spans every row: Pillow skips the vertical pass), then vertical
        window = window.resize(
            (x1 - x0, window.height), resample, box=(columns[2], 0, columns[3], window.height)
        )
        window = window.resize(
            (x1 - x0, y1 - y0), resample, box=(0, rows[2], window.width, rows[3])
        )
    canvas.paste(window, (x0 - box[0], y0 - box[1]))
    return canvas


def _nearest(
    first: int, last: int, resized: int, extent: float, start: int, size: int
) -> np.ndarray:
    centers = (np.arange(first, last, dtype=np.float64) + 0.5) * (extent / resized)
    return np.clip(np.floor(centers).astype(np.int64) - start, 0, size - 1)


def _window(
    first: int, last: int, resized: int, extent: float, size: int, support: float
) -> tuple[int, int, float, float]:
    """Along one axis: the source pixels [start, stop) that output pixels [first, last) of a
    resize of `extent` source pixels to `resized` read, and where those outputs' span lies
    inside that window (start-relative source coordinates)."""
    step = extent / resized
    reach = support * max(step, 1.0) + 2  # a little more than the filter reaches
    start = max(0, math.floor(first * step - reach))
    stop = min(size, math.ceil(last * step + reach))
    return start, stop, first * step - start, last * step - start
