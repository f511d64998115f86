"""A Hugging Face image processor's preprocessor_config.json as cnntool's feed, field by field.

Split from hf_models.py so that preprocessing_sources.py can read a processor config given
with --preprocessing without importing the model loader (which imports it: no import circle).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cnntool.errors import ModelLoadError

INSTALL_HINT = "pip install 'cnntool[hf]'"
PROCESSOR_FILE = "preprocessor_config.json"
# HF centers its crop with the offset rounded down, torchvision (and cnntool) to the nearest even
_FLOOR = " (HF rounds its offset down: 1 px apart for some image sizes)"
# PIL's resampling codes, as image processors store them
_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
_CLOSEST = {"lanczos": "bicubic", "box": "bilinear", "hamming": "bilinear"}
# Keys that change nothing about the pixels of one RGB image, or that cnntool does itself.
_HARMLESS = {
    "image_processor_type",
    "feature_extractor_type",
    "processor_class",
    "_processor_class",
    "auto_map",
    "do_convert_rgb",
    "default_to_square",
    "data_format",
    "input_data_format",
    "return_tensors",
    "device",
    "disable_grouping",
    "do_reduce_labels",  # segmentation maps only
    "reduce_labels",
    "image_seq_length",
    "backend",
}
# The keys whose class defaults are looked up when a file leaves them out.
_KEYS = (
    "do_resize",
    "size",
    "resample",
    "do_center_crop",
    "crop_size",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
    "crop_pct",
    "rescale_offset",
)
# Processors whose resize and crop follow the keys' standard meaning (BaseImageProcessor's),
# besides ConvNeXT's crop_pct, which `_geometry` reproduces.
_STANDARD = {
    "ViTImageProcessor",
    "DeiTImageProcessor",
    "BitImageProcessor",
    "CLIPImageProcessor",
    "ConvNextImageProcessor",
    "BeitImageProcessor",
    "MobileNetV1ImageProcessor",
    "MobileNetV2ImageProcessor",
    "SiglipImageProcessor",
    "EfficientNetImageProcessor",
    "ViTHybridImageProcessor",
    "SwinImageProcessor",
}


# --- the folder and the model ---------------------------------------------------------------------


def transformers_available() -> bool:
    return importlib.util.find_spec("transformers") is not None


# --- the feed ------------------------------------------------------------------------------------


def is_processor_config(data: Any) -> bool:
    """Whether a JSON object is a Hugging Face image processor's preprocessor_config.json."""
    if not isinstance(data, Mapping):
        return False
    if "image_processor_type" in data or "feature_extractor_type" in data:
        return True
    return "image_mean" in data or ("do_normalize" in data and "do_resize" in data)


@dataclass(frozen=True)
class Feed:
    """cnntool's preprocessing fields for an image processor, where each came from, and what
    cnntool can only approximate."""

    fields: dict  # the JSON schema of core/preprocessing.py
    origins: tuple[str, ...]
    approximations: tuple[str, ...]
    kind: str

    def line(self, where: str) -> str:
        return f"{where} ({self.kind}): " + "; ".join(self.origins)


