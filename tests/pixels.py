"""Figures judged by what they show: decoded pixels, non-blank regions, colours, drawn text.

A figure test should fail on a broken figure (blank, truncated, wrong data, wrong labels), so
the checks here read pixels, never only a file's existence or size:
- `png` decodes the whole file (a truncated PNG raises);
- `spread` is the largest standard deviation of a channel: 0 for a blank region;
- `find_styled_text` finds text drawn in io/figure_style's DejaVu Sans (grid labels, titles,
  colour-bar ticks), allowing for anti-aliasing;
- `find_plot_text` finds text drawn by matplotlib (titles, tick labels), allowing for the
  sub-pixel position matplotlib draws it at;
- `colour_mask` and `marks` find plotted marks by their colour.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

WHITE = (255, 255, 255)


def png(path: str | Path) -> np.ndarray:
    """The pixels of a PNG file as (H, W, 3) uint8 RGB, every byte decoded."""
    with Image.open(path) as image:
        assert image.format == "PNG", f"{path} is {image.format}, not PNG"
        image.load()  # raises on a truncated or corrupt file
        return np.asarray(image.convert("RGB"))


def spread(pixels: np.ndarray) -> float:
    """The largest standard deviation of a channel: 0 for a region of one colour, more where
    brightness or hue varies."""
    values = pixels.astype(np.float64).reshape(-1, pixels.shape[-1] if pixels.ndim == 3 else 1)
    return float(values.std(axis=0).max())


def colour_mask(pixels: np.ndarray, rgb, tolerance: int = 12) -> np.ndarray:
    """Where `pixels` are within `tolerance` of `rgb` in every channel."""
    return (np.abs(pixels.astype(np.int16) - np.array(rgb, dtype=np.int16)) <= tolerance).all(-1)


def marks(mask: np.ndarray, core: int = 5) -> list[tuple[float, float]]:
    """Centres (x, y) of the solid marks in `mask`, left to right: connected groups of pixels
    whose whole core×core neighbourhood is set (a marker's inside, not a thin line through it)."""
    from scipy import ndimage

    solid = ndimage.binary_erosion(mask, structure=np.ones((core, core), dtype=bool))
    labels, count = ndimage.label(solid)
    centres = ndimage.center_of_mass(solid, labels, range(1, count + 1))
    return sorted((float(x), float(y)) for y, x in centres)


def low_res(pixels: np.ndarray, size: int = 25) -> np.ndarray:
    """`pixels` averaged down to size×size (float): to compare pictures drawn at slightly
    different scales or offsets."""
    small = Image.fromarray(np.asarray(pixels, dtype=np.uint8)).resize(
        (size, size), Image.Resampling.BOX
    )
    return np.asarray(small, dtype=np.float64)


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of each run of True in a 1-D mask: e.g. the panels side by side in a
    figure, from the columns that hold anything but the background."""
    padded = np.concatenate([[False], np.asarray(mask, dtype=bool), [False]])
    edges = np.nonzero(np.diff(padded.astype(np.int8)))[0]
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def axes_frame(pixels: np.ndarray) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a matplotlib axes' frame: the columns and rows with the
    longest dark lines (its spines)."""
    dark = pixels.max(axis=-1) < 100
    columns, rows = dark.sum(axis=0), dark.sum(axis=1)
    left, right = np.nonzero(columns >= 0.9 * columns.max())[0][[0, -1]]
    top, bottom = np.nonzero(rows >= 0.9 * rows.max())[0][[0, -1]]
    return int(left), int(top), int(right), int(bottom)


def find(pixels: np.ndarray, pattern: np.ndarray, tolerance: int = 0) -> list[tuple[int, int]]:
    """Top-left corners (x, y) where `pattern` appears in `pixels`, every channel of every
    pixel within `tolerance`."""
    image, patch = np.asarray(pixels, dtype=np.int16), np.asarray(pattern, dtype=np.int16)
    (height, width), (h, w) = image.shape[:2], patch.shape[:2]
    if h > height or w > width:
        return []
    # Narrow the candidates with a few telling pixels (the darkest and the brightest), then
    # compare whole windows only there.
    brightness = patch.sum(axis=-1).ravel()
    order = np.argsort(brightness, kind="stable")
    anchors = list(
        zip(*np.unravel_index(np.concatenate([order[:6], order[-4:]]), (h, w)), strict=True)
    )
    y, x = anchors[0]
    first = np.abs(image[y : y + height - h + 1, x : x + width - w + 1] - patch[y, x]) <= tolerance
    ys, xs = np.nonzero(first.all(-1))
    for y, x in anchors[1:]:
        keep = (np.abs(image[ys + y, xs + x] - patch[y, x]) <= tolerance).all(-1)
        ys, xs = ys[keep], xs[keep]
    return [
        (int(x), int(y))
        for y, x in zip(ys, xs, strict=True)
        if np.abs(image[y : y + h, x : x + w] - patch).max() <= tolerance
    ]


def _ink(canvas: np.ndarray, background) -> np.ndarray:
    """`canvas` cropped to the pixels that differ from `background`."""
    ys, xs = np.nonzero((canvas != np.array(background, dtype=canvas.dtype)).any(-1))
    assert len(xs), "nothing was drawn"
    return canvas[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


_OFFSETS = [(dx / 8, dy / 4) for dy in range(4) for dx in range(8)]


@functools.cache
def _plot_texts(text: str, fontsize: float) -> tuple[np.ndarray, ...]:
    """`text` as matplotlib draws it at each sub-pixel offset of _OFFSETS, cropped to its
    ink: one figure with a row per offset, drawn once."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    row = int(3 * fontsize) + 8  # px per row: room for ascenders and descenders
    width, height = int(fontsize * len(text)) + 40, row * len(_OFFSETS)
    figure = Figure(figsize=(width / 100, height / 100), dpi=100)
    canvas = FigureCanvasAgg(figure)
    for n, (dx, dy) in enumerate(_OFFSETS):  # figure coordinates count from the bottom
        figure.text(
            (10 + dx) / width,
            (height - (n + 1) * row + row / 3 + dy) / height,
            text,
            fontsize=fontsize,
        )
    canvas.draw()
    drawn = np.asarray(canvas.buffer_rgba())[..., :3]
    return tuple(_ink(drawn[n * row : (n + 1) * row], WHITE) for n in range(len(_OFFSETS)))


def find_plot_text(
    pixels: np.ndarray, text: str, fontsize: float = 10, tolerance: int = 64
) -> tuple[int, int] | None:
    """Where matplotlib drew `text` (default font, black, `fontsize` points at 100 dpi) in
    `pixels`, or None. matplotlib places text at fractions of a pixel, which changes its
    anti-aliasing, so the text is rendered at 8×4 sub-pixel offsets and each is searched with
    `tolerance`: one wrong character leaves a difference of ~255 somewhere."""
    for pattern in _plot_texts(text, fontsize):
        hits = find(pixels, pattern, tolerance)
        if hits:
            return hits[0]
    return None


# io/grids.py's layout: gaps around cells, a label row under each cell (one line of label
# height per line of the longest label), a title row on top; cells as large as the largest
# (scaled) tile. The gap and row heights are the FigureStyle's (default 1×).


def _grid_rows(style, label_lines: int = 1) -> tuple[int, int, int]:
    """(gap, label row, title row) of a grid drawn in `style` (None: 1×)."""
    from cnntool.io.figure_style import FigureStyle

    style = style or FigureStyle()
    return style.gap, style.label_height * label_lines, style.title_height


def grid_cells(
    pixels: np.ndarray,
    cell: tuple[int, int],
    count: int,
    columns: int,
    *,
    labelled: bool = True,
    titled: bool = True,
    style=None,
    label_lines: int = 1,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first `count` cells of a grid image, row by row: (tile pixels, label-row pixels),
    for cells of `cell` = (width, height) px."""
    gap, label_row, title_row = _grid_rows(style, label_lines)
    width, height = cell
    label = label_row if labelled else 0
    top = (title_row if titled else 0) + gap
    cells = []
    for n in range(count):
        row, column = divmod(n, columns)
        x, y = gap + column * (width + gap), top + row * (height + label + gap)
        cells.append(
            (
                pixels[y : y + height, x : x + width],
                pixels[y + height : y + height + label, x : x + width],
            )
        )
    return cells


def grid_size(
    cell: tuple[int, int],
    count: int,
    columns: int,
    *,
    labelled: bool = True,
    titled: bool = True,
    style=None,
    label_lines: int = 1,
) -> tuple[int, int]:
    """(width, height) of a grid of `count` cells in `columns` (before a long title widens it)."""
    gap, label_row, title_row = _grid_rows(style, label_lines)
    rows = -(-count // columns)
    width = columns * (cell[0] + gap) + gap
    label = label_row if labelled else 0
    height = (title_row if titled else 0) + rows * (cell[1] + label + gap) + gap
    return width, height


# io/figure_style.py's figures (filters, activations, deconv): DejaVu Sans, frames, colour bars


def styled_text_pixels(text: str, size: int, bold: bool = False) -> np.ndarray:
    """`text` as io/figure_style draws it (DejaVu Sans at `size` px, black on white), cropped
    to its ink."""
    from cnntool.io.figure_style import font

    f = font(size, bold)
    width = int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(text, font=f)) + 8
    canvas = Image.new("RGB", (width, 3 * size), WHITE)
    ImageDraw.Draw(canvas).text((4, 4), text, fill=(0, 0, 0), font=f)
    return _ink(np.asarray(canvas), WHITE)


def find_styled_text(
    pixels: np.ndarray, text: str, size: int, bold: bool = False
) -> list[tuple[int, int]]:
    """Where `text` was drawn in DejaVu Sans at `size` px (anti-aliasing allowed for)."""
    return find(pixels, styled_text_pixels(text, size, bold), tolerance=40)


def ink_height(pixels: np.ndarray) -> int:
    """Rows between the first and last with a dark pixel (< 100 in every channel)."""
    rows = np.nonzero((pixels.max(axis=-1) < 100).any(axis=1))[0]
    return int(rows.max() - rows.min() + 1) if rows.size else 0


def colour_bars(
    pixels: np.ndarray, cmap: str, min_length: int = 60, tolerance: int = 4
) -> list[tuple[int, int, int]]:
    """Vertical colour bars of matplotlib colour map `cmap` in `pixels`: (x, top, bottom) of
    each column holding a run of at least `min_length` px whose colours all lie on the map,
    stepping monotonically from its top end (≥ 97% of the map) down to its bottom end
    (≤ 3%) through many levels."""
    from matplotlib import colormaps

    lut = np.rint(colormaps[cmap](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.int32)
    # the nearest map level of each distinct colour, once (a figure has few): per pixel, it
    # took seconds per figure
    rgb = pixels[..., :3].astype(np.int32)
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    keys, inverse = np.unique(packed, return_inverse=True)
    colours = np.stack([keys >> 16, (keys >> 8) & 255, keys & 255], axis=1)
    distance = np.abs(colours[:, None, :] - lut[None]).max(axis=-1)
    on_map = distance.min(axis=1) <= tolerance
    if cmap == "gray":  # a gray level is also on the map where the background is white
        on_map &= colours.max(axis=1) - colours.min(axis=1) <= 2
    inverse = inverse.reshape(packed.shape)
    levels, near = distance.argmin(axis=1)[inverse], on_map[inverse]
    found = []
    for x in range(pixels.shape[1]):
        index, close = levels[:, x], near[:, x]
        # a bar changes by small steps: a jump (the frame, the background) ends a run
        steps = np.abs(np.diff(index, prepend=index[0])) <= 12
        for start, stop in runs(close & steps):
            if stop - start < min_length:
                continue
            values = index[start:stop]
            smooth = len(np.unique(values)) >= 0.5 * min(
                stop - start, 256
            )  # a ramp, not two blocks
            if values[0] >= 248 and values[-1] <= 8 and (np.diff(values) <= 0).all() and smooth:
                found.append((x, start, stop))
    return found
