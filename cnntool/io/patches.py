"""The pictures of `visualize top-patches`: each unit's top patches cropped from the ORIGINAL
images (`unit_NNNN.png`, value under each; with overlays a second row: the unit's activation map
over the whole model input, the patch boxed) and `overview.png` (one row per unit).

Every grid is regular: K bordered cells per row with background gaps between them, whatever
the number of hits. A unit's hits fill its row from the left (an image that cannot be read any
more is left out and the rest close up, counted under the unit), so a short row means fewer
positive hits ("3 of 9") and an empty one a dead unit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cnntool.errors import CnnToolError
from cnntool.io.figure_style import FigureStyle, colorize
from cnntool.io.grids import grid, save_grid
from cnntool.io.writers import save_image

BORDER = (128, 128, 128)
STYLE = FigureStyle()  # the one look of PIL figures (io.figure_style): DejaVu Sans, gaps, frames
OVERVIEW_TILE = 64
OVERLAY_ALPHA = 0.6  # the colour map's weight over the image where the unit is at its peak


def crop(load: Callable[[int], Image.Image], hit, lost: list[str]) -> Image.Image | None:
    """The hit's box cropped from its original image (PIL fills outside the image with black);
    None, with the reason appended to `lost`, when the image cannot be read any more."""
    try:
        image = load(hit.index).convert("RGB")
    except CnnToolError as exc:
        lost.append(str(exc))
        return None
    return image.crop(hit.box)


def _fit(image: Image.Image, side: int) -> Image.Image:
    """Scaled to `side` px on its longer side: smooth when shrinking a photo, nearest neighbour
    when enlarging a small field (its pixels stay visible)."""
    scale = side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    method = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.NEAREST
    return image if scale == 1 else image.resize(size, method)


def overlay(pixels: np.ndarray, activation: np.ndarray, box=None) -> Image.Image:
    """The unit's activation map (h, w) over the model input `pixels` (C, H, W in [0, 1]):
    upsampled bilinearly to the input (cell centres at the jump's centres, as F.interpolate
    without corners), its positive part scaled by its maximum, blended with the `inferno`
    colours in proportion to it; `box` (y0, x0, y1, x1 in input pixels) outlined in white."""
    import torch
    import torch.nn.functional as F

    height, width = pixels.shape[1:]
    heat = (
        F.interpolate(
            torch.as_tensor(activation, dtype=torch.float32)[None, None],
            size=(height, width),
            mode="bilinear",
            align_corners=False,
        )[0, 0]
        .clamp(min=0)
        .numpy()
    )
    peak = float(heat.max())
    heat = heat / peak if peak > 0 else heat
    image = np.repeat(pixels, 3, axis=0) if pixels.shape[0] == 1 else pixels[:3]
    image = image.transpose(1, 2, 0)
    weight = OVERLAY_ALPHA * heat[..., None]
    blended = (1 - weight) * image + weight * colorize(heat, "inferno")
    picture = Image.fromarray((np.clip(blended, 0, 1) * 255).round().astype(np.uint8))
    if box is not None:
        y0, x0, y1, x1 = box
        ImageDraw.Draw(picture).rectangle((x0, y0, x1 - 1, y1 - 1), outline=(255, 255, 255))
    return picture


def counter(shown: int, top: int, lost: int = 0) -> str:
    """'dead', '' (all K shown) or 'N of K' (fewer positive hits, or some left out)."""
    if shown == 0 and lost == 0:
        return "dead"
    note = f" ({lost} unreadable)" if lost else ""
    return "" if shown == top and not lost else f"{shown} of {top}{note}"


def write_top_patches(
    out: str | Path,
    result,
    load: Callable[[int], Image.Image],
    *,
    title: str,
    tile_size: int,
    overlays: Mapping[int, tuple[np.ndarray, np.ndarray]] | None = None,
) -> tuple[list, list[str]]:
    """unit_NNNN.png per unit with a hit and overview.png in `out` for a TopPatches `result`;
    `overlays` (dataset index -> (model-input pixels C×H×W, the units' maps U×h×w in the order
    of `result.units`), tasks.top_patches.hit_maps) adds the overlay row. Returns the hits that
    were drawn and the reasons of those whose image could not be read (left out)."""
    out = Path(out)
    top = result.top
    overview, labels, drawn, lost = [], [], [], []
    for row, (unit, hits) in enumerate(zip(result.units, result.hits, strict=True)):
        before = len(lost)
        cropped = [(hit, crop(load, hit, lost)) for hit in hits]
        cropped = [(hit, patch) for hit, patch in cropped if patch is not None]
        count = counter(len(cropped), top, len(lost) - before)
        if cropped:
            tiles = [_fit(patch, tile_size) for _, patch in cropped] + [None] * (top - len(cropped))
            names = [f"{hit.value:.3g}" for hit, _ in cropped] + [""] * (top - len(cropped))
            if overlays is not None:
                maps = [overlays.get(hit.index) for hit, _ in cropped]
                tiles += [
                    None if m is None else _fit(overlay(m[0], m[1][row], hit.input_box), tile_size)
                    for (hit, _), m in zip(cropped, maps, strict=True)
                ] + [None] * (top - len(cropped))
                names += ["map"] * len(cropped) + [""] * (top - len(cropped))
            save_grid(
                out / f"unit_{unit:04d}.png",
                tiles,
                names,
                columns=top,
                tile_size=tile_size,
                border=BORDER,
                title=f"{title} unit {unit}" + (f": {count}" if count else ""),
                style=STYLE,
            )
        overview.extend(
            [_fit(patch, OVERVIEW_TILE) for _, patch in cropped] + [None] * (top - len(cropped))
        )
        labels.extend([f"u{unit} {count}".strip()] + [""] * (top - 1))
        drawn.extend(hit for hit, _ in cropped)
    dead = len(result.dead)
    counts = f"{len(result.units)} units" + (f", {dead} dead" if dead else "")
    if lost:
        counts += f", {len(lost)} patches left out (unreadable)"
    if not any(tile is not None for tile in overview):
        overview[0] = Image.new("RGB", (OVERVIEW_TILE, OVERVIEW_TILE), (255, 255, 255))  # all dead
    save_image(
        grid(
            overview,
            labels,
            columns=top,
            tile_size=min(tile_size, OVERVIEW_TILE),
            border=BORDER,
            title=f"{title}: top {top} per unit, {counts}",
            style=STYLE,
        ),
        out / "overview.png",
    )
    return drawn, lost


def write_top_patch_files(
    out: str | Path, result, dataset, *, title: str, tile_size: int, overlays=None
) -> list[str]:
    """The pictures in `out` (write_top_patches) and a JSON Lines record per hit drawn on stdout;
    the reasons of the patches left out."""
    from cnntool.io.records import write_records

    drawn, lost = write_top_patches(
        out, result, dataset.load, title=title, tile_size=tile_size, overlays=overlays
    )
    write_records(top_patch_records(drawn, dataset.paths), "jsonl")
    return lost


def lost_warning(lost: list[str]) -> str:
    """The warning about top patches left out: their image could not be read again to be cut."""
    return f"{len(lost)} patch(es) left out: their image could not be read any more, e.g. {lost[0]}"


def top_patch_records(hits, paths):
    """One record per hit drawn: unit, rank, the image's path, box, value, index, position."""
    return (
        {
            "unit": hit.unit,
            "rank": hit.rank,
            "path": paths[hit.index],
            "box": hit.box,
            "value": hit.value,
            "index": hit.index,
            "position": hit.position,
        }
        for hit in hits
    )
