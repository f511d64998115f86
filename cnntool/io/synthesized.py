"""The files of `visualize maximize`: each unit's image, its transparency map, and a labelled grid.

For OUTPUT `out.png` and unit N:
- `out_unitN.png`: the synthesized image, 8-bit, exactly what a judge is shown;
- `out_unitN_importance.png`: the image with its importance (MACO's transparency map, scaled
  so that its 99th percentile is opaque) as alpha over a checkerboard, and
  `out_unitN_importance.npy`: the raw map (float32 H×W, |∂objective/∂pixel| summed over the
  steps and channels);
- `out.png`: a titled grid in io.figure_style's look (DejaVu Sans, `scale` 2 for print) with
  a two-line label under each tile (the unit, then its verdict), never cut; a tile is the
  image, [photo | image] for an accentuation, and the importance view beside them when there
  is one, small images enlarged by a whole number with nearest neighbour. A picture that
  failed its check (tasks.maximize.judge.check_picture: flat, or below the data's best) is not
  shown as a result: its tile is struck through with "did not converge" and the reason written
  on it (`marked`), and its label says so too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cnntool.io.figure_style import FigureStyle, beside, style_for, text_width, wrapped
from cnntool.io.grids import grid, over_checkerboard, quantile_scale
from cnntool.io.untrusted import printable
from cnntool.io.writers import open_output, save_image

SMALLEST_TILE = 112  # px at 1×: a 28-px digit is shown 4× in the grid (the unit PNGs stay 28 px)


@dataclass(frozen=True)
class UnitPicture:
    """One unit's picture: `image` (as saved), its label, the `importance` map (H×W) if any, and
    the `start` photo of an accentuation."""

    unit: int
    image: Image.Image
    label: str
    importance: np.ndarray | None = None
    start: Image.Image | None = None
    failure: str | None = None  # why it is not a result ("flat", ...); None: it is one


def importance_view(image: Image.Image, importance: np.ndarray) -> Image.Image:
    """The image with its importance as opacity over a checkerboard."""
    return over_checkerboard(image, quantile_scale(importance))


def save_pictures(
    output: str | Path,
    pictures: Sequence[UnitPicture],
    *,
    title: str | None = None,
    scale: int = 1,
) -> list[Path]:
    """Write the unit files and the grid (see the module's docstring), under `title`, at
    `scale` (1 or 2); the paths written."""
    out = Path(output)
    style = style_for(scale)
    suffix = out.suffix or ".png"
    written, tiles = [], []
    for picture in pictures:
        base = f"{out.stem}_unit{picture.unit}"  # by hand: with_suffix would cut 'a.1_unit3'
        image_png = out.with_name(base + suffix)
        save_image(picture.image, image_png)
        written.append(image_png)
        panels = ([picture.start] if picture.start is not None else []) + [picture.image]
        if picture.importance is not None:
            view = importance_view(picture.image, picture.importance)
            importance_png = out.with_name(base + "_importance" + suffix)
            importance_npy = out.with_name(base + "_importance.npy")
            save_image(view, importance_png)
            with open_output(importance_npy, "wb") as handle:
                np.save(handle, picture.importance.astype(np.float32))
            written += [importance_png, importance_npy]
            panels.append(view)
        tile = beside([_enlarged(p, style) for p in panels], style, gap=style.px(2))
        tiles.append(tile if picture.failure is None else marked(tile, picture.failure, style))
    labels = [p.label for p in pictures]
    picture = grid(
        tiles,
        labels,
        columns=_columns(tiles, labels, title, style),
        title=title,
        style=style,
        fit_labels=True,
    )
    save_image(picture, out)
    return [out] + written


def _columns(tiles, labels, title: str | None, style: FigureStyle) -> int:
    """A grid about as wide as tall (io.grids' default), except that tiles that all fit in one
    row under the title go in one row, rather than leave most of the title's width empty."""
    lines = [line for label in labels for line in label.split("\n")]
    cell = max([t.width for t in tiles] + [text_width(x, style.label_font) + 2 for x in lines])
    height = max(t.height for t in tiles)
    columns = max(1, math.ceil(math.sqrt(len(tiles) * height / cell) - 1e-9))
    one_row = len(tiles) * (cell + style.gap) + style.gap
    if title and one_row <= text_width(title, style.title_font) + 2 * style.gap:
        return len(tiles)
    return columns


def _enlarged(image: Image.Image, style: FigureStyle) -> Image.Image:
    """An image scaled up by a whole factor (nearest) to at least SMALLEST_TILE px tall at 1×
    (a 224-px photo stays as it is at 1×, doubled at 2×)."""
    factor = max(style.scale, -(-style.px(SMALLEST_TILE) // image.height))
    if factor <= 1:
        return image
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


MARK_COLOUR = (213, 94, 0)  # Okabe & Ito's vermillion, the palette's "wrong" (io/palette.py)


def marked(tile: Image.Image, reason: str, style: FigureStyle | None = None) -> Image.Image:
    """A tile that is not a result: dimmed, struck through corner to corner in vermillion, and
    "did not converge" with the reason (or "dead" and "never fires on DATA") on a dark band
    across its middle, in `style`'s small font, broken into lines that fit the tile."""
    style = style or FigureStyle()
    shown = Image.blend(tile.convert("RGB"), Image.new("RGB", tile.size, (255, 255, 255)), 0.6)
    draw = ImageDraw.Draw(shown)
    w, h = shown.size
    line = max(2, min(w, h) // 28)
    draw.line([(0, 0), (w - 1, h - 1)], fill=MARK_COLOUR, width=line)
    draw.line([(0, h - 1), (w - 1, 0)], fill=MARK_COLOUR, width=line)
    room = w - 2 * style.px(4)
    bold, plain = style.small_bold_font, style.small_font
    if text_width(reason, plain) > room:
        reason = {"below the data's best": "< data's best"}.get(reason, reason)
    # a reason with its own headline ("dead: never fires on DATA") replaces "did not converge"
    headline, reason = reason.split(": ", 1) if ": " in reason else ("did not converge", reason)
    lines = [(t, bold) for t in wrapped(headline, room, bold)]
    lines += [(t, plain) for t in wrapped(reason, room, plain)]
    step = style.px(16)
    top = (h - step * len(lines)) // 2 - style.px(3)
    draw.rectangle([0, top, w - 1, top + step * len(lines) + style.px(5)], fill=(20, 24, 33))
    for k, (text, font) in enumerate(lines):
        y = top + style.px(3) + k * step
        draw.text((w // 2, y), text, fill=(255, 255, 255), font=font, anchor="mt")
    return shown


def tile_label(record: dict) -> str:
    """A grid label from a unit's record, two lines: the class name or "unit N" (the grid's
    title names the layer), then "dead on DATA" or "not converged" when its picture failed the
    check, else the judge's rank or the value relative to the data's best (none: one line)."""
    name = printable(str(record.get("name") or f"unit {record['unit']}"))
    if str(record.get("failure")).startswith("dead"):
        return f"{name}\ndead on DATA"
    if record.get("failure"):
        return f"{name}\nnot converged"
    if "judge_rank" in record:
        return f"{name}\njudge #{record['judge_rank']}"
    if record.get("relative") is not None:
        return f"{name}\n{record['relative']:.1f}× data best"
    return name


def grid_title(model_name: str, goal, config) -> str:
    """The grid's title: what was maximized and how, e.g. "lenet5-mnist relu3 units (mean over
    positions) · pixel, 128 steps" (`goal` a tasks.maximize Objective, `config` its
    MaximizeConfig)."""
    what = {
        "class": "class logits",
        "channel": f"{goal.layer} units (mean over positions)",
        "neuron": f"{goal.layer} · neuron at {goal.position or 'the centre'}",
    }[goal.kind]
    return printable(f"{model_name} {what} · {config.param}, {config.steps} steps")


def pictures(
    images: Sequence[Image.Image],
    records: Sequence[dict],
    importance: Sequence,
    start: Image.Image | None = None,
) -> list[UnitPicture]:
    """The UnitPictures of a run: one per image with its record's label (importance maps as
    arrays or CPU tensors, or None)."""
    return [
        UnitPicture(
            record["unit"],
            image,
            tile_label(record),
            None if imp is None else np.asarray(imp),
            start,
            record.get("failure"),
        )
        for image, record, imp in zip(images, records, importance, strict=True)
    ]


def table_columns(kind: str, records: Sequence[dict]) -> list:
    """The columns of the records' table on stderr: unit (and class name), value, the judge's
    verdict and the data's best when the records have them."""
    from cnntool.io.records import Column

    columns = [Column("unit", "unit", right=True)]
    if kind == "class":
        columns.append(Column("class", "name"))
    columns.append(Column("value", "value", right=True))
    if any("judge" in r for r in records):
        columns += [
            Column("judge", "judge"),
            Column("rank", "judge_rank", right=True),
            Column("p", "judge_probability", right=True),
            Column("judge's top", "judge_top"),
        ]
    if any("relative" in r for r in records):
        columns += [
            Column("best on DATA", "best_on_data", right=True),
            Column("relative", "relative", right=True),
        ]
    if any("contrast" in r for r in records):
        columns += [Column("contrast", "contrast", right=True), Column("failure", "failure")]
    return columns


def stretched(pixels: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """C×H×W pixels in [0, 1] stretched for a thumbnail: the `low`–`high` percentile range of
    the whole image (all channels together, so colours keep their balance) mapped onto 0–1.
    Only for pictures that passed the check: a flat one would be stretched into its noise."""
    pixels = np.asarray(pixels, dtype=np.float32)
    lo, hi = np.percentile(pixels, [low, high])
    if hi - lo <= 1e-6:
        return pixels
    return np.clip((pixels - lo) / (hi - lo), 0.0, 1.0)
