"""The files of `visualize maximize`: each unit's image, its transparency map, and a labelled grid.

For OUTPUT `out.png` and unit N:
- `out_unitN.png`: the synthesized image, 8-bit, exactly what a judge is shown;
- `out_unitN_importance.png`: the image with its importance (MACO's transparency map, scaled
  so that its 99th percentile is opaque) as alpha over a checkerboard, and
  `out_unitN_importance.npy`: the raw map (float32 H×W, |∂objective/∂pixel| summed over the
  steps and channels);
- `out.png`: a grid with a label under each tile; a tile is the image, [photo | image] for an
  accentuation, and the importance view beside them when there is one. A picture that failed
  its check (tasks.maximize.judge.check_picture: flat, or below the data's best) is not shown
  as a result: its tile is struck through with "did not converge" and the reason written on it
  (`marked`), and its label says so too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cnntool.io.grids import grid, over_checkerboard, quantile_scale, side_by_side
from cnntool.io.writers import open_output, save_image

SMALLEST_TILE = 84  # px: a 28-px digit is shown 3x in the grid (the unit PNGs stay 28 px)


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


def save_pictures(output: str | Path, pictures: Sequence[UnitPicture]) -> list[Path]:
    """Write the unit files and the grid (see the module's docstring); the paths written."""
    out = Path(output)
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
        tile = side_by_side([_enlarged(p) for p in panels], gap=2)
        tiles.append(tile if picture.failure is None else marked(tile, picture.failure))
    save_image(grid(tiles, [p.label for p in pictures]), out)
    return [out] + written


def _enlarged(image: Image.Image) -> Image.Image:
    """Small images scaled up by a whole factor (nearest) to at least SMALLEST_TILE px tall."""
    factor = -(-SMALLEST_TILE // image.height)
    if factor <= 1:
        return image
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


MARK_COLOUR = (213, 94, 0)  # Okabe & Ito's vermillion, the palette's "wrong" (io/palette.py)


def marked(tile: Image.Image, reason: str) -> Image.Image:
    """A tile that is not a result: dimmed, struck through corner to corner in vermillion, and
    "did not converge" with the reason on a dark band across its middle."""
    shown = Image.blend(tile.convert("RGB"), Image.new("RGB", tile.size, (255, 255, 255)), 0.6)
    draw = ImageDraw.Draw(shown)
    w, h = shown.size
    line = max(2, min(w, h) // 28)
    draw.line([(0, 0), (w - 1, h - 1)], fill=MARK_COLOUR, width=line)
    draw.line([(0, h - 1), (w - 1, 0)], fill=MARK_COLOUR, width=line)
    font = ImageFont.load_default()
    reason = {"below the data's best": "< data's best"}.get(reason, reason) if w < 110 else reason
    lines = ["did not", "converge", reason] if w < 110 else ["did not converge", reason]
    step = 12
    top = (h - step * len(lines)) // 2 - 2
    draw.rectangle([0, top, w - 1, top + step * len(lines) + 3], fill=(20, 24, 33))
    for k, text in enumerate(lines):
        width = draw.textlength(text, font=font)
        draw.text(((w - width) / 2, top + 2 + k * step), text, fill=(255, 255, 255), font=font)
    return shown


def tile_label(record: dict) -> str:
    """A grid label from a unit's record: the class name or layer:unit, then "did not converge"
    when its picture failed the check, else the judge's rank or the value relative to the
    data's best."""
    name = record.get("name") or (
        f"{record['layer']}:{record['unit']}" if "layer" in record else str(record["unit"])
    )
    if record.get("failure"):
        return f"{name} · not converged"
    if "judge_rank" in record:
        return f"{name} · judge #{record['judge_rank']}"
    if record.get("relative") is not None:
        return f"{name} · {record['relative']:.1f}x data best"
    return name


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
