"""What `compare` writes: one record per pair of layers, the best match of each layer (a table
for stderr), and the CKA heat map (PIL, io.figure_style's look).

The heat map: one panel per kernel, rows the layers of MODEL_A (first layer on top), columns
those of MODEL_B (first on the left), each cell coloured on one fixed scale from 0 to 1
(viridis, the colour bar beside it) with its value written in it (2 decimals; "–" where CKA is
undefined: a layer that does not vary over DATA, drawn grey). A red frame marks the best match
of each row (against itself: the best other layer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from cnntool.io.figure_style import (
    BACKGROUND,
    FRAME,
    INK,
    SEQUENTIAL,
    colorbar,
    colorize,
    fitted,
    style_for,
    text_width,
)
from cnntool.io.records import Column
from cnntool.io.untrusted import printable

UNDEFINED = (200, 200, 200)  # a cell whose CKA is undefined
BEST = (228, 26, 28)  # the frame of a row's best match: visible on viridis' purple and yellow
KERNEL_TITLES = {"linear": "linear CKA", "rbf": "RBF CKA"}
_CELL_W, _CELL_H, _LABEL_MAX = 52, 30, 220  # px at 1×
FEW_IMAGES = 100  # fewer images than this: warn that the estimate is rough


def pair_records(result, data_name: str) -> list[dict]:
    """One record per (layer of A, layer of B), in row order: both layers, their CKA per kernel,
    whether B's layer is A's best match (per kernel), and how much data it took."""
    best = {k: result.best_matches(k) for k in result.settings.kernels}
    records = []
    for i, layer_a in enumerate(result.layers_a):
        for j, layer_b in enumerate(result.layers_b):
            record = {
                "model_a": result.model_a,
                "layer_a": layer_a.name,
                "model_b": result.model_b,
                "layer_b": layer_b.name,
            }
            for kernel in result.settings.kernels:
                record[f"{kernel}_cka"] = _number(result.values[kernel][i, j])
            for kernel in result.settings.kernels:
                record[f"best_{kernel}"] = best[kernel][i] == j
            record.update(
                values_a=layer_a.width,
                values_b=layer_b.width,
                images=result.images,
                minibatches=result.minibatches,
                data=data_name,
            )
            records.append(record)
    return records


def _number(value: float) -> float | None:
    return None if not np.isfinite(value) else round(float(value), 6)


def best_match_rows(result) -> list[dict]:
    """Per layer of A: its best match in B per kernel and that CKA, and (two models) the CKA with
    B's layer of the same name, when B has one."""
    rows = []
    names_b = result.names_b
    for i, name in enumerate(result.names_a):
        row = {"layer": name}
        for kernel in result.settings.kernels:
            j = result.best_matches(kernel)[i]
            row[f"best_{kernel}"] = "—" if j is None else names_b[j]
            row[f"{kernel}_cka"] = "—" if j is None else f"{result.values[kernel][i, j]:.3f}"
        if not result.self_compare and name in names_b:
            value = result.values[result.settings.kernels[0]][i, names_b.index(name)]
            row["same"] = "—" if not np.isfinite(value) else f"{value:.3f}"
        rows.append(row)
    return rows


def best_match_columns(result) -> list[Column]:
    other = "other layer" if result.self_compare else f"layer of {result.model_b}"
    columns = [Column(f"layer of {result.model_a}", "layer")]
    for kernel in result.settings.kernels:
        columns += [
            Column(f"best {other} ({kernel})", f"best_{kernel}"),
            Column(f"{kernel} CKA", f"{kernel}_cka", right=True),
        ]
    if not result.self_compare and any(n in result.names_b for n in result.names_a):
        first = result.settings.kernels[0]
        columns.append(Column(f"{first} CKA, same layer", "same", right=True))
    return columns


def title(result, data_name: str) -> str:
    """The heat map's title: what was compared, over how many images."""
    what = (
        f"{result.model_a}, layer × layer"
        if result.self_compare
        else f"{result.model_a} (A) vs {result.model_b} (B)"
    )
    return (
        f"CKA of {what} · {result.images:,} images of {data_name} in "
        f"{result.minibatches} minibatch{'es' if result.minibatches > 1 else ''}"
    )


def warnings(result) -> list[str]:
    """What the user must know about a result: undefined values and left-out images."""
    lines = []
    for name in result.undefined_layers():
        lines.append(
            f"layer {name} does not vary over DATA: its CKA is undefined (null in the records, "
            "grey in the heat map)"
        )
    if result.images < FEW_IMAGES:
        lines.append(
            f"CKA over only {result.images} images is a rough estimate (its spread shrinks with "
            f"the number of images: use a few hundred or more)"
        )
    if result.dropped:
        lines.append(
            f"{result.dropped} minibatch(es) had fewer than 4 readable images and were left out"
        )
    if result.unpaired:
        lines.append(
            f"{result.unpaired} image(s) could be read by only one of the two models and were "
            "left out"
        )
    return lines


@dataclass(frozen=True)
class HeatmapLayout:
    """Where the heat map put its cells: per kernel, (left, top, right, bottom) of cell (i, j)
    in the PNG's pixels (right and bottom included)."""

    cells: dict[str, dict[tuple[int, int], tuple[int, int, int, int]]]


