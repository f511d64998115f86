"""The microscope's computed pictures of a unit: guided-backprop projections of its top hits
(tasks.projection) and its feature visualization (tasks.maximize). Raw arrays out; io turns
them into images.

The feature visualization is the one call into tasks.maximize (`visualize_units`): whatever
maximize's default recipe is for this input (MACO for colour models, regularized pixels for
small grayscale ones), the microscope takes it, with only the number of steps overridable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn

from cnntool.errors import CnnToolError
from cnntool.tasks.microscope.analysis import shown_box
from cnntool.tasks.microscope.plan import LayerPlan
from cnntool.tasks.top_patches import Hit

VISUALIZATION_BATCH = 64  # units optimized together (memory grows with it)


def project_hits(
    model: nn.Module,
    preprocessing,
    dataset,
    layer: LayerPlan,
    hits: Sequence[Hit],
    cache: dict | None = None,
) -> list[np.ndarray | None]:
    """Per hit, guided backprop (Springenberg et al. 2015) of the unit at the hit's position on
    its image, cropped as the hit's patch is (analysis.shown_box) in model-input pixels (zeros
    past the border; the whole input where a unit sees all of it): C×h×w float32, signed. None for
    an
    image that cannot be read any more. `cache` keeps model inputs by dataset index."""
    from cnntool.tasks.projection import Target, project

    cache = {} if cache is None else cache
    spatial = len(layer.output_shape) == 3
    maps = []
    for hit in hits:
        x = _input(dataset, preprocessing, hit.index, cache)
        if x is None:
            maps.append(None)
            continue
        target = Target.unit_of(layer.name, hit.unit, tuple(hit.position) if spatial else None)
        projected = project(model, x.to(next(model.parameters()).device), "guided", target).map
        # shown as a colour image: the image's channels, also for a BGR model
        raw = preprocessing.image_channels(projected.cpu()).numpy()
        box = None
        if layer.field is not None and spatial:
            # the patch's own box (a window round the peak where the field is most of the input)
            field_box = (
                hit.input_box if hit.input_box is not None else layer.field.input_box(*hit.position)
            )
            box = shown_box(field_box, (0, 0, *raw.shape[1:]))
        maps.append(_crop(raw, box))
    return maps


def _input(dataset, preprocessing, index: int, cache: dict):
    if index not in cache:
        try:
            pixels, _ = dataset.load_pixels(index, preprocessing)
        except CnnToolError:
            cache[index] = None
        else:
            cache[index] = preprocessing.normalize(pixels)
    return cache[index]


def _crop(raw: np.ndarray, box: tuple[int, int, int, int] | None) -> np.ndarray:
    """The part of C×H×W `raw` under box (y0, x0, y1, x1), zeros outside the input."""
    if box is None:
        return raw
    y0, x0, y1, x1 = box
    channels, height, width = raw.shape
    out = np.zeros((channels, y1 - y0, x1 - x0), dtype=raw.dtype)
    sy0, sx0, sy1, sx1 = max(y0, 0), max(x0, 0), min(y1, height), min(x1, width)
    if sy1 > sy0 and sx1 > sx0:
        out[:, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = raw[:, sy0:sy1, sx0:sx1]
    return out


@dataclass(frozen=True)
class Visualization:
    """A unit's feature visualization: C×H×W `pixels` in [0, 1], the unit's `peak` on it (its
    largest value at any position, what the scan ranks hits by), the layer's `ceiling` and,
    once `checked`, why it is not a result (`failure`: "flat", "below the data's best"; None:
    it is one)."""

    pixels: np.ndarray
    peak: float | None = None
    contrast: float | None = None
    failure: str | None = None
    ceiling: float | None = None  # the most the layer can output (ReLU6: 6), None: unbounded
    positions: int = 1  # how many positions the unit's value is the mean of (judge.check_picture)


def checked(pictures: Sequence[Visualization], units) -> list[Visualization]:
    """Each picture with tasks.maximize's check: flat or not, and whether the unit's peak on it
    is above its largest activation on DATA (`units`: the layer view's UnitViews, with `max`),
    or at the layer's ceiling (a saturating ReLU6 unit that reaches 6 where DATA does too)."""
    from dataclasses import replace

    from cnntool.tasks.maximize.judge import check_picture

    out = []
    for picture, unit in zip(pictures, units, strict=True):
        check = check_picture(
            picture.pixels, picture.peak, unit.max, picture.ceiling, positions=picture.positions
        )
        out.append(replace(picture, contrast=check.contrast, failure=check.reason))
    return out


def visualization_config(preprocessing, steps: int | None = None, *, full: bool = False):
    """The recipe of the microscope's feature visualizations for this input (a
    tasks.maximize.MaximizeConfig): maximize's default for small inputs or with `full`, else
    its thumbnail recipe (MACO at 128 px, 64 steps); `steps` overrides the number of steps."""
    from cnntool.tasks.maximize import MaximizeConfig, thumbnail_defaults, with_overrides

    config = MaximizeConfig.for_input(preprocessing.input_shape)
    if (
        not full
        and config.param == "maco"
        and min(preprocessing.input_shape[1:]) > thumbnail_defaults().size
    ):
        config = thumbnail_defaults()
    return with_overrides(config, steps=steps)


def describe_config(config) -> str:
    """One line on a visualization recipe, for stderr and the site."""
    side = f"{config.size}×{config.size} px, " if config.size else "the model's input size, "
    return f"{config.param}, {side}{config.steps} steps at lr {config.lr:g}"


def visualize_units(
    model: nn.Module,
    preprocessing,
    layer: str,
    units: Sequence[int],
    *,
    steps: int | None = None,
    seed: int = 0,
    config=None,
    progress: Callable[[int], None] | None = None,
) -> list[Visualization]:
    """The input that maximizes each unit (the channel's mean over positions), C×H×W pixels in
    [0, 1] and the unit's peak on it, optimized VISUALIZATION_BATCH units at a time (all the
    units of a microscope layer by default: one batch) with `config` (a
    tasks.maximize.MaximizeConfig; None: `visualization_config`), `steps` overriding its
    number of steps. `progress(n)` counts steps."""
    from cnntool.tasks.maximize import maximize, objective, with_overrides

    config = with_overrides(config or visualization_config(preprocessing), steps=steps)
    pictures: list[Visualization] = []
    for start in range(0, len(units), VISUALIZATION_BATCH):
        chunk = list(units[start : start + VISUALIZATION_BATCH])
        results = maximize(
            model,
            preprocessing,
            objective(model, "channel", chunk, layer),
            config,
            seed=seed,
            progress=progress,
        )
        pictures += [
            Visualization(
                np.asarray(r.pixels.numpy(), dtype=np.float32),
                r.peak,
                ceiling=r.ceiling,
                positions=r.positions,
            )
            for r in results
        ]
    return pictures


def visualization_steps(preprocessing, steps: int | None, units: int, config=None) -> int:
    """How many optimization steps `visualize_units` will run for `units` units (progress)."""
    per_batch = steps or (config or visualization_config(preprocessing)).steps
    return per_batch * -(-units // VISUALIZATION_BATCH)