def processor_feed(
    data: Mapping[str, Any],
    where: str,
    *,
    channels: int | None = None,
    image_size: tuple[int, int] | None = None,
) -> Feed:
    """Map a preprocessor_config.json onto cnntool's preprocessing (module docstring).

    `channels` and `image_size` come from the model's config.json (num_channels, image_size)
    when known. A key the file does not set is the processor class's default (looked up in
    transformers); without transformers such a key is one sentence naming it."""
    kind = str(data.get("image_processor_type") or data.get("feature_extractor_type") or "")
    kind = kind or "an image processor"
    values = _Values(data, where, kind, _class_defaults(kind))
    geometry = _geometry(values, image_size)
    mean, std, scale_origin = _normalization(values)
    if channels is None:
        channels = len(mean) if len(mean) > 1 else 3
    fields: dict[str, Any] = {"mean": list(mean), "std": list(std)}
    origins = list(geometry.origins)
    if geometry.size is not None:
        fields["input_size"] = [channels, *geometry.size]
    approximations = list(geometry.approximations)
    resize = geometry.resize
    if isinstance(resize, tuple) and not exact_resize_supported():
        shorter = min(resize)
        approximations.append(
            f"{where} resizes each image to exactly {_hw(resize)}; cnntool resizes the shorter "
            f"side to {shorter}, keeping the aspect ratio (the same for square images)"
        )
        resize = shorter
    fields["resize"] = list(resize) if isinstance(resize, tuple) else resize
    if geometry.interpolation is not None:
        fields["interpolation"] = geometry.interpolation
    origins.append(
        f"mean {_numbers(mean)} and std {_numbers(std)} on 0–1 pixels from {scale_origin}"
    )
    if kind not in _STANDARD and kind.endswith(("ImageProcessor", "ImageProcessorFast")):
        approximations.append(
            f"{where}: cnntool reads its keys with their standard meaning, and {kind} may resize "
            "or crop in its own way: compare predict's accuracy with a loop over its own output"
        )
    for key, value in data.items():
        if key.startswith("do_") and key not in values.used and key not in _HARMLESS and value:
            approximations.append(
                f"{where}: {key} is true, and cnntool has no such step (it is left out)"
            )
    return Feed(fields, tuple(origins), tuple(approximations), kind)


class _Values:
    """The processor's values: the file's, else its class's defaults; and which were read."""

    def __init__(self, data: Mapping[str, Any], where: str, kind: str, defaults: dict | None):
        self.data, self.where, self.kind, self.defaults = data, where, kind, defaults
        self.used: set[str] = set()

    def get(self, key: str, needed: bool = True) -> tuple[Any, str]:
        """(value, where it came from); a missing key without transformers is an error when
        `needed`, else (None, '')."""
        self.used.add(key)
        if key in self.data:
            value = _plain(self.data[key])
            return value, f"{key} {_shown(value)}"
        if self.defaults is not None and key in self.defaults:
            value = self.defaults[key]
            return value, f"{self.kind}'s default {key} {_shown(value)}"
        if not needed:
            return None, ""
        if self.defaults is None and transformers_available():
            raise ModelLoadError(f'{self.where} does not set {key}; add "{key}" to it')
        raise ModelLoadError(
            f"{self.where} does not set {key}, so its value is {self.kind}'s default, which "
            f'needs transformers to look up ({INSTALL_HINT}); or add "{key}" to the file'
        )

    def flag(self, key: str) -> tuple[bool, str]:
        """A step's switch: the file's, else the class's (a class without it has no such step);
        unknown without the class."""
        if key in self.data or self.defaults is None:
            value, origin = self.get(key)
            return bool(value), origin
        self.used.add(key)
        value = bool(self.defaults.get(key))
        return value, f"{self.kind}'s default {key} {_shown(value)}"


def _shown(value: Any) -> str:
    """A value as the stderr line shows it: JSON, 1/255 for a rescale factor's float."""
    if isinstance(value, float) and 0 < value < 1 and abs(1 / value - round(1 / value)) < 1e-6:
        return f"1/{round(1 / value)}"
    return json.dumps(value, separators=(", ", ": "))


@functools.cache
def _class_defaults_cached(kind: str) -> tuple | None:
    if not transformers_available():
        return None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    processor_class = getattr(transformers, kind, None) if kind.isidentifier() else None
    if processor_class is None:
        return None
    try:
        instance = processor_class()
    except Exception:  # noqa: BLE001 - a class that cannot be built bare has no defaults to give
        return None
    return tuple((k, _plain(getattr(instance, k))) for k in _KEYS if hasattr(instance, k))


def _class_defaults(kind: str) -> dict | None:
    found = _class_defaults_cached(kind)
    return dict(found) if found is not None else None


def _plain(value: Any) -> Any:
    """JSON-like data from a processor attribute (transformers 5's SizeDict, enums, tuples)."""
    if hasattr(value, "__dataclass_fields__"):
        return {k: getattr(value, k) for k in value.__dataclass_fields__ if getattr(value, k)}
    if isinstance(value, Mapping):
        return {k: v for k, v in value.items() if v is not None}
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "value") and isinstance(value.value, int):  # PILImageResampling
        return int(value.value)
    return value


