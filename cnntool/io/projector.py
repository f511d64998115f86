"""Files for TensorBoard's embedding projector (`embed … --projector DIR`).

Point TensorBoard at DIR (`tensorboard --logdir DIR`, the Projector tab) and it reads:
- `tensors.tsv`: one row per image, the feature values separated by tabs;
- `metadata.tsv`: one row per image; with more than one column the first row is the header
  (TensorBoard's rule: a single column has no header);
- `sprite.png`: the thumbnails in a square grid, row-major (image i at row i // side, column
  i % side), at most 8192 px a side, every cell `single_image_dim` px;
- `projector_config.pbtxt`: where those files are (paths relative to DIR) and the cell size.
The projector loads at most its first 100,000 points; a larger export says so in a warning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cnntool.io.image_map import background_colour, thumbnail
from cnntool.io.writers import atomic_path, open_output

PROJECTOR_POINT_LIMIT = 100_000
MAX_SPRITE_SIDE = 8192
DEFAULT_THUMB = 64
TENSORS, METADATA, SPRITE, CONFIG = (
    "tensors.tsv",
    "metadata.tsv",
    "sprite.png",
    "projector_config.pbtxt",
)
_ROWS_PER_WRITE = 4096  # tensors.tsv is written in slices, never as one big string


@dataclass(frozen=True)
class ProjectorExport:
    """What was written: `thumb` is the sprite's cell size (None: no sprite)."""

    folder: str
    count: int
    dims: int
    thumb: int | None
    warnings: tuple[str, ...]


def sprite_layout(count: int, thumb: int) -> tuple[int, int]:
    """(cells per side, cell size): the smallest square grid that holds `count` images, with
    cells shrunk from `thumb` where needed to stay within 8192 px."""
    side = max(1, math.ceil(math.sqrt(count)))
    size = min(thumb, MAX_SPRITE_SIDE // side)
    if size < 1:
        raise ValueError(f"{count:,} images do not fit a {MAX_SPRITE_SIDE} px sprite")
    return side, size


def write_projector(
    folder: str | Path,
    features,
    metadata_rows: Sequence,
    metadata_columns: Sequence[str],
    thumbnails: Sequence[Image.Image] | None = None,
    *,
    thumb_size: int | None = None,
    tensor_name: str = "features",
) -> ProjectorExport:
    """Write the projector's four files into `folder` (created if needed).

    features: (N, D) numbers. metadata_rows: N rows of len(metadata_columns) values (with one
    column a row may be the bare value); None is written empty, tabs and line breaks as spaces.
    thumbnails: N PIL images (indexable; any size, fitted into square cells), or None for no
    sprite; thumb_size: the cell size wanted (default: the largest thumbnail side, at most 64).
    """
    folder = Path(folder)
    values = np.asarray(features, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"features must be (N, D), not {values.shape}")
    count, dims = values.shape
    columns = list(metadata_columns)
    if columns and len(metadata_rows) != count:
        raise ValueError(f"{len(metadata_rows)} metadata rows for {count} feature rows")
    if thumbnails is not None and len(thumbnails) != count:
        raise ValueError(f"{len(thumbnails)} thumbnails for {count} feature rows")
    warnings = []
    if count > PROJECTOR_POINT_LIMIT:
        warnings.append(
            f"TensorBoard's projector loads only the first {PROJECTOR_POINT_LIMIT:,} of the "
            f"{count:,} points written"
        )

    with open_output(folder / TENSORS) as handle:
        for start in range(0, count, _ROWS_PER_WRITE):
            np.savetxt(handle, values[start : start + _ROWS_PER_WRITE], fmt="%.8g", delimiter="\t")
    if columns:
        _write_metadata(folder / METADATA, metadata_rows, columns)
    thumb = None
    if thumbnails is not None and count:
        wanted = thumb_size or min(DEFAULT_THUMB, max(max(thumbnails[0].size), 1))
        thumb = _write_sprite(folder / SPRITE, thumbnails, wanted)
    with open_output(folder / CONFIG) as handle:
        handle.write(_config(tensor_name, count, dims, bool(columns), thumb))
    return ProjectorExport(
        folder=str(folder), count=count, dims=dims, thumb=thumb, warnings=tuple(warnings)
    )


def _cell(value) -> str:
    text = "" if value is None else str(value)
    return text.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def _write_metadata(path: Path, rows: Sequence, columns: list[str]) -> None:
    with open_output(path) as handle:
        if len(columns) > 1:
            handle.write("\t".join(_cell(c) for c in columns) + "\n")
        for row in rows:
            cells = row if len(columns) > 1 or isinstance(row, (list, tuple)) else (row,)
            if len(cells) != len(columns):
                raise ValueError(
                    f"a metadata row has {len(cells)} values for {len(columns)} columns"
                )
            handle.write("\t".join(_cell(c) for c in cells) + "\n")


def _write_sprite(path: Path, thumbnails: Sequence[Image.Image], wanted: int) -> int:
    side, size = sprite_layout(len(thumbnails), wanted)
    background = background_colour(thumbnails.__getitem__, len(thumbnails))
    sprite = Image.new("RGB", (side * size, side * size), background)
    for i in range(len(thumbnails)):
        row, column = divmod(i, side)
        sprite.paste(thumbnail(thumbnails[i], size, background), (column * size, row * size))
    with atomic_path(path) as temp:
        sprite.save(temp, format="PNG")
    return size


def _config(tensor_name: str, count: int, dims: int, metadata: bool, thumb: int | None) -> str:
    quoted = tensor_name.replace("\\", "\\\\").replace('"', '\\"')
    lines = [
        "embeddings {",
        f'  tensor_name: "{quoted}"',
        f'  tensor_path: "{TENSORS}"',
        f"  tensor_shape: {count}",
        f"  tensor_shape: {dims}",
    ]
    if metadata:
        lines.append(f'  metadata_path: "{METADATA}"')
    if thumb is not None:
        lines += [
            "  sprite {",
            f'    image_path: "{SPRITE}"',
            f"    single_image_dim: {thumb}",
            f"    single_image_dim: {thumb}",
            "  }",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"
