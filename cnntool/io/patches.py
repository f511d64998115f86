"""The pictures of `visualize top-patches`: each unit's top patches cropped from the ORIGINAL
images (`unit_NNNN.png`, value under each) and `overview.png` (one row per unit)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from PIL import Image

from cnntool.errors import CnnToolError
from cnntool.io.grids import grid, save_grid
from cnntool.io.writers import save_image


def crop(load: Callable[[int], Image.Image], hit, lost: list[str]) -> Image.Image | None:
    """The hit's box cropped from its original image (PIL fills outside the image with black);
    None, with the reason appended to `lost`, when the image cannot be read any more."""
    try:
        image = load(hit.index).convert("RGB")
    except CnnToolError as exc:
        lost.append(str(exc))
        return None
    return image.crop(hit.box)


def write_top_patches(out: str | Path, result, load: Callable[[int], Image.Image], *, title: str,
                      tile_size: int, columns: int = 8) -> tuple[list, list[str]]:
    """unit_NNNN.png per unit and overview.png in `out` for a TopPatches `result`; returns the
    hits that were drawn and the reasons of those whose image could not be read (left out)."""
    out = Path(out)
    overview, labels, drawn, lost = [], [], [], []
    columns = min(result.top, columns)
    for unit, hits in zip(result.units, result.hits):
        cropped = [(hit, crop(load, hit, lost)) for hit in hits]
        cropped = [(hit, patch) for hit, patch in cropped if patch is not None]
        patches = [patch for _, patch in cropped]
        if patches:
            save_grid(out / f"unit_{unit:04d}.png", patches, [f"{hit.value:.3g}" for hit, _ in cropped],
                      tile_size=tile_size, title=f"{title} unit {unit}")
        blank = Image.new("RGB", (1, 1), (255, 255, 255))
        overview.extend(patches[:columns] + [blank] * (columns - len(patches[:columns])))
        labels.extend([f"u{unit}"] + [""] * (columns - 1))
        drawn.extend(hit for hit, _ in cropped)
    save_image(grid(overview, labels, columns=columns, tile_size=min(tile_size, 64),
                    title=f"{title}: top {columns} per unit"), out / "overview.png")
    return drawn, lost


def write_top_patch_files(out: str | Path, result, dataset, *, title: str, tile_size: int) -> list[str]:
    """The pictures in `out` (write_top_patches) and a JSON Lines record per hit drawn on stdout;
    the reasons of the patches left out."""
    from cnntool.io.records import write_records

    drawn, lost = write_top_patches(out, result, dataset.load, title=title, tile_size=tile_size)
    write_records(top_patch_records(drawn, dataset.paths), "jsonl")
    return lost


def lost_warning(lost: list[str]) -> str:
    """The warning about top patches left out: their image could not be read again to be cut."""
    return f"{len(lost)} patch(es) left out: their image could not be read any more, e.g. {lost[0]}"


def top_patch_records(hits, paths):
    """One record per hit drawn: unit, rank, the image's path, box, value, index, position."""
    return ({"unit": hit.unit, "rank": hit.rank, "path": paths[hit.index], "box": hit.box,
             "value": hit.value, "index": hit.index, "position": hit.position} for hit in hits)
