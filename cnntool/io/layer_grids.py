"""The pictures and records of `visualize filters` (a convolution's weights as tiles) and
`visualize activations` (one image's feature maps beside it)."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from cnntool.io.figure_style import (
    DIVERGING,
    SEQUENTIAL,
    beside,
    block_factor,
    colorbar,
    colorize,
    enlarged,
    padded,
    style_for,
    titled,
)
from cnntool.io.grids import grid, minmax_scale, symmetric_scale, to_image
from cnntool.io.untrusted import printable


def filters_grid(
    result,
    model_name: str,
    *,
    normalize: str = "filter",
    tiles: str = "pairs",
    max_filters: int = 64,
    max_inputs: int = 16,
    tile_size: int | None = None,
    scale: int = 1,
) -> Image.Image:
    """The first `max_filters` filters of a tasks.filters.Filters (Krizhevsky et al. 2012,
    Fig. 3), scaled per filter or by the layer's largest |weight| (`normalize` "global"), 0 at
    the middle. 3 input channels: an RGB tile each (0 at mid-grey). Else one tile per (output,
    input) pair for the first `max_inputs` inputs (`tiles` "pairs"), or one per output, the
    mean over its inputs ("outputs"), in a diverging colour map (blue < 0 < red) with a colour
    bar. Tiles are `tile_size` px at 1× (default: a whole number of px per kernel pixel, at
    least 8 and at least 48 px a tile), enlarged with nearest neighbour; `scale` 2 doubles
    everything."""
    style = style_for(scale)
    weight = result.weights[:max_filters].numpy()
    layer_max = float(np.abs(result.weights.numpy()).max())
    limit = layer_max if normalize == "global" else None
    outputs, inputs, kh, kw = weight.shape
    rgb = inputs == 3
    if rgb:
        shown = [symmetric_scale(w.transpose(1, 2, 0), limit) for w in weight]
        labels, columns = [str(i) for i in range(outputs)], None
    elif tiles == "outputs":
        shown = [symmetric_scale(w.mean(axis=0), limit) for w in weight]
        labels, columns = [str(i) for i in range(outputs)], None
    else:
        inputs = min(inputs, max_inputs)
        # per-filter scaling covers all of an output's input slices, so they stay comparable
        scales = [limit or float(np.abs(w).max()) for w in weight]
        shown = [
            symmetric_scale(weight[o, i], scales[o]) for o in range(outputs) for i in range(inputs)
        ]
        labels = [
            f"{o}:{i}" if inputs > 1 else str(o) for o in range(outputs) for i in range(inputs)
        ]
        columns = inputs if inputs > 1 else None
    if not rgb:
        shown = [colorize(t, DIVERGING) for t in shown]
    title = f"{model_name} {result.layer}" + (
        f" (+{result.folded} folded)" if result.folded else ""
    )
    title += f" · {kh}×{kw}" + (", RGB (0 = mid-grey)" if rgb else "")
    size = tile_size or max(8, math.ceil(48 / max(kh, kw))) * max(kh, kw)
    picture = grid(
        shown, labels, columns=columns, tile_size=size, title=printable(title), style=style
    )
    if rgb:
        return padded(picture, style)
    body = picture.height - style.title_height - style.gap
    if normalize == "global":
        bar = colorbar(
            DIVERGING,
            -layer_max,
            layer_max,
            height=body,
            style=style,
            label="weight (one scale: the layer's max |w|)",
        )
    else:
        bar = colorbar(
            DIVERGING,
            -1.0,
            1.0,
            height=body,
            style=style,
            label="weight ÷ the filter's max |w|",
            ticks=[(1.0, "+max"), (0.0, "0"), (-1.0, "−max")],
        )
    return padded(_with_bar(picture, bar, style), style)


def _with_bar(picture: Image.Image, bar: Image.Image, style) -> Image.Image:
    """A grid with its colour bar to the right, level with the tiles (below the title)."""
    canvas = Image.new(
        "RGB",
        (
            picture.width + style.gap + bar.width,
            max(picture.height, style.title_height + bar.height),
        ),
        "white",
    )
    canvas.paste(picture, (0, 0))
    canvas.paste(bar, (picture.width + style.gap, style.title_height + style.gap - style.px(7)))
    return canvas


def filter_records(result):
    """One record per filter: its L2 norm, mean, std and largest |correlation| with another."""
    return (
        {
            "layer": result.layer,
            "filter": s.index,
            "norm": s.norm,
            "mean": s.mean,
            "std": s.std,
            "max_abs_corr": s.max_abs_corr,
        }
        for s in result.stats
    )


def activations_picture(
    result,
    pixels,
    model_name: str,
    *,
    cmap: str = SEQUENTIAL,
    normalize: str = "layer",
    scale: int = 1,
) -> Image.Image:
    """The model's input (`pixels` C×H×W in [0, 1]) beside a grid of a tasks.activations
    FeatureMaps, each map labelled with its channel and mean, and a colour bar. `normalize`
    "layer" (default): one colour scale for every map shown, from their lowest to their highest
    value (the bar's numbers), so maps compare; "map": each by its own min/max. Maps and the
    input are enlarged by whole numbers with nearest neighbour."""
    style = style_for(scale)
    maps = result.maps.numpy()
    low, high = float(maps.min()), float(maps.max())
    scaled = [
        minmax_scale(m)
        if normalize == "map"
        else (np.zeros_like(m) if high <= low else (m - low) / (high - low))
        for m in maps
    ]
    side = max(maps.shape[1:])
    size = block_factor(side, 96) * side
    labels = [f"{c}: {m:.2g}" for c, m in zip(result.channels, result.means, strict=True)]
    picture = grid([colorize(m, cmap) for m in scaled], labels, tile_size=size, style=style)
    body = picture.height - 2 * style.gap
    if normalize == "map":
        bar = colorbar(
            cmap,
            0.0,
            1.0,
            height=body,
            style=style,
            label="each map: its own min … max",
            ticks=[(1.0, "max"), (0.0, "min")],
        )
    else:
        bar = colorbar(
            cmap,
            low,
            high if high > low else low + 1,
            height=body,
            style=style,
            label="activation (one scale for all maps)",
        )
    shown_input = enlarged(to_image(pixels.permute(1, 2, 0).squeeze(-1).numpy()), style.px(224))
    panel = grid([shown_input], ["input"], style=style)
    bar_box = Image.new("RGB", (bar.width, bar.height + style.gap), "white")
    bar_box.paste(bar, (0, style.gap - style.px(7)))
    how = "one colour scale" if normalize == "layer" else "each map scaled on its own"
    title = printable(
        f"{model_name} {result.layer}: {len(result.channels)} of "
        f"{result.total_channels} feature maps ({how})"
    )
    return padded(titled(beside([panel, picture, bar_box], style), title, style, margin=0), style)


def activation_records(result):
    """One record per map shown: its channel, mean and max."""
    return (
        {"layer": result.layer, "channel": c, "mean": m, "max": x}
        for c, m, x in zip(result.channels, result.means, result.maxima, strict=True)
    )
