"""Projections and synthesized inputs as images: normalized maps, receptive-field crops and
the Zeiler & Fergus layout of `visualize deconv` (PIL only; numpy arrays in, PIL images out). Grids
are
cnntool.io.grids; [0, 1] pixels to images is cnntool.io.figures.pixels_to_image."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from cnntool.io.figure_style import (
    BACKGROUND,
    DIVERGING,
    INK,
    FigureStyle,
    colorbar,
    colorize,
    enlarged,
    fitted,
    padded,
    style_for,
    titled,
)
from cnntool.io.figures import pixels_to_image
from cnntool.io.grids import symmetric_scale, to_image
from cnntool.io.untrusted import printable


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


def crop_box(
    pixels: np.ndarray, box: tuple[int, int, int, int] | None, fill: float = 0.0
) -> np.ndarray:
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
        out[:, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = pixels[:, sy0:sy1, sx0:sx1]
    return out


def outline(image: Image.Image, box: tuple[int, int, int, int] | None) -> Image.Image:
    """`image` with the receptive-field box drawn on it (clipped to the image)."""
    if box is None:
        return image
    image = image.convert("RGB")
    y0, x0, y1, x1 = box
    ImageDraw.Draw(image).rectangle(
        [max(x0, 0), max(y0, 0), min(x1, image.width) - 1, min(y1, image.height) - 1],
        outline=(255, 220, 0),
    )
    return image


def visible_box(
    box: tuple[int, int, int, int] | None, height: int, width: int
) -> tuple[int, int, int, int]:
    """The part of a receptive-field box (y0, x0, y1, x1) inside an H×W image (fields near a
    border, or deeper than the image is wide, reach past it); None: the whole image."""
    if box is None:
        return 0, 0, height, width
    y0, x0, y1, x1 = box
    y0, x0, y1, x1 = max(y0, 0), max(x0, 0), min(y1, height), min(x1, width)
    return (y0, x0, y1, x1) if y1 > y0 and x1 > x0 else (0, 0, height, width)


STRETCH_PERCENTILE = 99.0


def stretched(raw: np.ndarray, style: str) -> tuple[np.ndarray, str, float, float, str]:
    """A raw C×h×w projection (already cropped) contrast-stretched on its own: the
    STRETCH_PERCENTILE-th percentile of its nonzero magnitudes reaches the colour scale's end
    (the few brighter pixels saturate). Returns [0, 1] pixels (h×w×3), the colour map of its
    colour bar, the bar's range and label. Saliency: max over channels of |map| in a
    sequential map from 0; LRP ("relevance") the sum over colour channels, signed in a diverging
    map (blue < 0 < red, white at 0), as LRP heatmaps are shown; the others signed, 0 at
    mid-grey, per colour channel."""
    raw = np.asarray(raw, dtype=np.float64)
    if style == "relevance":
        total = raw.sum(axis=0)
        top = _percentile(np.abs(total))
        return (
            colorize(0.5 + 0.5 * np.clip(total / top, -1, 1), DIVERGING),
            DIVERGING,
            -top,
            top,
            f"relevance, ±{STRETCH_PERCENTILE:g}th pct",
        )
    if style == "saliency":
        magnitude = np.abs(raw).max(axis=0)
        top = _percentile(magnitude)
        return (
            colorize(np.clip(magnitude / top, 0, 1), "inferno"),
            "inferno",
            0.0,
            top,
            f"|grad|, {STRETCH_PERCENTILE:g}th pct = top",
        )
    limit = _percentile(np.abs(raw))
    shown = symmetric_scale(raw, limit).transpose(1, 2, 0)
    shown = np.repeat(shown, 3, axis=2) if shown.shape[2] == 1 else shown
    return shown, "gray", -limit, limit, f"±{STRETCH_PERCENTILE:g}th pct of |value|"


def _percentile(magnitude: np.ndarray) -> float:
    nonzero = magnitude[magnitude > 0]
    top = float(np.percentile(nonzero, STRETCH_PERCENTILE)) if nonzero.size else 0.0
    return top if top > 0 else 1.0


def projection_row(
    raw_map: np.ndarray, pixels: np.ndarray, box, style: str, figure: FigureStyle
) -> tuple[list[Image.Image], Image.Image]:
    """One row of `visualize deconv` as Zeiler & Fergus (2014, Fig. 2) show it: the projection
    cropped to the unit's receptive field (the part inside the image) and stretched on its own,
    the image patch under the same box, and — for a unit — the whole image with the box
    outlined; each enlarged by the same whole number with nearest neighbour. Returns the
    panels and the projection's colour bar. `style`: guided, deconv, ig or saliency."""
    height, width = pixels.shape[1:]
    y0, x0, y1, x1 = visible_box(box, height, width)
    shown, cmap, low, high, label = stretched(raw_map[:, y0:y1, x0:x1], style)
    target = figure.px(224)
    panels = [
        enlarged(to_image(shown), target),
        enlarged(pixels_to_image(pixels[:, y0:y1, x0:x1]), target),
    ]
    if box is not None:
        whole = enlarged(pixels_to_image(pixels).convert("RGB"), target)
        k = whole.width / width
        ImageDraw.Draw(whole).rectangle(
            [round(x0 * k), round(y0 * k), round(x1 * k) - 1, round(y1 * k) - 1],
            outline=(255, 220, 0),
            width=figure.px(2),
        )
        panels.append(whole)
    bar = colorbar(cmap, low, high, height=panels[0].height, style=figure, label=label)
    return panels, bar


