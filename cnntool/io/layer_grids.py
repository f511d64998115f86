"""The pictures and records of `visualize filters` (a convolution's weights as tiles) and
`visualize activations` (one image's feature maps beside it)."""

from __future__ import annotations

import math
from dataclasses import dataclass

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
    number,
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
    Fig. 3): `filter_sheet` of its weights, titled with the model, the layer and the
    BatchNorm folded in."""
    title = f"{model_name} {result.layer}" + (
        f" (+{result.folded} folded)" if result.folded else ""
    )
    return filter_sheet(
        result.weights.numpy(),
        title,
        normalize=normalize,
        tiles=tiles,
        max_filters=max_filters,
        max_inputs=max_inputs,
        tile_size=tile_size,
        scale=scale,
    )


def filter_sheet(
    weights: np.ndarray,
    title: str,
    *,
    normalize: str = "filter",
    tiles: str = "pairs",
    max_filters: int = 64,
    max_inputs: int = 16,
    tile_size: int | None = None,
    scale: int = 1,
) -> Image.Image:
    """The first `max_filters` filters of `weights` (out, in, kh, kw), scaled per filter or by
    the layer's largest |weight| (`normalize` "global"), 0 at the middle. 3 input channels: an
    RGB tile each (0 at mid-grey). Else one tile per (output, input) pair for the first
    `max_inputs` inputs (`tiles` "pairs"), or one per output, the mean over its inputs
    ("outputs"), in a diverging colour map (blue < 0 < red) with a colour bar. Tiles are
    `tile_size` px at 1× (default: a whole number of px per kernel pixel, at least 8 and at
    least 48 px a tile), enlarged with nearest neighbour; `scale` 2 doubles everything. The
    title gets the kernel size (and the RGB rule) added."""
    style = style_for(scale)
    weight = weights[:max_filters]
    layer_max = float(np.abs(weights).max())
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


ROBUST_PERCENTILE = 99.5  # of |a| over all maps shown: the shared scale's end


@dataclass(frozen=True)
class SharedRange:
    """One colour scale for all maps shown: `low` … `high`, the `percentile`th percentile of
    |a| over all of them (from 0 for a layer with no negative value, else ±it, 0 in the
    middle), and how many values lie beyond it (drawn in the end colours, marked by the
    colour bar's arrows) and how far (`largest`: the largest |a|)."""

    low: float
    high: float
    percentile: float
    above: int
    below: int
    total: int
    largest: float

    @property
    def signed(self) -> bool:
        return self.low < 0

    @property
    def extend(self) -> str:
        return {(1, 1): "both", (1, 0): "max", (0, 1): "min"}.get(
            (int(self.above > 0), int(self.below > 0)), "neither"
        )

    def scaled(self, values: np.ndarray) -> np.ndarray:
        return np.clip((values - self.low) / (self.high - self.low), 0.0, 1.0)

    @property
    def description(self) -> str:
        """The bar's label: the scale and what was clipped."""
        share = (self.above + self.below) / max(1, self.total)
        end = f"±{number(self.high)}" if self.signed else f"0 … {number(self.high)}"
        clipped = (
            f"; {100 * share:.2g}% beyond it, up to "
            f"{'±' if self.signed else ''}{number(self.largest)}"
            if self.above + self.below
            else ""
        )
        return f"activation, one scale {end}{clipped}"


def shared_range(maps: np.ndarray, percentile: float = ROBUST_PERCENTILE) -> SharedRange:
    """The shared colour scale of `maps` (see SharedRange): a few outlying values (one hot
    channel, one hot pixel) no longer wash every other map out, as the maps' min … max did."""
    magnitude = np.abs(maps)
    largest = float(magnitude.max()) if magnitude.size else 0.0
    top = float(np.percentile(magnitude, percentile)) if magnitude.size else 0.0
    if top <= 0:  # all but a few values are 0: the range of those few
        top = largest or 1.0
    low = -top if (maps < 0).any() else 0.0
    return SharedRange(
        low=low,
        high=top,
        percentile=percentile,
        above=int((maps > top).sum()),
        below=int((maps < low).sum()),
        total=int(maps.size),
        largest=largest,
    )


def activations_picture(
    result,
    pixels,
    model_name: str,
    *,
    cmap: str | None = None,
    normalize: str = "layer",
    percentile: float = ROBUST_PERCENTILE,
    scale: int = 1,
) -> Image.Image:
    """The model's input (`pixels` C×H×W in [0, 1]) beside a grid of a tasks.activations
    FeatureMaps, each map labelled with its channel and mean, and a colour bar. `normalize`
    "layer" (default): one colour scale for every map shown (`shared_range`: 0 … or ± the
    `percentile`th percentile of |a| over them, values beyond it in the end colours and
    arrows on the bar), so maps compare; "map": each by its own min/max. `cmap` None: viridis,
    or blue–white–red centred on 0 when the layer has negative values and one scale. Maps and
    the input are enlarged by whole numbers with nearest neighbour."""
    style = style_for(scale)
    maps = result.maps.numpy()
    shared = shared_range(maps, percentile) if normalize == "layer" else None
    if cmap is None:
        cmap = DIVERGING if shared is not None and shared.signed else SEQUENTIAL
    scaled = [minmax_scale(m) if shared is None else shared.scaled(m) for m in maps]
    side = max(maps.shape[1:])
    size = block_factor(side, 96) * side
    labels = [f"{c}: {m:.2g}" for c, m in zip(result.channels, result.means, strict=True)]
    picture = grid([colorize(m, cmap) for m in scaled], labels, tile_size=size, style=style)
    body = picture.height - 2 * style.gap
    if shared is None:
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
            shared.low,
            shared.high,
            height=body,
            style=style,
            label=shared.description,
            extend=shared.extend,
        )
    shown_input = enlarged(to_image(pixels.permute(1, 2, 0).squeeze(-1).numpy()), style.px(224))
    panel = grid([shown_input], ["input"], style=style)
    bar_box = Image.new("RGB", (bar.width, bar.height + style.gap), "white")
    bar_box.paste(bar, (0, style.gap - style.px(7)))
    how = (
        "each map scaled on its own"
        if shared is None
        else f"one colour scale, to the {percentile:g}th percentile of |a|"
    )
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
