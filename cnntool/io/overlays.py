"""Projections and synthesized inputs as images: normalized maps, receptive-field crops,
overlays and side-by-side panels (PIL only; numpy arrays in, PIL images out). Grids are
cnntool.io.grids; [0, 1] pixels to images is cnntool.io.figures.pixels_to_image."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from cnntool.io.figures import pixels_to_image
from cnntool.io.grids import symmetric_scale

_GAP = 4  # pixels of white between panel tiles


def projection_image(raw: np.ndarray, method: str) -> Image.Image:
    """A raw C×H×W projection as the papers show it.

    Saliency (Simonyan et al.): max over channels of |map|, scaled to [0, 1], grey levels.
    Deconvnet / guided backprop / gradient×input (Zeiler & Fergus, Springenberg et al.): signed,
    zero at mid-grey and scaled by the largest magnitude, so the sign of every pixel survives.
    """
    raw = np.asarray(raw, dtype=np.float64)
    if method == "saliency":
        return _gray(heat(raw))
    return pixels_to_image(symmetric_scale(raw, _robust_max(np.abs(raw))))


def heat(raw: np.ndarray) -> np.ndarray:
    """H×W in [0, 1]: where the projection is strong (max over channels of |map|)."""
    magnitude = np.abs(np.asarray(raw, dtype=np.float64)).max(axis=0)
    return np.clip(magnitude / _robust_max(magnitude), 0.0, 1.0)


def _robust_max(magnitude: np.ndarray) -> float:
    """The 99.5th percentile of the nonzero magnitudes: backprojections are spiky, and scaling
    by the single largest pixel leaves the rest of the map invisible (values above saturate)."""
    nonzero = magnitude[magnitude > 0]
    return float(np.percentile(nonzero, 99.5)) if nonzero.size else 1.0


def _gray(values: np.ndarray) -> Image.Image:
    return pixels_to_image(values[None])


def crop_box(pixels: np.ndarray, box: tuple[int, int, int, int] | None,
             fill: float = 0.0) -> np.ndarray:
    """The part of C×H×W `pixels` under box (y0, x0, y1, x1), zero (black) outside the image,
    as receptive fields near a border reach into the padding. None: the whole image.
    `fill` is the value outside (0.5: mid-grey, the zero of a signed projection)."""
    if box is None:
        return pixels
    y0, x0, y1, x1 = box
    channels, height, width = pixels.shape
    out = np.full((channels, y1 - y0, x1 - x0), fill, dtype=pixels.dtype)
    sy0, sx0, sy1, sx1 = max(y0, 0), max(x0, 0), min(y1, height), min(x1, width)
    if sy1 > sy0 and sx1 > sx0:
        out[:, sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = pixels[:, sy0:sy1, sx0:sx1]
    return out


def overlay(pixels: np.ndarray, strength: np.ndarray, alpha: float = 0.6) -> Image.Image:
    """The input (C×H×W in [0, 1], dimmed) with `strength` (H×W in [0, 1]) painted in red."""
    rgb = np.repeat(pixels, 3, axis=0) if pixels.shape[0] == 1 else pixels
    base = rgb.mean(axis=0, keepdims=True) * 0.6 + 0.2  # grey, so red reads as the heat
    red = np.stack([np.ones_like(strength), np.zeros_like(strength), np.zeros_like(strength)])
    weight = alpha * strength[None]
    return pixels_to_image(base * (1.0 - weight) + red * weight)


def outline(image: Image.Image, box: tuple[int, int, int, int] | None) -> Image.Image:
    """`image` with the receptive-field box drawn on it (clipped to the image)."""
    if box is None:
        return image
    image = image.convert("RGB")
    y0, x0, y1, x1 = box
    ImageDraw.Draw(image).rectangle(
        [max(x0, 0), max(y0, 0), min(x1, image.width) - 1, min(y1, image.height) - 1],
        outline=(255, 220, 0))
    return image


def panel(images: Sequence[Image.Image], height: int | None = None) -> Image.Image:
    """Images side by side on white, each scaled (nearest, to keep pixels crisp) to `height`
    (default: the tallest)."""
    height = height or max(im.height for im in images)
    scaled = [im.convert("RGB").resize((max(1, round(im.width * height / im.height)), height),
                                       Image.Resampling.NEAREST) for im in images]
    width = sum(im.width for im in scaled) + _GAP * (len(scaled) - 1)
    out = Image.new("RGB", (width, height), "white")
    x = 0
    for im in scaled:
        out.paste(im, (x, 0))
        x += im.width + _GAP
    return out


def projection_row(raw_map: np.ndarray, pixels: np.ndarray, box, style: str) -> Image.Image:
    """One row of `visualize deconv`: the projection (cropped to the unit's receptive field
    `box`, beside the input under it, as Zeiler & Fergus show it; whole when box is None), then
    the heat map over the input with the box outlined. `style`: guided, deconv or saliency."""
    from cnntool.io.figures import pixels_to_image

    picture = projection_image(raw_map, style)
    if box is not None:
        drawn = np.asarray(picture, dtype=np.float32) / 255.0
        drawn = drawn[None] if drawn.ndim == 2 else drawn.transpose(2, 0, 1)
        tiles = [pixels_to_image(crop_box(drawn, box, fill=0.5)),
                 pixels_to_image(crop_box(pixels, box))]
    else:
        tiles = [picture]
    tiles.append(outline(overlay(pixels, heat(raw_map)), box))
    return panel(tiles, height=max(pixels.shape[1], 96))


def uncovered_warning(projection, method: str) -> str | None:
    """The warning about smooth activations (SiLU, GELU) that a rectifier rule does not cover
    (None when there are none, or for saliency, which uses the plain gradient anyway)."""
    if not projection.uncovered or method == "saliency":
        return None
    kinds = ", ".join(f"{k} ×{n}" for k, n in sorted(projection.uncovered.items()))
    return (f"{method}: the model also has smooth activations ({kinds}) that no rectifier rule "
            "covers; they backprop their ordinary gradient")


def completeness_line(projection, worrying: float = 0.05) -> tuple[str, bool] | None:
    """Integrated gradients' completeness, for stderr, and whether its gap is worth a warning
    (over `worrying` of |F(x) − F(baseline)|); None for the other methods."""
    c = projection.completeness
    if c is None:
        return None
    subtracted = f"({c.f_baseline:.6g})" if c.f_baseline < 0 else f"{c.f_baseline:.6g}"
    line = (f"ig ({c.steps} steps {c.rule}, {c.baseline} baseline): Σ attributions {c.total:.6g}, "
            f"F(x) − F(baseline) = {c.f_input:.6g} − {subtracted} = {c.difference:.6g}; "
            f"completeness gap {c.gap:.3g} ({c.relative_gap:.2%})")
    worry = c.relative_gap > worrying
    return (line + "; more --ig-steps narrow it" if worry else line), worry


def projection_label(target, method: str) -> str:
    """What a row shows: 'guided: _blocks.10 unit 5 at (3, 4)' or 'saliency: class 207 golden retriever'."""
    if target.kind == "class":
        return f"{method}: class {target.class_index}" + (f" {target.class_name}" if target.class_name else "")
    where = f" at ({target.position[0]}, {target.position[1]})" if target.position is not None else ""
    return f"{method}: {target.layer} unit {target.unit}{where}"


def projections_figure(projections: Sequence, pixels: np.ndarray, boxes: Sequence,
                       method: str, times_input: bool = False) -> Image.Image:
    """`visualize deconv`'s figure: a projection_row per tasks.projection.Projection, under its
    label (saliency maps are drawn as heat unless multiplied by the input)."""
    from cnntool.io.grids import stacked

    style = "saliency" if method == "saliency" and not times_input else method
    rows = [projection_row(p.map.cpu().numpy(), pixels, box, style)
            for p, box in zip(projections, boxes)]
    return stacked(rows, gap=4, labels=[projection_label(p.target, method) for p in projections])


def projection_records(projections: Sequence, boxes: Sequence, image: str) -> list[dict]:
    """One record per projection: the image, the target, value and map statistics, and the
    receptive-field box when there is one."""
    records = []
    for projection, box in zip(projections, boxes):
        record = {"image": image, **projection.to_record()}
        if box is not None:
            record["box"] = list(box)
        records.append(record)
    return records


def save_raw_maps(path, projections: Sequence) -> None:
    """The raw maps as float32 .npy: units×C×H×W, or C×H×W for one projection."""
    from cnntool.io.writers import open_output

    maps = np.stack([p.map.cpu().numpy().astype(np.float32) for p in projections])
    with open_output(path, "wb") as handle:
        np.save(handle, maps if len(maps) > 1 else maps[0])