def uncovered_warning(projection, method: str) -> str | None:
    """The warning about smooth activations (SiLU, GELU) that a rectifier rule does not cover
    (None when there are none, or for saliency, which uses the plain gradient anyway)."""
    if not projection.uncovered or method == "saliency":
        return None
    kinds = ", ".join(f"{k} ×{n}" for k, n in sorted(projection.uncovered.items()))
    return (
        f"{method}: the model also has smooth activations ({kinds}) that no rectifier rule "
        "covers; they backprop their ordinary gradient"
    )


def completeness_line(projection, worrying: float = 0.05) -> tuple[str, bool] | None:
    """Integrated gradients' completeness, for stderr, and whether its gap is worth a warning
    (over `worrying` of |F(x) − F(baseline)|); None for the other methods."""
    c = projection.completeness
    if c is None:
        return None
    subtracted = f"({c.f_baseline:.6g})" if c.f_baseline < 0 else f"{c.f_baseline:.6g}"
    line = (
        f"ig ({c.steps} steps {c.rule}, {c.baseline} baseline): Σ attributions {c.total:.6g}, "
        f"F(x) − F(baseline) = {c.f_input:.6g} − {subtracted} = {c.difference:.6g}; "
        f"completeness gap {c.gap:.3g} ({c.relative_gap:.2%})"
    )
    worry = c.relative_gap > worrying
    return (line + "; more --ig-steps narrow it" if worry else line), worry


def relevance_lines(projection, method: str) -> list[tuple[str, bool]]:
    """What LRP did to each kind of layer, for stderr once per run, and whether each line is a
    warning: smooth activations passed through without a rule, functions with no rule at all
    (their gradient carried the relevance). Empty for the other methods."""
    r = projection.relevance
    if r is None:
        return []
    counts = ", ".join(f"{what} ×{n}" for what, n in r.layers.items())
    lines = [(f"{method} ({r.rules}): {counts}", False)]
    if r.passed:
        kinds = ", ".join(f"{k} ×{n}" for k, n in sorted(r.passed.items()))
        lines.append(
            (
                f"{method}: no LRP rule for the smooth activations {kinds}; relevance passes "
                "through them unchanged (zennit's Pass)",
                True,
            )
        )
    if r.unruled:
        kinds = ", ".join(f"{k} ×{n}" for k, n in sorted(r.unruled.items()))
        lines.append(
            (
                f"{method}: no LRP rule for {kinds}; their gradient carried the relevance, "
                "so the map is not pure LRP there",
                True,
            )
        )
    return lines


def conservation_line(projection, method: str) -> str | None:
    """LRP's conservation of one map, for stderr: Σ relevance against the target's value, where
    the propagation started (None for the other methods)."""
    r = projection.relevance
    if r is None:
        return None
    return (
        f"{method}: Σ relevance {r.total:.6g} of the target's value {r.f_input:.6g}; "
        f"conservation gap {r.gap:.3g} ({r.relative_gap:.2%}), absorbed by biases and "
        "stabilizers or made by the rules"
    )