def heatmap(result, title: str, *, scale: int = 1) -> tuple[Image.Image, HeatmapLayout]:
    """The CKA heat map of a CkaResult (see the module docstring) and where its cells are."""
    style = style_for(scale)
    font, small, bold = style.label_font, style.small_font, style.title_font
    cell_w, cell_h, gap = style.px(_CELL_W), style.px(_CELL_H), style.gap
    names_a = [printable(n) for n in result.names_a]
    names_b = [printable(n) for n in result.names_b]
    limit = style.px(_LABEL_MAX)
    rows_w = min(limit, max(text_width(n, font) for n in names_a)) + gap
    columns_h = min(limit, max(text_width(n, font) for n in names_b)) + gap
    rows, columns = len(names_a), len(names_b)
    grid_w, grid_h = columns * cell_w, rows * cell_h
    kernels = list(result.settings.kernels)
    panel_w = rows_w + max(grid_w, max(text_width(KERNEL_TITLES[k], bold) for k in kernels))
    axis_a = f"rows: layers of {printable(result.model_a)} (A)"
    axis_b = f"columns: layers of {printable(result.model_b)} (B)"
    if result.self_compare:
        axis_a, axis_b = (
            f"rows and columns: layers of {printable(result.model_a)}",
            "framed: each row's most similar other layer",
        )
    else:
        axis_b += "; framed: each row's best match in B"
    bar = colorbar(SEQUENTIAL, 0.0, 1.0, height=grid_h, style=style, label="CKA")
    top = gap + style.title_height + style.label_height  # title, then the axis line of A
    panel_top = top + style.title_height  # each panel's own title
    width = gap + len(kernels) * (panel_w + 2 * gap) + bar.width + gap
    width = max(width, gap + text_width(title, bold) + gap, 2 * gap + text_width(axis_b, small))
    height = panel_top + grid_h + columns_h + style.label_height + gap
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw.text((gap, gap), title, fill=INK, font=bold)
    draw.text((gap, gap + style.title_height), axis_a, fill=INK, font=small)
    cells: dict[str, dict] = {}
    for p, kernel in enumerate(kernels):
        left = gap + p * (panel_w + 2 * gap)
        grid_left = left + rows_w
        draw.text((grid_left, top), KERNEL_TITLES[kernel], fill=INK, font=bold)
        values = result.values[kernel]
        colours = colorize(np.nan_to_num(np.clip(values, 0, 1)), SEQUENTIAL)
        best = result.best_matches(kernel)
        cells[kernel] = {}
        for i in range(rows):
            y = panel_top + i * cell_h
            label = fitted(names_a[i], rows_w - gap, font)
            draw.text((grid_left - gap, y + cell_h // 2), label, fill=INK, font=font, anchor="rm")
            for j in range(columns):
                x = grid_left + j * cell_w
                box = (x, y, x + cell_w - 1, y + cell_h - 1)
                cells[kernel][(i, j)] = box
                value = values[i, j]
                colour = (
                    tuple(int(round(c * 255)) for c in colours[i, j])
                    if np.isfinite(value)
                    else UNDEFINED
                )
                draw.rectangle(box, fill=colour)
                text = _two_decimals(value)
                ink = INK if _luminance(colour) > 0.45 else BACKGROUND
                draw.text(
                    (x + cell_w // 2, y + cell_h // 2), text, fill=ink, font=font, anchor="mm"
                )
            if best[i] is not None:
                x = grid_left + best[i] * cell_w
                draw.rectangle(
                    (x, y, x + cell_w - 1, y + cell_h - 1), outline=BEST, width=style.px(3)
                )
        draw.rectangle(
            (grid_left - 1, panel_top - 1, grid_left + grid_w, panel_top + grid_h), outline=FRAME
        )
        for j in range(columns):
            label = fitted(names_b[j], columns_h - gap, font)
            upright = _upwards(label, style)
            x = grid_left + j * cell_w + (cell_w - upright.width) // 2
            canvas.paste(upright, (x, panel_top + grid_h + gap + columns_h - gap - upright.height))
    bar_left = gap + len(kernels) * (panel_w + 2 * gap)
    canvas.paste(bar, (bar_left, panel_top - (bar.height - grid_h) // 2))
    draw.text(
        (gap, panel_top + grid_h + columns_h + gap + style.px(2)), axis_b, fill=INK, font=small
    )
    return canvas, HeatmapLayout(cells)


def _two_decimals(value: float) -> str:
    """'0.93'; '–' for NaN; never '-0.00' (a value that rounds to 0 is 0)."""
    if not np.isfinite(value):
        return "–"
    return "0.00" if abs(value) < 0.005 else f"{value:.2f}".replace("-", "−")


def _luminance(colour: Sequence[int]) -> float:
    r, g, b = (c / 255 for c in colour)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _upwards(text: str, style) -> Image.Image:
    """`text` in the label font, turned to read upwards (a column label)."""
    font = style.label_font
    line = Image.new("RGB", (text_width(text, font) + 2, style.label_height), BACKGROUND)
    ImageDraw.Draw(line).text((1, style.px(1)), text, fill=INK, font=font)
    return line.rotate(90, expand=True)
