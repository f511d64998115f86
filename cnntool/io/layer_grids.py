"""The pictures and records of `visualize filters` (a convolution's weights as tiles) and
`visualize activations` (one image's feature maps beside it)."""
from __future__ import annotations

import numpy as np
from PIL import Image

from cnntool.io.grids import colorize, grid, minmax_scale, side_by_side, symmetric_scale, to_image


def filters_grid(result, model_name: str, *, normalize: str = "filter", tiles: str = "pairs",
                 max_filters: int = 64, max_inputs: int = 16,
                 tile_size: int | None = None) -> Image.Image:
    """The first `max_filters` filters of a tasks.filters.Filters, 0 at mid-gray, scaled per
    filter or by the layer's largest |weight| (`normalize` "global"). 3 input channels: an RGB
    tile each; else a gray tile per (output, input) pair for the first `max_inputs` inputs
    (`tiles` "pairs"), or one per output, the mean over its inputs ("outputs"). Tiles are
    `tile_size` px (default 8 per kernel pixel, at least 32)."""
    weight = result.weights[:max_filters].numpy()
    limit = float(np.abs(result.weights.numpy()).max()) if normalize == "global" else None
    outputs, inputs, kh, kw = weight.shape
    if inputs == 3:
        shown = [symmetric_scale(w.transpose(1, 2, 0), limit) for w in weight]
        labels, columns = [str(i) for i in range(outputs)], None
    elif tiles == "outputs":
        shown = [symmetric_scale(w.mean(axis=0), limit) for w in weight]
        labels, columns = [str(i) for i in range(outputs)], None
    else:
        inputs = min(inputs, max_inputs)
        # per-filter scaling covers all of an output's input slices, so they stay comparable
        scales = [limit or float(np.abs(w).max()) for w in weight]
        shown = [symmetric_scale(weight[o, i], scales[o]) for o in range(outputs) for i in range(inputs)]
        labels = [f"{o}:{i}" if inputs > 1 else str(o) for o in range(outputs) for i in range(inputs)]
        columns = inputs if inputs > 1 else None
    title = f"{model_name} {result.layer}" + (f" (+{result.folded} folded)" if result.folded else "")
    return grid(shown, labels, columns=columns, tile_size=tile_size or max(32, 8 * max(kh, kw)),
                title=title)


def filter_records(result):
    """One record per filter: its L2 norm, mean, std and largest |correlation| with another."""
    return ({"layer": result.layer, "filter": s.index, "norm": s.norm, "mean": s.mean,
             "std": s.std, "max_abs_corr": s.max_abs_corr} for s in result.stats)


def activations_picture(result, pixels, model_name: str, *, cmap: str = "viridis",
                        normalize: str = "map") -> Image.Image:
    """The model's input (`pixels` C×H×W in [0, 1]) beside a grid of a tasks.activations
    FeatureMaps, each map labelled with its channel and mean, scaled by its own min/max
    (`normalize` "map") or by the layer's ("layer")."""
    maps = result.maps.numpy()
    low, high = float(maps.min()), float(maps.max())
    scaled = [minmax_scale(m) if normalize == "map" else
              (np.zeros_like(m) if high <= low else (m - low) / (high - low)) for m in maps]
    size = max(32, min(96, 4 * max(maps.shape[1:])))
    labels = [f"{c}: {m:.2g}" for c, m in zip(result.channels, result.means)]
    picture = grid([colorize(m, cmap) for m in scaled], labels, tile_size=size,
                   title=f"{model_name} {result.layer} ({cmap}, per {normalize})")
    shown_input = to_image(pixels.permute(1, 2, 0).squeeze(-1).numpy())
    shown_input = shown_input.resize((min(picture.height, 224),) * 2)
    return side_by_side([shown_input, picture])


def activation_records(result):
    """One record per map shown: its channel, mean and max."""
    return ({"layer": result.layer, "channel": c, "mean": m, "max": x}
            for c, m, x in zip(result.channels, result.means, result.maxima))