def projections_figure(
    projections: Sequence,
    pixels: np.ndarray,
    boxes: Sequence,
    method: str,
    times_input: bool = False,
    *,
    title: str | None = None,
    scale: int = 1,
) -> Image.Image:
    """`visualize deconv`'s figure: a row per tasks.projection.Projection (projection_row)
    under its label ('unit 5 at (3, 4)', 'class 207 …'), column titles on top, each row's
    colour bar on its right; saliency maps are drawn as heat unless multiplied by the input."""
    figure = style_for(scale)
    style = "saliency" if method == "saliency" and not times_input else method
    style = "relevance" if method.startswith("lrp-") else style
    rows = [
        projection_row(p.map.cpu().numpy(), pixels, box, style, figure)
        for p, box in zip(projections, boxes, strict=True)
    ]
    columns = max(len(panels) for panels, _ in rows)
    widths = [max(panels[c].width for panels, _ in rows if c < len(panels)) for c in range(columns)]
    bar_w = max(bar.width for _, bar in rows)
    gap, label_h = figure.gap * 2, figure.label_height
    names = [
        "relevance" if style == "relevance" else "projection",
        "image patch" if any(b is not None for b in boxes) else "image",
        "receptive field",
    ][:columns]
    width = sum(widths) + gap * columns + bar_w
    height = label_h + sum(label_h + max(p.height for p in panels) + gap for panels, _ in rows)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    x = 0
    for name, w in zip(names, widths, strict=True):
        draw.text((x + w // 2, 0), name, fill=INK, font=figure.title_font, anchor="ma")
        x += w + gap
    y = label_h
    for (panels, bar), projection in zip(rows, projections, strict=True):
        draw.text(
            (0, y + figure.px(2)),
            fitted(row_label(projection.target), width, figure.label_font),
            fill=INK,
            font=figure.label_font,
        )
        y += label_h
        x = 0
        for panel, w in zip(panels, widths, strict=True):
            canvas.paste(panel, (x + (w - panel.width) // 2, y))
            x += w + gap
        canvas.paste(bar, (sum(widths) + gap * columns, y - figure.px(7)))
        y += max(p.height for p in panels) + gap
    canvas = canvas.crop((0, 0, width, y - gap + figure.px(8)))
    return padded(titled(canvas, printable(title), figure, margin=0) if title else canvas, figure)


METHOD_NAMES = {
    "guided": "guided backprop (Springenberg et al. 2015)",
    "deconv": "deconvnet (Zeiler & Fergus 2014)",
    "saliency": "saliency (Simonyan et al. 2014)",
    "ig": "integrated gradients (Sundararajan et al. 2017)",
    "lrp-epsilon": "LRP-ε (Bach et al. 2015)",
    "lrp-zplus": "LRP z+ (Montavon et al. 2017)",
    "lrp-alphabeta": "LRP α-β (Bach et al. 2015)",
}


def figure_title(
    model_name: str, projections: Sequence, method: str, times_input: bool = False
) -> str:
    """'efficientnet_lite0 _blocks.10 · guided backprop (Springenberg et al. 2015)'."""
    layers = sorted(
        {p.target.layer for p in projections if p.target.kind != "class" and p.target.layer}
    )
    what = METHOD_NAMES.get(method, method) + (" × input" if times_input else "")
    relevance = getattr(projections[0], "relevance", None) if projections else None
    if relevance is not None:
        what = relevance.title  # LRP: the rule of each kind of layer
    return " ".join([model_name, *layers, "·", what])


def row_label(target) -> str:
    """'unit 5 at (3, 4)' or 'class 207 golden retriever' (user text made printable)."""
    if target.kind == "class":
        return printable(
            f"class {target.class_index}" + (f" {target.class_name}" if target.class_name else "")
        )
    where = (
        f" at ({target.position[0]}, {target.position[1]})" if target.position is not None else ""
    )
    return f"unit {target.unit}{where}"


def projection_records(projections: Sequence, boxes: Sequence, image: str) -> list[dict]:
    """One record per projection: the image, the target, value and map statistics, and the
    receptive-field box when there is one."""
    records = []
    for projection, box in zip(projections, boxes, strict=True):
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
