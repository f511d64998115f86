"""The files of `visualize maximize`: each unit's image, its transparency map, and a labelled grid.

For OUTPUT `out.png` and unit N:
- `out_unitN.png`: the synthesized image, 8-bit, exactly what a judge is shown;
- `out_unitN_importance.png`: the image with its importance (MACO's transparency map, scaled
  so that its 99th percentile is opaque) as alpha over a checkerboard, and
  `out_unitN_importance.npy`: the raw map (float32 H×W, |∂objective/∂pixel| summed over the
  steps and channels);
- `out.png`: a grid with a label under each tile; a tile is the image, [photo | image] for an
  accentuation, and the importance view beside them when there is one.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

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
        tiles.append(side_by_side([_enlarged(p) for p in panels], gap=2))
    save_image(grid(tiles, [p.label for p in pictures]), out)
    return [out] + written


def _enlarged(image: Image.Image) -> Image.Image:
    """Small images scaled up by a whole factor (nearest) to at least SMALLEST_TILE px tall."""
    factor = -(-SMALLEST_TILE // image.height)
    if factor <= 1:
        return image
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def tile_label(record: dict) -> str:
    """A grid label from a unit's record: the class name or layer:unit, and the judge's rank
    or the value relative to the data's best."""
    name = record.get("name") or (f"{record['layer']}:{record['unit']}" if "layer" in record
                                  else str(record["unit"]))
    if "judge_rank" in record:
        return f"{name} · judge #{record['judge_rank']}"
    if record.get("relative") is not None:
        return f"{name} · {record['relative']:.1f}x data best"
    return name


def pictures(images: Sequence[Image.Image], records: Sequence[dict],
             importance: Sequence, start: Image.Image | None = None) -> list[UnitPicture]:
    """The UnitPictures of a run: one per image with its record's label (importance maps as
    arrays or CPU tensors, or None)."""
    return [UnitPicture(record["unit"], image, tile_label(record),
                        None if imp is None else np.asarray(imp), start)
            for image, record, imp in zip(images, records, importance)]


def table_columns(kind: str, records: Sequence[dict]) -> list:
    """The columns of the records' table on stderr: unit (and class name), value, the judge's
    verdict and the data's best when the records have them."""
    from cnntool.io.records import Column

    columns = [Column("unit", "unit", right=True)]
    if kind == "class":
        columns.append(Column("class", "name"))
    columns.append(Column("value", "value", right=True))
    if any("judge" in r for r in records):
        columns += [Column("judge", "judge"), Column("rank", "judge_rank", right=True),
                    Column("p", "judge_probability", right=True), Column("judge's top", "judge_top")]
    if any("relative" in r for r in records):
        columns += [Column("best on DATA", "best_on_data", right=True),
                    Column("relative", "relative", right=True)]
    return columns
