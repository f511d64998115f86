"""Occlusion sensitivity (Zeiler & Fergus 2014, Section 4.2 and Fig. 7).

A square occluder slides over the model input; at each position the occluded copy is
classified (many copies per forward pass). The maps, one value per occluder position: the
probability of the class (the true one, or the one chosen; by default the top prediction on the
unoccluded image), the most probable class and its probability, and optionally a unit's mean
activation (ZF show the total activation of the strongest feature map of layer 5: the same up
to the number of positions).

Positions follow captum's `Occlusion`: top-left corners at 0, stride, 2·stride, … up to the
first one whose window reaches the last row/column (ceil((H − size) / stride) + 1 of them), a
window past the border clipped to the image, so every pixel is covered. `OcclusionMaps.pixel_drop`
turns the probability map into captum's attribution: the drop in probability caused by each
window, averaged over the windows that cover a pixel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from cnntool.core.hooks import capture
from cnntool.core.layers import resolve_layer
from cnntool.core.logits import main_output
from cnntool.errors import CnnToolError
from cnntool.tasks.cam import class_target
from cnntool.tasks.projection import Target

FILLS = ("grey", "mean", "0")


@dataclass(frozen=True)
class OcclusionMaps:
    """Maps over occluder positions (len(rows) × len(cols)); `rows`/`cols` are the occluders'
    top-left corners in model-input pixels, `size` and `stride` in pixels."""

    size: int
    stride: int
    fill: str
    fill_rgb: tuple[float, ...]  # the occluder's colour as [0, 1] pixels (for drawing)
    rows: tuple[int, ...]
    cols: tuple[int, ...]
    height: int
    width: int
    target: Target
    clean_probability: float
    probability: Tensor  # p(target class)
    top_class: Tensor  # int64: the most probable class
    top_probability: Tensor
    class_names: tuple[str, ...] | None = None
    unit: Target | None = None
    unit_clean: float | None = None
    unit_map: Tensor | None = None

    def windows(self) -> list[tuple[int, int, int, int]]:
        """(y0, x0, y1, x1) of every occluder, row by row, clipped to the image."""
        return [
            (r, c, min(r + self.size, self.height), min(c + self.size, self.width))
            for r in self.rows
            for c in self.cols
        ]

    def pixel_drop(self) -> Tensor:
        """captum's Occlusion attribution of the class probability (H×W): for each pixel, the
        mean over the windows covering it of (unoccluded p − occluded p)."""
        total = torch.zeros(self.height, self.width, dtype=torch.float64)
        count = torch.zeros_like(total)
        drops = (self.clean_probability - self.probability.double()).flatten().tolist()
        for (y0, x0, y1, x1), drop in zip(self.windows(), drops, strict=True):
            total[y0:y1, x0:x1] += drop
            count[y0:y1, x0:x1] += 1
        return total / count.clamp(min=1)

    def top_classes(self) -> list[tuple[int, str | None, float]]:
        """(class, name, share of the positions) of every class that is on top somewhere, most
        frequent first."""
        values, counts = torch.unique(self.top_class, return_counts=True)
        order = sorted(
            zip(values.tolist(), counts.tolist(), strict=True), key=lambda vc: (-vc[1], vc[0])
        )
        total = self.top_class.numel()
        return [(c, self._name(c), n / total) for c, n in order]

    def _name(self, index: int) -> str | None:
        names = self.class_names
        return names[index] if names is not None and 0 <= index < len(names) else None

    def to_record(self) -> dict:
        worst = int(self.probability.flatten().argmin())
        record = {
            "target": self.target.to_record(),
            "probability": round(self.clean_probability, 6),
            "min_probability": round(float(self.probability.min()), 6),
            "min_at": [self.rows[worst // len(self.cols)], self.cols[worst % len(self.cols)]],
            "positions": [len(self.rows), len(self.cols)],
            "size": self.size,
            "stride": self.stride,
            "fill": self.fill,
            "top_classes": [
                {"class": c, "name": n, "share": round(s, 4)} for c, n, s in self.top_classes()
            ],
        }
        if self.unit is not None:
            record["unit"] = {
                **self.unit.to_record(),
                "clean": round(self.unit_clean, 6),
                "min": round(float(self.unit_map.min()), 6),
                "max": round(float(self.unit_map.max()), 6),
            }
        return record


def starts(extent: int, size: int, stride: int) -> tuple[int, ...]:
    """Top-left corners along one axis (captum's count: ceil((extent − size) / stride) + 1)."""
    return tuple(k * stride for k in range(math.ceil(max(extent - size, 0) / stride) + 1))


def check_window(size: int, stride: int, height: int, width: int) -> None:
    if size > min(height, width):
        raise CnnToolError(
            f"the occluder ({size} px) is larger than the model input "
            f"({height}×{width}); give a smaller --size"
        )
    if stride > size:
        raise CnnToolError(
            f"a stride ({stride}) larger than the occluder ({size}) leaves pixels "
            "never occluded; give --stride at most --size"
        )


def fill_pixels(kind: str, pixels: Tensor, preprocessing) -> Tensor:
    """The occluder's colour as [0, 1] pixels (C): 'grey' 0.5 (ZF's grey square), 'mean' the
    image's own mean colour, '0' what the model sees as zero input (captum's default baseline:
    the normalization mean, in the image's channels and [0, 1], whatever the model's order and
    range)."""
    channels = pixels.shape[0]
    if kind == "grey":
        return torch.full((channels,), 0.5, dtype=pixels.dtype)
    if kind == "mean":
        return pixels.flatten(1).mean(1)
    if kind == "0":
        zero = torch.zeros((channels, 1, 1), dtype=pixels.dtype)
        return preprocessing.denormalize(zero)[:, 0, 0]
    raise CnnToolError(f"unknown fill '{kind}'; use one of {', '.join(FILLS)}")


def occlusion_maps(
    model: nn.Module,
    x: Tensor,
    *,
    size: int = 32,
    stride: int = 8,
    fill: Tensor | float = 0.0,
    fill_name: str = "0",
    fill_rgb: Sequence[float] = (0.5, 0.5, 0.5),
    target: Target | None = None,
    unit: Target | None = None,
    class_names: Sequence[str] | None = None,
    batch_size: int = 64,
) -> OcclusionMaps:
    """Slide a size×size occluder over `x` (C×H×W normalized model input), setting the window to
    `fill` (a number or a C-vector, in the model's input space), `batch_size` copies per forward.

    `target`: the class whose probability is mapped (`Target.logit(index or name)`; None: the top
    class of the unoccluded image). `unit`: `Target.unit_of(layer, channel)` also maps that
    channel's mean activation (channel None: the channel with the largest mean on the
    unoccluded image)."""
    x = x[0] if x.dim() == 4 else x
    channels, height, width = x.shape
    check_window(size, stride, height, width)
    rows, cols = starts(height, size, stride), starts(width, size, stride)
    fill_value = torch.as_tensor(fill, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
    unit = _resolved_unit(model, unit)
    layers = [unit.layer] if unit is not None else []
    windows = [(r, c) for r in rows for c in cols]
    probs, unit_values = [], []
    with torch.no_grad(), capture(model, layers) as cap:
        model.eval()
        clean_logits = main_output(model(x[None]))
        if clean_logits is None or clean_logits.dim() != 2:
            raise CnnToolError("the model's output is not N×classes logits")
        chosen = class_target(target or Target.logit(), clean_logits, 0, class_names)
        clean_p = torch.softmax(clean_logits.double(), 1)[0, chosen.class_index]
        if unit is not None:
            unit = _chosen_channel(unit, cap.activations[unit.layer])
            unit_clean = float(_channel_means(cap.activations[unit.layer], unit)[0])
        for start in range(0, len(windows), batch_size):
            part = windows[start : start + batch_size]
            copies = x.expand(len(part), -1, -1, -1).clone()
            for copy, (r, c) in zip(copies, part, strict=True):
                copy[:, r : r + size, c : c + size] = fill_value
            probs.append(torch.softmax(main_output(model(copies)).double(), 1).cpu())
            if unit is not None:
                unit_values.append(_channel_means(cap.activations[unit.layer], unit).double().cpu())
    p = torch.cat(probs)
    shape = (len(rows), len(cols))
    top_p, top_class = p.max(1)
    return OcclusionMaps(
        size=size,
        stride=stride,
        fill=fill_name,
        fill_rgb=tuple(float(v) for v in fill_rgb),
        rows=rows,
        cols=cols,
        height=height,
        width=width,
        target=chosen,
        clean_probability=float(clean_p),
        probability=p[:, chosen.class_index].reshape(shape),
        top_class=top_class.reshape(shape),
        top_probability=top_p.reshape(shape),
        class_names=tuple(class_names) if class_names is not None else None,
        unit=unit,
        unit_clean=unit_clean if unit is not None else None,
        unit_map=torch.cat(unit_values).reshape(shape) if unit is not None else None,
    )


def _resolved_unit(model, unit: Target | None) -> Target | None:
    if unit is None:
        return None
    return (
        Target.unit_of(resolve_layer(model, unit.layer)[0], unit.unit)
        if unit.unit is not None
        else Target.unit_of(resolve_layer(model, unit.layer)[0])
    )


def _chosen_channel(unit: Target, output: Tensor) -> Target:
    if output.dim() not in (2, 4):
        raise CnnToolError(
            f"layer '{unit.layer}' gives a {output.dim()}-d output; pick a "
            "convolutional (N×C×H×W) or fully connected (N×C) layer"
        )
    channels = output.shape[1]
    if unit.unit is None:
        means = output[0].flatten(1).mean(1) if output.dim() == 4 else output[0]
        return Target.unit_of(unit.layer, int(means.argmax()))
    if not 0 <= unit.unit < channels:
        raise CnnToolError(
            f"unit {unit.unit} is out of range; layer '{unit.layer}' has "
            f"{channels} channels (0 to {channels - 1})"
        )
    return unit


def _channel_means(output: Tensor, unit: Target) -> Tensor:
    values = output[:, unit.unit]
    return values.flatten(1).mean(1) if values.dim() > 1 else values


def occlude_image(
    loaded,
    pixels: Tensor,
    *,
    size: int = 32,
    stride: int = 8,
    fill: str = "grey",
    target: Target | None = None,
    unit: Target | None = None,
    batch_size: int = 64,
) -> OcclusionMaps:
    """`occlusion_maps` of one image of a LoadedModel (`pixels` C×H×W in [0, 1], as fed)."""
    colour = fill_pixels(fill, pixels, loaded.preprocessing)
    x = loaded.preprocessing.normalize(pixels).to(loaded.device)
    value = loaded.preprocessing.normalize(colour[:, None, None].expand(-1, 1, 1))[:, 0, 0]
    if fill == "0":
        value = torch.zeros_like(value)
    rgb = colour.expand(3).tolist() if colour.numel() == 1 else colour[:3].tolist()
    return occlusion_maps(
        loaded.module,
        x,
        size=size,
        stride=stride,
        fill=value.to(loaded.device),
        fill_name=fill,
        fill_rgb=rgb,
        target=target,
        unit=unit,
        class_names=loaded.class_names,
        batch_size=batch_size,
    )
