"""How a model wants its input: resize, center crop, channels, channel order, range, normalization.

Kept apart from the model so analyses can map model-input pixels back to the original image
(top patches) and work before the normalization (attacks work in [0, 1] pixel space and
normalize inside the model they call).

Two spaces: *pixels* are what every analysis handles and every figure shows — the image's own
channels (RGB, gray, RGBA) in [0, 1]; the *model input* is what the network takes —
`normalize(pixels)`: channels in the model's order (RGB or Caffe's BGR), scaled to its range
(1: [0, 1], 255: [0, 255]), minus `mean`, divided by `std`. `mean` and `std` are in the model's
order and range (Caffe's VGG: BGR, 255, mean 103.939,116.779,123.68, std 1).

The JSON form (`to_dict`/`from_dict`, the `--preprocessing FILE.json` schema and what
`save_checkpoint` stores) is

    {"input_size": [3, 32, 32], "resize": 32, "interpolation": "bilinear",
     "mean": [0.4914, 0.4822, 0.4465], "std": [0.247, 0.2435, 0.2616]}

plus, for Caffe-style models, `"channel_order": "bgr"` and `"range": 255`. `resize` N resizes
the shorter side to N (then the center crop); [H, W] resizes the image to exactly H×W
(torchvision's `Resize((H, W))`, aspect ratio not kept); "none" does not resize (the image is
center-cropped, or padded with black). A missing `resize` means [H, W] of the input size:
resize to the input size, no crop. `crop_pct` is accepted instead of `resize`, as timm
defines it: resize = floor(input size / crop_pct).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image

from cnntool.core.pixels import PIL_FILTERS, crop_padded, in_mode
from cnntool.errors import CnnToolError

INTERPOLATIONS = tuple(PIL_FILTERS)
SCHEMA_KEYS = (
    "input_size",
    "resize",
    "interpolation",
    "mean",
    "std",
    "crop_pct",
    "channel_order",
    "range",
)
CHANNEL_ORDERS = ("rgb", "bgr")
INPUT_RANGES = (1, 255)
# An input larger than this is a typo (or a 100000-px attack on memory), not a model.
MAX_SIDE = 16384
MAX_PIXELS = 8192 * 8192
_PIL_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


class PreprocessingError(CnnToolError):
    """A preprocessing that cannot be used: a bad size, mean, std or interpolation."""


@dataclass(frozen=True)
class Preprocessing:
    """PIL image -> model input tensor.

    The image is converted to `channels` (1 = grayscale, 3 = RGB, 4 = RGBA), resized with
    `interpolation` — its shorter side to `resize` (an int), or to exactly `resize` (H, W) (a
    pair), or not at all (None) — center-cropped to `crop` (H, W), padded with zeros where the
    image is smaller, and scaled to [0, 1] pixels; `normalize` then puts the channels in
    `channel_order` ("rgb" or "bgr"), multiplies by `input_range` (1 or 255) and subtracts
    `mean`, divides by `std`. Bad values raise a PreprocessingError (one sentence).
    """

    crop: tuple[int, int]
    resize: int | tuple[int, int] | None
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    channels: int = 3
    channel_order: str = "rgb"
    input_range: int = 1

    def __post_init__(self):
        object.__setattr__(self, "crop", tuple(self.crop))
        if isinstance(self.resize, (list, tuple)):
            object.__setattr__(self, "resize", tuple(self.resize))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        validate(
            self.channels,
            self.crop,
            self.resize,
            self.interpolation,
            self.mean,
            self.std,
            channel_order=self.channel_order,
            input_range=self.input_range,
        )

    # --- the JSON schema ---------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], what: str = "the preprocessing") -> Preprocessing:
        """A Preprocessing from the JSON schema (see the module docstring). `input_size` is
        required; a missing `resize` means "resize to the input size" (no margin), a missing
        `interpolation` bilinear, missing `mean`/`std` no normalization (0 and 1), a missing
        `channel_order` RGB and a missing `range` [0, 1]."""
        fields = parse_fields(data, what)
        if "size" not in fields:
            raise PreprocessingError(f'{what} has no input_size (e.g. "input_size": [3, 32, 32])')
        channels = fields.get("channels", 3)
        size = fields["size"]
        return cls(
            crop=size,
            resize=_resize_from(fields, size, default=tuple(size)),
            interpolation=fields.get("interpolation", "bilinear"),
            mean=broadcast(fields.get("mean", (0.0,)), channels, "mean", what),
            std=broadcast(fields.get("std", (1.0,)), channels, "std", what),
            channels=channels,
            channel_order=fields.get("channel_order", "rgb"),
            input_range=fields.get("range", 1),
        )

    def to_dict(self) -> dict:
        """The JSON schema form; `from_dict(p.to_dict()) == p`. `channel_order` and `range` are
        written when they are not the default (RGB, [0, 1])."""
        data = {
            "input_size": [self.channels, *self.crop],
            "resize": "none"
            if self.resize is None
            else list(self.resize)
            if isinstance(self.resize, tuple)
            else self.resize,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
        }
        if self.channel_order != "rgb":
            data["channel_order"] = self.channel_order
        if self.input_range != 1:
            data["range"] = self.input_range
        return data

    def describe(self) -> str:
        """'3×32×32, resize 32 bilinear, mean (0.491, 0.482, 0.447), std (0.247, 0.243, 0.261)';
        a Caffe-style feed adds 'BGR, 0–255' before the mean."""
        size = "×".join(str(v) for v in self.input_shape)
        feed = self.feed_words()
        return (
            f"{size}, {self.resize_words()}{', ' + feed if feed else ''}, "
            f"mean {_numbers(self.mean)}, std {_numbers(self.std)}"
        )

    def resize_words(self) -> str:
        """'resize 32 bilinear', 'resize to 48×64 bilinear' (exactly, no crop when that is the
        input size) or 'no resize'."""
        if self.resize is None:
            return "no resize"
        if isinstance(self.resize, tuple):
            exact = "×".join(map(str, self.resize))
            whole = " (no crop)" if self.resize == self.crop else ""
            return f"resize to {exact} {self.interpolation}{whole}"
        return f"resize {self.resize} {self.interpolation}"

    def feed_words(self) -> str:
        """'BGR, 0–255' for a non-default channel order and range ('' for RGB in [0, 1])."""
        words = []
        if self.channel_order != "rgb":
            words.append(self.channel_order.upper())
        if self.input_range != 1:
            words.append(f"0–{self.input_range}")
        return ", ".join(words)

    # --- geometry ----------------------------------------------------------------------------

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one model input."""
        return (self.channels, self.crop[0], self.crop[1])

    def convert(self, image: Image.Image) -> Image.Image:
        """`image` in the mode the model takes ('L', 'RGB', or 'RGBA' with the file's own alpha
        plane), unresized."""
        return in_mode(image, self.pil_mode)

    @property
    def pil_mode(self) -> str:
        """The PIL mode images are converted to: 'L', 'RGB' or 'RGBA'."""
        mode = _PIL_MODES.get(self.channels)
        if mode is None:
            raise PreprocessingError(
                f"the model takes {self.channels}-channel input, and images give 1 (grayscale), "
                "3 (RGB) or 4 (RGBA) channels; such a model can be profiled, not fed images"
            )
        return mode

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(w, h) after the resize: the shorter side to `resize` (aspect ratio kept), or the
        whole image to `resize` (H, W)."""
        if self.resize is None:
            return width, height
        if isinstance(self.resize, tuple):
            return self.resize[1], self.resize[0]
        # torchvision truncates the long side (int), and so do we, to give identical inputs.
        if width <= height:
            return self.resize, max(1, int(self.resize * height / width))
        return max(1, int(self.resize * width / height)), self.resize

    def upscale(self, width: int, height: int) -> float:
        """How much an image of this size is enlarged (> 1) or shrunk (< 1) on its way in."""
        return self.resized_size(width, height)[0] / max(width, 1)

    def crop_offset(self, width: int, height: int) -> tuple[int, int]:
        """(left, top) of the center crop inside the resized image, as torchvision computes it."""
        return self._offset_in_resized(*self.resized_size(width, height))

    def to_original(self, x: float, y: float, width: int, height: int) -> tuple[float, float]:
        """Map a point in model-input pixels back to the original image's pixels."""
        rw, rh = self.resized_size(width, height)
        left, top = self.crop_offset(width, height)
        return (x + left) * width / rw, (y + top) * height / rh

    # --- pixels ------------------------------------------------------------------------------

    def to_pixels(self, image: Image.Image):
        """The model input in [0, 1] before normalization: a float tensor (C, H, W)."""
        import numpy as np
        import torch

        image = in_mode(image, self.pil_mode)
        rw, rh = self.resized_size(*image.size)
        if (rw, rh) != image.size:
            image = image.resize((rw, rh), PIL_FILTERS[self.interpolation])
        left, top = self._offset_in_resized(rw, rh)
        ch, cw = self.crop
        image = crop_padded(image, left, top, cw, ch)
        array = np.asarray(image, dtype=np.float32) / 255.0
        if array.ndim == 2:
            array = array[:, :, None]
        return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()

    def _offset_in_resized(self, rw: int, rh: int) -> tuple[int, int]:
        return int(round((rw - self.crop[1]) / 2.0)), int(round((rh - self.crop[0]) / 2.0))

    def normalize(self, pixels):
        """[0, 1] pixels (..., C, H, W) -> model input: the model's channel order, times its
        range, minus mean, over std."""
        import torch

        pixels = self.model_channels(pixels)
        if self.input_range != 1:
            pixels = pixels * self.input_range
        mean = torch.tensor(self.mean, dtype=pixels.dtype, device=pixels.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=pixels.dtype, device=pixels.device).view(-1, 1, 1)
        return (pixels - mean) / std

    def denormalize(self, tensor):
        """Model input (..., C, H, W) -> [0, 1] pixels in the image's channel order."""
        import torch

        mean = torch.tensor(self.mean, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        tensor = tensor * std + mean
        if self.input_range != 1:
            tensor = tensor / self.input_range
        return self.image_channels(tensor)

    def _channel_permutation(self) -> list[int] | None:
        """Where each model channel comes from in the image (None: the same order). BGR swaps
        the first and third channel (a fourth, alpha, stays)."""
        if self.channel_order == "rgb":
            return None
        return [2, 1, 0, *range(3, self.channels)]

    def model_channels(self, tensor):
        """(..., C, H, W) in the image's channel order -> in the model's (RGB -> BGR)."""
        order = self._channel_permutation()
        return tensor if order is None else tensor[..., order, :, :]

    def image_channels(self, tensor):
        """(..., C, H, W) in the model's channel order (a first layer's filters, a map in
        model-input space) -> in the image's, to be shown as RGB. Swapping is its own inverse."""
        return self.model_channels(tensor)

    def __call__(self, image: Image.Image):
        """PIL image -> normalized model input (C, H, W)."""
        return self.normalize(self.to_pixels(image))


def _numbers(values) -> str:
    return "(" + ", ".join(f"{round(v, 3):g}" for v in values) + ")"


# --- validation and the schema's fields ---------------------------------------------------------


def validate(
    channels,
    crop,
    resize,
    interpolation,
    mean,
    std,
    what: str = "the preprocessing",
    *,
    channel_order: str = "rgb",
    input_range: int = 1,
) -> None:
    """Raise a PreprocessingError (one sentence) for values no image pipeline can use."""
    if not isinstance(channels, int) or isinstance(channels, bool) or not 1 <= channels <= 64:
        raise PreprocessingError(f"{what}: {channels!r} is not a number of input channels")
    check_size(crop, what)
    if isinstance(resize, tuple):
        check_size(resize, f"{what}: resize")
    elif resize is not None:
        if not _is_int(resize) or resize < 1:
            raise PreprocessingError(
                f"{what}: resize {resize!r} is not a positive number of pixels"
            )
        if resize > MAX_SIDE:
            raise PreprocessingError(
                f"{what}: resize {resize} is too large (at most {MAX_SIDE} px)"
            )
    if channel_order not in CHANNEL_ORDERS:
        raise PreprocessingError(
            f"{what}: unknown channel order {channel_order!r} (use rgb or bgr)"
        )
    if channel_order == "bgr" and channels not in (3, 4):
        raise PreprocessingError(
            f"{what}: the channel order bgr needs 3 (or 4) input channels, not {channels}"
        )
    if not _is_int(input_range) or input_range not in INPUT_RANGES:
        raise PreprocessingError(f"{what}: range {input_range!r} is not 1 ([0, 1]) or 255")
    if interpolation not in PIL_FILTERS:
        raise PreprocessingError(
            f"{what}: unknown interpolation '{interpolation}' (use {', '.join(INTERPOLATIONS)})"
        )
    for name, values in (("mean", mean), ("std", std)):
        if len(values) != channels:
            raise PreprocessingError(
                f"{what}: {name} has {len(values)} values but the input has "
                f"{channels} channel{'s' if channels != 1 else ''}"
            )
        if not all(math.isfinite(v) for v in values):
            raise PreprocessingError(f"{what}: {name} {_numbers(values)} is not finite")
    if any(v <= 0 for v in std):
        raise PreprocessingError(f"{what}: std {_numbers(std)} must be positive (it divides)")
    problem = range_problem(mean, input_range)
    if problem:
        raise PreprocessingError(f"{what}: {problem}")


def range_problem(mean, input_range: int, mean_from: str = "") -> str | None:
    """Why `mean` cannot belong to pixels of `input_range`, as the end of a sentence naming the
    fix; None when it can. A mean above 1 is impossible for [0, 1] pixels (a Caffe mean such as
    104,117,123 given without --range 255); a mean of 0–255 pixels that lies within (0, 1] is
    an ImageNet mean given for a 0–255 model."""
    where = f" (from {mean_from})" if mean_from else ""
    if input_range == 1 and any(v > 1 for v in mean):
        return (
            f"the mean {_numbers(mean)}{where} is above 1, so it is not a mean of [0, 1] "
            'pixels: if the model takes 0–255 input, use --range 255 (or "range": 255), or '
            "give the mean as fractions (--mean 104/255,117/255,123/255)"
        )
    if input_range == 255 and max(mean) <= 1 and any(v > 0 for v in mean):
        return (
            f"the mean {_numbers(mean)}{where} is a mean of [0, 1] pixels, but the range is "
            "0–255: give the mean in 0–255 units (0.485 -> 123.675) or drop --range 255"
        )
    return None


def check_size(size, what: str = "the preprocessing") -> None:
    """(H, W) positive and not absurdly large."""
    if len(size) != 2 or not all(_is_int(v) for v in size):
        raise PreprocessingError(f"{what}: {list(size)} is not an input size (H, W)")
    height, width = size
    if height < 1 or width < 1:
        raise PreprocessingError(f"{what}: the input size {height}×{width} must be positive")
    if height > MAX_SIDE or width > MAX_SIDE or height * width > MAX_PIXELS:
        raise PreprocessingError(
            f"{what}: an input of {height}×{width} pixels is too large (at most {MAX_SIDE} px a "
            f"side and {int(math.sqrt(MAX_PIXELS))}×{int(math.sqrt(MAX_PIXELS))} pixels in all)"
        )


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def broadcast(values, channels: int, name: str, what: str) -> tuple[float, ...]:
    """One value stands for every channel; otherwise there must be one per channel."""
    values = tuple(values)
    if len(values) == 1 and channels != 1:
        return values * channels
    if len(values) != channels:
        raise PreprocessingError(
            f"{what}: {name} has {len(values)} values but the input has "
            f"{channels} channel{'s' if channels != 1 else ''}"
        )
    return values


def parse_fields(data: Mapping[str, Any], what: str) -> dict:
    """The fields a schema dict sets, checked: some of channels, size (H, W), resize (int,
    (H, W) or None), crop_pct, interpolation, mean, std, channel_order, range. Unknown keys are
    refused (a typo would be lost)."""
    if not isinstance(data, Mapping):
        raise PreprocessingError(f"{what} is not a JSON object with {', '.join(SCHEMA_KEYS)}")
    unknown = sorted(str(k) for k in data if k not in SCHEMA_KEYS)
    if unknown:
        raise PreprocessingError(
            f"{what} has unknown keys {', '.join(unknown)} (known: {', '.join(SCHEMA_KEYS)})"
        )
    fields: dict[str, Any] = {}
    if data.get("input_size") is not None:
        size = data["input_size"]
        size = [size] if _is_int(size) else list(size) if isinstance(size, (list, tuple)) else size
        if (
            not isinstance(size, list)
            or not 1 <= len(size) <= 3
            or not all(_is_int(v) for v in size)
        ):
            raise PreprocessingError(
                f"{what}: input_size {size!r} is not [C, H, W], [H, W] or a number"
            )
        if len(size) == 1:
            size = size * 2
        if len(size) == 3:
            fields["channels"] = size[0]
            size = size[1:]
        check_size(size, what)
        fields["size"] = tuple(size)
    if "resize" in data:
        resize = data["resize"]
        if resize is None or (isinstance(resize, str) and resize.lower() == "none"):
            fields["resize"] = None
        elif _is_int(resize) and 1 <= resize <= MAX_SIDE:
            fields["resize"] = resize
        elif (
            isinstance(resize, (list, tuple))
            and len(resize) == 2
            and all(_is_int(v) and 1 <= v <= MAX_SIDE for v in resize)
        ):
            fields["resize"] = tuple(resize)
        else:
            raise PreprocessingError(
                f"{what}: resize {resize!r} is not a number of pixels (1 to {MAX_SIDE}), "
                '[H, W] or "none"'
            )
    if data.get("crop_pct") is not None:
        crop_pct = data["crop_pct"]
        if (
            isinstance(crop_pct, bool)
            or not isinstance(crop_pct, (int, float))
            or not 0.05 <= crop_pct <= 1
        ):
            raise PreprocessingError(f"{what}: crop_pct {crop_pct!r} is not a fraction in (0, 1]")
        if "resize" in fields:
            raise PreprocessingError(f"{what} gives both resize and crop_pct; keep one")
        fields["crop_pct"] = float(crop_pct)
    if data.get("interpolation") is not None:
        interpolation = str(data["interpolation"]).lower()
        if interpolation not in PIL_FILTERS:
            raise PreprocessingError(
                f"{what}: unknown interpolation '{data['interpolation']}' "
                f"(use {', '.join(INTERPOLATIONS)})"
            )
        fields["interpolation"] = interpolation
    for name in ("mean", "std"):
        if data.get(name) is not None:
            fields[name] = _floats(data[name], name, what)
    if "std" in fields and any(v <= 0 for v in fields["std"]):
        raise PreprocessingError(
            f"{what}: std {_numbers(fields['std'])} must be positive (it divides)"
        )
    if data.get("channel_order") is not None:
        order = str(data["channel_order"]).lower()
        if order not in CHANNEL_ORDERS:
            raise PreprocessingError(
                f"{what}: channel_order {data['channel_order']!r} is not rgb or bgr"
            )
        fields["channel_order"] = order
    if data.get("range") is not None:
        value = data["range"]
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not _is_int(value) or value not in INPUT_RANGES:
            raise PreprocessingError(
                f"{what}: range {value!r} is not 1 (pixels in [0, 1]) or 255 (in [0, 255])"
            )
        fields["range"] = value
    return fields


def _floats(values, name: str, what: str) -> tuple[float, ...]:
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        values = [values]
    try:
        numbers = tuple(float(v) for v in values if not isinstance(v, bool))
    except (TypeError, ValueError):
        numbers = ()
    if (
        not numbers
        or len(numbers) != len(list(values))
        or not all(math.isfinite(v) for v in numbers)
    ):
        raise PreprocessingError(f"{what}: {name} {values!r} is not a list of finite numbers")
    return numbers


def _resize_from(
    fields: Mapping[str, Any], size: tuple[int, int], default: int | tuple[int, int] | None
) -> int | tuple[int, int] | None:
    """`resize` as given, or from `crop_pct` as timm computes it, or `default`."""
    if "resize" in fields:
        return fields["resize"]
    if "crop_pct" in fields:
        return resize_for_crop_pct(size, fields["crop_pct"])
    return default


def resize_for_crop_pct(size: tuple[int, int], crop_pct: float) -> int:
    """timm's eval transform: scale = floor(size / crop_pct) (transforms_imagenet_eval); for a
    non-square input timm scales each side, we resize the shorter image side to the larger one
    of those (a square image then fills the crop)."""
    return max(math.floor(side / crop_pct) for side in size)


def is_exact_resize(resize, size) -> bool:
    """Whether `resize` resizes the image to exactly the input `size`: no margin, no crop."""
    return isinstance(resize, tuple) and tuple(resize) == tuple(size)