@dataclass(frozen=True)
class _Geometry:
    size: tuple[int, int] | None  # (H, W) of the model input; None: not said
    resize: int | tuple[int, int] | str  # the shorter side's, exactly (H, W), or "none"
    interpolation: str | None
    origins: tuple[str, ...]
    approximations: tuple[str, ...]


def _geometry(values: _Values, image_size: tuple[int, int] | None) -> _Geometry:
    """Resize and crop: HF's size {height, width} resizes to exactly that; {shortest_edge}
    resizes the shorter side; crop_size then center-crops (ConvNeXT: crop_pct, below 384)."""
    where = values.where
    do_resize, resize_origin = values.flag("do_resize")
    do_crop, crop_origin = values.flag("do_center_crop")
    crop = None
    if do_crop:
        crop_size, crop_origin = values.get("crop_size")
        crop = _height_width(crop_size, where, "crop_size")
    if not do_resize:
        return _no_resize(where, resize_origin, crop, crop_origin, image_size)
    size_value, size_origin = values.get("size")
    resample, resample_origin = values.get("resample", needed=False)
    interpolation, notes = _interpolation(resample, resample_origin, where)
    said = f"interpolation {interpolation} from {resample_origin or 'no resample (bilinear)'}"

    def done(size, resize, words: str) -> _Geometry:
        return _Geometry(size, resize, interpolation, (words, said), tuple(notes))

    size_value = {"shortest_edge": size_value} if isinstance(size_value, int) else size_value
    if not isinstance(size_value, Mapping):
        raise ModelLoadError(f"{where}: size {size_value!r} is not a size")
    if size_value.get("height") and size_value.get("width"):
        target = _height_width(size_value, where, "size")
        if crop is None or crop == target:
            return done(target, target, f"resize to exactly {_hw(target)} from {size_origin}")
        return done(
            crop,
            target,
            f"resize to exactly {_hw(target)} from {size_origin}, crop {_hw(crop)}{_FLOOR} from "
            f"{crop_origin}",
        )
    shortest = size_value.get("shortest_edge")
    if not isinstance(shortest, int) or shortest < 1:
        raise ModelLoadError(
            f"{where}: size {dict(size_value)} has neither height and width nor shortest_edge"
        )
    if size_value.get("longest_edge") or size_value.get("max_height"):
        notes.append(
            f"{where} also limits the longer side ({dict(size_value)}); cnntool resizes the "
            f"shorter side to {shortest} only"
        )
    crop_pct, pct_origin = values.get("crop_pct", needed=False)
    if values.kind.startswith("ConvNext") and crop_pct:
        square = (shortest, shortest)
        if shortest >= 384:  # ConvNeXT's rule: no crop from 384 px on
            return done(square, square, f"resize to exactly {_hw(square)} from {size_origin}")
        resize = int(shortest / crop_pct)
        return done(
            square,
            resize,
            f"resize {resize} = int({shortest} / {crop_pct:g}) and crop "
            f"{_hw(square)}{_FLOOR} from {size_origin} and {pct_origin} (ConvNeXT's rule)",
        )
    if crop is None:
        crop, crop_origin = (shortest, shortest), "the shorter side"
        notes.append(
            f"{where} keeps the whole resized image (its size depends on the image's shape), and "
            f"cnntool feeds one size: it center-crops {_hw(crop)}, the same for square images"
        )
    return done(
        crop,
        shortest,
        f"resize {shortest} from {size_origin}, crop {_hw(crop)}{_FLOOR} from {crop_origin}",
    )


def _no_resize(where, resize_origin, crop, crop_origin, image_size) -> _Geometry:
    if crop:
        words = f"no resize from {resize_origin}, center crop {_hw(crop)} from {crop_origin}"
        return _Geometry(crop, "none", None, (words,), ())
    words = f"no resize from {resize_origin}, no crop"
    if image_size is None:
        return _Geometry(None, "none", None, (words,), ())
    note = (
        f"{where} neither resizes nor crops, so the images must already be {_hw(image_size)} "
        "(config.json's image_size); cnntool center-crops (or pads) each to that"
    )
    return _Geometry(image_size, "none", None, (words,), (note,))


