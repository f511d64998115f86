"""Pictures of a 2-D map of a dataset: a scatter plot by label, and image maps of thumbnails.

- `save_scatter`: one dot per image, coloured by label (cnntool.io.palette: the microscope map's
  colours), with a legend when there are 2 to 30 classes (none for one class: there is nothing
  to tell apart). matplotlib's object API with the Agg canvas, imported only here.
- `image_map`: each thumbnail pasted at its point's position (Karpathy's CNN t-SNE maps).
  Dense clusters overlap; the grid variant does not.
- `image_grid`: thumbnails snapped to a regular grid, one per cell, each cell used at most once,
  so that nothing overlaps. Points go to cells by an assignment that keeps neighbours together:
  an exact minimum-cost assignment (scipy's linear_sum_assignment, squared distance from point
  to cell centre) up to `EXACT_LIMIT` points; above that, the grid is halved recursively along
  its longer side, the points split by their position along it in proportion to the cells of
  each half, down to blocks of at most `EXACT_LIMIT` cells that are solved exactly.

Pixel budget: the grid has about √N × √N cells of `thumb_size(N)` pixels, 16 to 64 px, so that
the picture stays within `MAX_SIDE` (4096) px a side: a 10k-image map is 100 × 100 thumbnails of
40 px, still readable when zoomed. `image_map` uses the same canvas as the grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from cnntool.io.palette import UNKNOWN, class_rgb, rgb
from cnntool.io.writers import save_image

MAX_SIDE = 4096
MIN_THUMB, MAX_THUMB = 16, 64
EXACT_LIMIT = 1024  # linear_sum_assignment is O(n³): 1024 points take about a second
MAX_LEGEND_CLASSES = 30
_BACKGROUND = (255, 255, 255)
_UNLABELLED = rgb(UNKNOWN)


# ---------------------------------------------------------------------------------------------
# scatter plot


def scatter_figure(
    coords: np.ndarray,
    labels: np.ndarray | None,
    label_names: Sequence[str],
    *,
    title: str = "",
    seed: int = 0,
):
    """A matplotlib Figure (Agg) of the map; `figure.axes[0].get_legend()` is None when no
    legend is drawn. Points are drawn in a seeded random order, so no class hides another."""
    from cnntool.io.figures import new_figure
    from cnntool.io.untrusted import plot_text

    coords = np.asarray(coords, dtype=np.float32)
    count = len(coords)
    labels = np.full(count, -1) if labels is None else np.asarray(labels)
    classes = sorted(int(c) for c in np.unique(labels) if c >= 0)
    colour_of = {label: class_rgb(label) for label in classes}  # the microscope map's colours too
    point_colours = np.array([colour_of.get(int(lab), _UNLABELLED) for lab in labels]).reshape(
        -1, 3
    )
    order = np.random.default_rng(seed).permutation(count)
    figure = new_figure(width=8.0, height=8.0)
    axes = figure.add_subplot(1, 1, 1)
    size = float(np.clip(20000.0 / max(count, 1), 2.0, 30.0))
    axes.scatter(
        coords[order, 0],
        coords[order, 1],
        c=point_colours[order],
        s=size,
        linewidths=0,
        rasterized=count > 20000,
    )
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_aspect("equal", adjustable="datalim")
    if title:
        axes.set_title(plot_text(title), fontsize=10)
    groups = len(classes) + int((labels < 0).any())
    if groups >= 2 and len(classes) <= MAX_LEGEND_CLASSES:
        from matplotlib.lines import Line2D

        def name(label: int) -> str:
            return plot_text(label_names[label] if 0 <= label < len(label_names) else label)

        handles = [
            Line2D([], [], marker="o", linestyle="", color=colour_of[c], label=name(c))
            for c in classes
        ]
        if (labels < 0).any():
            handles.append(
                Line2D([], [], marker="o", linestyle="", color=_UNLABELLED, label="unlabelled")
            )
        axes.legend(
            handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False
        )
    figure.tight_layout()
    return figure


def save_scatter(
    path: str | Path,
    coords: np.ndarray,
    labels: np.ndarray | None,
    label_names: Sequence[str],
    *,
    title: str = "",
    seed: int = 0,
) -> bool:
    """Write the scatter PNG atomically; True if it has a legend."""
    from cnntool.io.figures import save_figure

    figure = scatter_figure(coords, labels, label_names, title=title, seed=seed)
    save_figure(figure, path)
    return figure.axes[0].get_legend() is not None


# ---------------------------------------------------------------------------------------------
# layouts


def normalized(coords: np.ndarray) -> np.ndarray:
    """Each axis scaled to [0, 1] (a constant axis becomes 0.5), float64."""
    coords = np.asarray(coords, dtype=np.float64)
    low, high = coords.min(axis=0), coords.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    return np.where(high > low, (coords - low) / span, 0.5)


def grid_shape(count: int) -> tuple[int, int]:
    """(columns, rows) of the squarest grid with at least `count` cells."""
    columns = max(1, math.ceil(math.sqrt(count)))
    return columns, max(1, math.ceil(count / columns))


def thumb_size(count: int) -> int:
    """Thumbnail pixels for `count` images: the grid fits MAX_SIDE, within 16–64 px."""
    columns, rows = grid_shape(count)
    return int(np.clip(MAX_SIDE // max(columns, rows), MIN_THUMB, MAX_THUMB))


@dataclass(frozen=True)
class GridLayout:
    """`cells[i]` = (row, column) of point i; every cell holds at most one point."""

    columns: int
    rows: int
    cells: np.ndarray  # (N, 2) int: row, column


def grid_layout(
    coords: np.ndarray, columns: int | None = None, rows: int | None = None
) -> GridLayout:
    """Snap points to a columns × rows grid (default: grid_shape) without sharing a cell,
    keeping each point as near its own position as the assignment can (see module docstring)."""
    points = normalized(coords)
    count = len(points)
    if columns is None or rows is None:
        columns, rows = grid_shape(count)
    if columns * rows < count:
        raise ValueError(f"a {columns}x{rows} grid has fewer cells than {count} points")
    cells = np.zeros((count, 2), dtype=np.int64)
    # map the point cloud onto the grid's own scale: x in columns, y in rows (y up = row 0 up)
    scaled = np.stack([points[:, 0] * columns, (1.0 - points[:, 1]) * rows], axis=1)
    _assign(scaled, np.arange(count), 0, columns, 0, rows, cells)
    return GridLayout(columns, rows, cells)


def _assign(
    scaled: np.ndarray,
    which: np.ndarray,
    col0: int,
    col1: int,
    row0: int,
    row1: int,
    cells: np.ndarray,
) -> None:
    """Give the points `which` distinct cells of the block [col0, col1) × [row0, row1)."""
    width, height = col1 - col0, row1 - row0
    if len(which) == 0:
        return
    if width * height <= EXACT_LIMIT:
        _assign_exactly(scaled, which, col0, col1, row0, row1, cells)
        return
    # halve the longer side; the points split by their position along it, each half getting
    # points in proportion to its cells (never more than it has)
    axis = 0 if width >= height else 1
    low_cells = (width // 2) * height if axis == 0 else width * (height // 2)
    high_cells = width * height - low_cells
    take = int(round(len(which) * low_cells / (width * height)))
    take = min(max(take, len(which) - high_cells), low_cells)
    order = which[np.argsort(scaled[which, axis], kind="stable")]
    low, high = order[:take], order[take:]
    if axis == 0:
        middle = col0 + width // 2
        _assign(scaled, low, col0, middle, row0, row1, cells)
        _assign(scaled, high, middle, col1, row0, row1, cells)
    else:
        middle = row0 + height // 2
        _assign(scaled, low, col0, col1, row0, middle, cells)
        _assign(scaled, high, col0, col1, middle, row1, cells)


def _assign_exactly(scaled, which, col0, col1, row0, row1, cells) -> None:
    """Minimum total squared distance from the points (rescaled to fill the block) to the
    centres of the block's cells: scipy's Hungarian-type solver, each cell used at most once."""
    from scipy.optimize import linear_sum_assignment

    rows, columns = np.mgrid[row0:row1, col0:col1]
    centres = np.stack([columns.ravel() + 0.5, rows.ravel() + 0.5], axis=1)
    points = scaled[which]
    if len(which) > 1:  # stretch the points over the block, so that its corners get used too
        low, high = points.min(axis=0), points.max(axis=0)
        span = np.where(high > low, high - low, 1.0)
        points = np.array([col0, row0]) + (points - low) / span * np.array(
            [col1 - col0, row1 - row0]
        )
    cost = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
    chosen_points, chosen_cells = linear_sum_assignment(cost)
    cells[which[chosen_points], 0] = rows.ravel()[chosen_cells]
    cells[which[chosen_points], 1] = columns.ravel()[chosen_cells]


# ---------------------------------------------------------------------------------------------
# thumbnails


def thumbnail(image: Image.Image, size: int, background=_BACKGROUND) -> Image.Image:
    """The image fitted into size × size (aspect kept), centred on the background."""
    image = ImageOps.contain(image.convert("RGB"), (size, size), method=Image.Resampling.BICUBIC)
    tile = Image.new("RGB", (size, size), background)
    tile.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
    return tile


def background_colour(load: Callable[[int], Image.Image], count: int, sample: int = 32):
    """The median corner colour of the first `sample` images: black for MNIST digits, so that
    empty grid cells and letterboxing do not show as white holes; white when unsure."""
    corners = []
    for i in range(min(count, sample)):
        image = load(i).convert("RGB")
        width, height = image.size
        corners += [image.getpixel((x, y)) for x in (0, width - 1) for y in (0, height - 1)]
    if not corners:
        return _BACKGROUND
    return tuple(int(v) for v in np.median(np.array(corners), axis=0))


def image_grid(
    coords: np.ndarray, load: Callable[[int], Image.Image], *, thumb: int | None = None
) -> tuple[Image.Image, GridLayout]:
    """Thumbnails of point i (`load(i)`) on the grid cells of `grid_layout`; and the layout."""
    layout = grid_layout(coords)
    size = thumb or thumb_size(len(coords))
    background = background_colour(load, len(coords))
    canvas = Image.new("RGB", (layout.columns * size, layout.rows * size), background)
    for i, (row, column) in enumerate(layout.cells):
        canvas.paste(thumbnail(load(i), size, background), (int(column) * size, int(row) * size))
    return canvas, layout


def image_map(
    coords: np.ndarray, load: Callable[[int], Image.Image], *, thumb: int | None = None
) -> Image.Image:
    """Thumbnails pasted at their points' positions (y up), on the canvas the grid would use;
    later points are drawn over earlier ones."""
    count = len(coords)
    size = thumb or thumb_size(count)
    columns, rows = grid_shape(count)
    width, height = columns * size, rows * size
    background = background_colour(load, count)
    canvas = Image.new("RGB", (width, height), background)
    points = normalized(coords)
    xs = np.rint(points[:, 0] * (width - size)).astype(int)
    ys = np.rint((1.0 - points[:, 1]) * (height - size)).astype(int)
    for i in range(count):
        canvas.paste(thumbnail(load(i), size, background), (int(xs[i]), int(ys[i])))
    return canvas


def save_image_grid(path, coords, load, *, thumb: int | None = None) -> GridLayout:
    picture, layout = image_grid(coords, load, thumb=thumb)
    save_image(picture, path)
    return layout


def save_image_map(path, coords, load, *, thumb: int | None = None) -> None:
    save_image(image_map(coords, load, thumb=thumb), path)


def sampled_rows(count: int, max_images: int, seed: int) -> np.ndarray:
    """The rows an image map shows: all of them, or a seeded sample of `max_images`."""
    rows = np.arange(count)
    if count > max_images:
        rows = np.sort(np.random.default_rng(seed).choice(count, size=max_images, replace=False))
    return rows


def check_thumb(count: int, thumb: int | None) -> None:
    """Refuse a thumbnail size that would make a picture too large to save."""
    if thumb:
        side = max(grid_shape(count)) * thumb
        if side > 4 * MAX_SIDE:
            from cnntool.errors import CnnToolError

            raise CnnToolError(
                f"{count} thumbnails of {thumb} px make a picture {side} px wide; "
                "use a smaller --thumb or --max-images"
            )


def tolerant(load: Callable[[int], Image.Image], failed: list) -> Callable[[int], Image.Image]:
    """A loader that never stops a map for one unreadable image: a gray tile instead, and the
    reason appended to `failed`."""
    from cnntool.errors import CnnToolError

    def load_or_gray(row: int) -> Image.Image:
        try:
            return load(row)
        except CnnToolError as exc:
            failed.append(str(exc))
            return Image.new("RGB", (8, 8), (128, 128, 128))

    return load_or_gray


def save_image_maps(
    coords: np.ndarray,
    load: Callable[[int], Image.Image],
    *,
    image_map: str | Path | None = None,
    image_grid: str | Path | None = None,
    thumb: int | None = None,
    max_images: int = 10_000,
    seed: int = 0,
) -> tuple[int, list[str]]:
    """The image map and/or grid of a 2-D map's images (a seeded sample of `max_images` when
    there are more); an unreadable image is a gray tile. Returns (images shown, the reasons of
    the unreadable ones)."""
    rows = sampled_rows(len(coords), max_images, seed)
    check_thumb(len(rows), thumb)
    failed: list[str] = []
    load_or_gray = tolerant(load, failed)
    for path, save in ((image_map, save_image_map), (image_grid, save_image_grid)):
        if path:
            save(path, coords[rows], lambda i: load_or_gray(int(rows[i])), thumb=thumb)
    return len(rows), failed


class LazyImages:
    """`count` images loaded only when indexed (`load(i)`): thumbnails for a sprite or an atlas
    without holding the whole data set in memory."""

    def __init__(self, load: Callable[[int], Image.Image], count: int):
        self.load, self.count = load, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Image.Image:
        if not 0 <= index < self.count:
            raise IndexError(index)
        return self.load(index)
