"""Feature maps of one layer for one image (Zeiler & Fergus 2014)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from cnntool.core.hooks import capture
from cnntool.core.layers import resolve_layer
from cnntool.errors import CnnToolError


@dataclass(frozen=True)
class FeatureMaps:
    """maps (N, H, W) of the chosen channels, in the order of `channels`; per channel the mean
    and max activation over the map."""

    layer: str
    channels: tuple[int, ...]
    maps: torch.Tensor
    means: tuple[float, ...]
    maxima: tuple[float, ...]
    total_channels: int


def feature_maps(
    model,
    inputs: torch.Tensor,
    layer: str,
    *,
    channels: Sequence[int] | None = None,
    top: int | None = None,
    at_most: int | None = None,
) -> FeatureMaps:
    """Run one preprocessed image (C, H, W) and return `layer`'s maps: `channels`, or the `top`
    channels with the largest mean activation (most active first), or all of them — but only
    the `at_most` most active when there are more."""
    name = resolve_layer(model, layer)[0]
    with torch.no_grad(), capture(model, [name], stop_early=True) as cap:
        cap.run(inputs[None])
    output = cap.activations[name][0].float().cpu()
    if output.ndim == 1:  # a linear layer: one 1x1 "map" per unit
        output = output[:, None, None]
    if output.ndim != 3:
        raise CnnToolError(f"layer '{name}' gives shape {tuple(output.shape)}, not feature maps")
    means = output.mean(dim=(1, 2))
    count = output.shape[0]
    if channels is not None:
        bad = [c for c in channels if not 0 <= c < count]
        if bad:
            raise CnnToolError(
                f"channel {bad[0]} does not exist: layer '{name}' has {count} (0-{count - 1})"
            )
        chosen = list(channels)
    elif top is not None or (at_most is not None and count > at_most):
        top = top if top is not None else at_most
        # stable descending sort: ties keep channel order, so the choice is reproducible
        chosen = torch.sort(means, descending=True, stable=True).indices[:top].tolist()
    else:
        chosen = list(range(count))
    maps = output[chosen]
    return FeatureMaps(
        name,
        tuple(chosen),
        maps,
        tuple(means[chosen].tolist()),
        tuple(maps.amax(dim=(1, 2)).tolist()),
        count,
    )
