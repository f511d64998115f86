"""Image grids: tiles in rows with gaps and a label under each, colormaps, transparency.

Drawn with PIL in io.figure_style's look (DejaVu Sans, frames, gaps). Tiles are upscaled with
nearest neighbour so that a 3x3 kernel stays visibly 3x3.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cnntool.io.figure_style import FigureStyle, fitted, text_width
from cnntool.io.figures import to_uint8
from cnntool.io.writers import save_image

_BACKGROUND = (255, 255, 255)


def symmetric_scale(array: np.ndarray, limit: float | None = None) -> np.ndarray:
    """Signed values -> [0, 1] with 0 at mid-gray: x / (2·max|x|) + 0.5 (filters)."""
    limit = float(np.abs(array).max()) if limit is None else limit
    return (
        np.full_like(array, 0.5, dtype=np.float32)
        if limit == 0
        else np.clip(array / (2 * limit) + 0.5, 0, 1).astype(np.float32)
    )


def minmax_scale(array: np.ndarray) -> np.ndarray:
    """Values -> [0, 1] by min and max (feature maps; a constant map becomes 0)."""
    low, high = float(array.min()), float(array.max())
    return (
        np.zeros_like(array, dtype=np.float32)
        if high <= low
        else ((array - low) / (high - low)).astype(np.float32)
    )


def to_image(tile) -> Image.Image:
    """A tile: a PIL image, or [0, 1] floats (H, W) gray or (H, W, 3) RGB."""
    if isinstance(tile, Image.Image):
        return tile.convert("RGB")
    return Image.fromarray(to_uint8(tile)).convert("RGB")


def grid(
    tiles: Sequence,
    labels: Sequence[str] | None = None,
    *,
    columns: int | None = None,
    tile_size: int | None = None,
    title: str | None = None,
    border: tuple[int, int, int] | None = None,
    style: FigureStyle | None = None,
    fit_labels: bool = False,
) -> Image.Image:
    """Tiles in a grid, each scaled to `tile_size` px at 1× (times `style.scale`) on its longer
    side (nearest neighbour; default: the largest tile's size, unscaled) in cells as wide and
    tall as the largest scaled tile (square tiles: square cells), a label under each.
    Default columns: a grid about as wide as tall. A tile None is an empty cell (the layout
    stays regular); `border` draws a 1-px frame of that colour on the edge of each cell with a
    tile (the gaps between cells stay background), else `style`'s grey frame goes just outside
    each tile (never over its pixels).

    A label may have several lines ("\n"); every cell gets the label row of the longest. A line
    wider than its cell is cut with '…', unless `fit_labels`: then the cells widen to the
    widest line, so that no label is cut. `style` (io.figure_style.FigureStyle, default 1×)
    gives the font, gaps and title row."""
    style = style or FigureStyle()
    images = [None if t is None else to_image(t) for t in tiles]
    if not any(im is not None for im in images):
        raise ValueError("a grid needs at least one tile")
    size = (
        tile_size * style.scale
        if tile_size
        else max(max(im.size) for im in images if im is not None)
    )
    shown = [None if image is None else _scaled(image, size) for image in images]
    gap, font, title_font = style.gap, style.label_font, style.title_font
    lines = [str(label).split("\n") for label in labels] if labels else []
    cell_w = max(im.width for im in shown if im is not None)
    if fit_labels and lines:
        cell_w = max([cell_w] + [text_width(line, font) + 2 for text in lines for line in text])
    cell_h = max(im.height for im in shown if im is not None)
    columns = columns or max(1, math.ceil(math.sqrt(len(images) * cell_h / cell_w) - 1e-9))
    rows = math.ceil(len(images) / columns)
    label_h = style.label_height * max((len(text) for text in lines), default=0)
    title_h = style.title_height if title else 0
    width = columns * (cell_w + gap) + gap
    if title:  # never clip the title
        width = max(width, text_width(title, title_font) + 2 * gap)
    height = title_h + rows * (cell_h + label_h + gap) + gap
    canvas = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((gap, style.px(3)), title, fill=(0, 0, 0), font=title_font)
    for n, image in enumerate(shown):
        row, column = divmod(n, columns)
        x = gap + column * (cell_w + gap)
        y = title_h + gap + row * (cell_h + label_h + gap)
        if image is not None:
            left, top = x + (cell_w - image.width) // 2, y + (cell_h - image.height) // 2
            canvas.paste(image, (left, top))
            if border is not None:
                draw.rectangle((x, y, x + cell_w - 1, y + cell_h - 1), outline=border)
            else:
                draw.rectangle(
                    (left - 1, top - 1, left + image.width, top + image.height), outline=style.frame
                )
        for k, line in enumerate(lines[n] if lines else []):
            draw.text(
                (x + cell_w // 2, y + cell_h + style.px(2) + k * style.label_height),
                fitted(line, cell_w, font),
                fill=(0, 0, 0),
                font=font,
                anchor="mt",
            )
    return canvas


def _scaled(image: Image.Image, size: int) -> Image.Image:
    scale = size / max(image.size)
    if scale == 1:
        return image
    return image.resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))),
        Image.Resampling.NEAREST,
    )


def over_checkerboard(image: Image.Image, alpha: np.ndarray, square: int = 8) -> Image.Image:
    """`image` with `alpha` (H×W in [0, 1]) as its opacity over a light checkerboard, the way
    MACO shows its transparency maps: where alpha is 0 only the board shows."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    h, w = rgb.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    board = np.where(((yy // square) + (xx // square)) % 2 == 0, 235.0, 190.0)[..., None]
    a = np.clip(np.asarray(alpha, dtype=np.float32), 0, 1)[..., None]
    return Image.fromarray(np.rint(a * rgb + (1 - a) * board).astype(np.uint8))


def quantile_scale(array: np.ndarray, quantile: float = 0.99) -> np.ndarray:
    """Non-negative values -> [0, 1], with the `quantile` (and all above it) at 1: a few
    extreme values do not turn the rest dark (importance maps)."""
    top = float(np.quantile(array, quantile))
    return (
        np.zeros_like(array, dtype=np.float32)
        if top <= 0
        else np.clip(array / top, 0, 1).astype(np.float32)
    )


def side_by_side(images: Sequence[Image.Image], gap: int = 8) -> Image.Image:
    """Images in one row, tops aligned (e.g. the input beside its feature maps)."""
    width = sum(im.width for im in images) + gap * (len(images) - 1)
    canvas = Image.new("RGB", (width, max(im.height for im in images)), _BACKGROUND)
    x = 0
    for image in images:
        canvas.paste(image.convert("RGB"), (x, 0))
        x += image.width + gap
    return canvas


def stacked(
    images: Sequence[Image.Image],
    gap: int = 8,
    labels: Sequence[str] | None = None,
    style: FigureStyle | None = None,
) -> Image.Image:
    """Images in one column, left aligned (e.g. one row of panels per unit), each under its
    label when `labels` are given (in `style`'s font, default 1×)."""
    style = style or FigureStyle()
    label_h = style.label_height if labels else 0
    height = sum(im.height + label_h for im in images) + gap * (len(images) - 1)
    width = max(im.width for im in images)
    canvas = Image.new("RGB", (width, height), _BACKGROUND)
    draw, font = ImageDraw.Draw(canvas), style.label_font
    y = 0
    for n, image in enumerate(images):
        if labels:
            draw.text((0, y), fitted(str(labels[n]), width, font), fill=(0, 0, 0), font=font)
        canvas.paste(image.convert("RGB"), (0, y + label_h))
        y += image.height + label_h + gap
    return canvas


def save_grid(path: str | Path, *args, **kwargs) -> None:
    """grid(...) written atomically."""
    save_image(grid(*args, **kwargs), path)