def _interpolation(code, origin: str, where: str) -> tuple[str, list[str]]:
    """cnntool's interpolation for PIL's resampling code, and a note when it is the closest."""
    if code is None:
        return "bilinear", []
    name = _RESAMPLE.get(int(code)) if isinstance(code, (int, float)) else str(code).lower()
    if name in ("nearest", "bilinear", "bicubic"):
        return name, []
    if name in _CLOSEST:
        closest = _CLOSEST[name]
        return closest, [f"{where}: resample {name} ({origin}) is approximated by {closest}"]
    raise ModelLoadError(f"{where}: resample {code!r} is not one of PIL's resampling filters")


def _normalization(values: _Values) -> tuple[tuple[float, ...], tuple[float, ...], str]:
    """(mean, std) on cnntool's 0–1 pixels, and the keys they came from. HF computes
    (x·factor + offset − mean) / std on 0–255 values x; on p = x/255 that is
    (p − (mean − offset)/(255·factor)) / (std/(255·factor)), exactly."""
    do_rescale, rescale_origin = values.flag("do_rescale")
    factor, parts = 1.0, []
    if do_rescale:
        factor, factor_origin = values.get("rescale_factor")
        factor = float(factor)
        if not math.isfinite(factor) or factor <= 0:
            raise ModelLoadError(f"{values.where}: rescale_factor {factor!r} is not positive")
        parts.append(factor_origin)
    else:
        parts.append(f"{rescale_origin} (0–255 values)")
    offset = 0.0
    rescale_offset, offset_origin = values.get("rescale_offset", needed=False)
    if do_rescale and rescale_offset:
        offset = -1.0
        parts.append(f"{offset_origin} (−1)")
    do_normalize, normalize_origin = values.flag("do_normalize")
    if do_normalize:
        mean, mean_origin = values.get("image_mean")
        std, std_origin = values.get("image_std")
        mean, std = (
            _numbers_of(mean, values.where, "image_mean"),
            _numbers_of(std, values.where, "image_std"),
        )
        parts += [mean_origin, std_origin]
    else:
        mean, std = (0.0,), (1.0,)
        parts.append(normalize_origin)
    if len(mean) != len(std) and 1 not in (len(mean), len(std)):
        raise ModelLoadError(
            f"{values.where}: image_mean has {len(mean)} values and image_std {len(std)}"
        )
    width = max(len(mean), len(std))
    mean, std = mean * (width // len(mean)), std * (width // len(std))
    scale = 255.0 * factor
    if abs(scale - 1.0) < 1e-9:  # 1/255 written as 0.00392156862745098
        scale = 1.0
    return (
        tuple((m - offset) / scale for m in mean),
        tuple(s / scale for s in std),
        ", ".join(parts),
    )


def _numbers_of(value, where: str, key: str) -> tuple[float, ...]:
    values = value if isinstance(value, (list, tuple)) else [value]
    try:
        numbers = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        numbers = ()
    if not numbers or not all(math.isfinite(v) for v in numbers):
        raise ModelLoadError(f"{where}: {key} {value!r} is not a list of numbers")
    return numbers


def _height_width(value, where: str, key: str) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if isinstance(value, Mapping):
        height, width = value.get("height"), value.get("width")
        if isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0:
            return height, width
    raise ModelLoadError(f'{where}: {key} {value!r} is not {{"height": H, "width": W}}')


def _hw(size: tuple[int, int]) -> str:
    return f"{size[0]}×{size[1]}"


def _numbers(values) -> str:
    return "(" + ", ".join(f"{round(v, 4):g}" for v in values) + ")"


@functools.cache
def exact_resize_supported() -> bool:
    """Whether cnntool's preprocessing can resize to exactly H×W (`"resize": [H, W]`)."""
    from cnntool.core.preprocessing import Preprocessing, PreprocessingError

    try:
        prep = Preprocessing.from_dict({"input_size": [3, 2, 4], "resize": [2, 4]})
    except PreprocessingError:
        return False
    return prep.resized_size(8, 8) == (4, 2)
