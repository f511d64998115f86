"""Hugging Face transformers image classifiers (optional: `pip install 'cnntool[hf]'`).

A folder written by `model.save_pretrained(folder)` (config.json naming its `architectures`, and
model.safetensors or pytorch_model.bin) is MODEL. transformers builds it from the folder alone
(`local_files_only`, HF_HUB_OFFLINE: nothing is downloaded); code shipped in the folder
(config.json's `auto_map`) runs only with --trust-code.

- Output: a transformers model returns a ModelOutput, and every analysis needs the logits
  tensor. `returning_logits` gives the loaded module (also one built by user code) a forward
  that returns `.logits`: a subclass of its own class, so every module path and parameter name
  stays what transformers calls it, and hooks, BatchNorm folding, attacks and profile all see
  a plain tensor.
- Feed: `preprocessor_config.json` (from `image_processor.save_pretrained(folder)`, or given
  with --preprocessing) is mapped field by field onto cnntool's preprocessing
  (`processor_feed`); a value it does not set is the processor class's default, and each
  field's origin is said on stderr. What cnntool cannot reproduce exactly is a warning.
- Class names: config.json's `id2label` (transformers' placeholders LABEL_0… are no names).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnntool.core.class_names import config_class_names
from cnntool.core.preprocessing_sources import Source
from cnntool.errors import ModelLoadError, UntrustedCodeError, first_line

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


def transformers_config(folder: Path) -> dict | None:
    """config.json of a `save_pretrained` folder (it names `architectures` or a `model_type`;
    timm's hub folders name an `architecture` instead); None for any other folder."""
    path = Path(folder) / "config.json"
    if not Path(folder).is_dir() or not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(config, dict) or "architecture" in config:
        return None
    names = config.get("architectures")
    named = isinstance(names, list) and any(isinstance(n, str) for n in names)
    return config if named or isinstance(config.get("model_type"), str) else None


def _transformers(folder: Path, what: str):
    if not transformers_available():
        raise ModelLoadError(
            f"{folder} is a Hugging Face transformers model ({what}); reading it needs the "
            f"optional package transformers ({INSTALL_HINT})"
        )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub reads it
    import transformers

    return transformers


@dataclass
class HFModel:
    """A transformers classifier read from its folder, with what the folder says about it."""

    module: Any
    name: str  # its class, e.g. ResNetForImageClassification
    sources: list[Source]  # preprocessing, lowest rank first
    class_names: list[tuple[str, list[str]]]
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def load_folder(folder: Path, config: Mapping[str, Any], trust_code: bool) -> HFModel:
    """The classifier in a `save_pretrained` folder, returning logits, with its feed and names."""
    folder = Path(folder)
    names = [n for n in config.get("architectures") or [] if isinstance(n, str)]
    name = names[0] if names else str(config.get("model_type"))
    transformers = _transformers(folder, name)
    model_class = getattr(transformers, name, None) if names else None
    kwargs: dict[str, Any] = {"local_files_only": True, _dtype_argument(transformers): "float32"}
    if model_class is None:
        if not config.get("auto_map"):
            raise ModelLoadError(
                f"{folder}/config.json names {name}, which transformers "
                f"{transformers.__version__} does not have (a newer transformers may)"
            )
        if not trust_code:
            raise UntrustedCodeError(
                f"{folder} needs the Python code shipped in it ({name}, config.json's auto_map), "
                "and running it can do anything; pass --trust-code only if you trust this folder"
            )
        model_class = transformers.AutoModelForImageClassification
        kwargs["trust_remote_code"] = True
    if "ForImageClassification" not in name:
        raise ModelLoadError(
            f"{folder} holds a {name}, which has no classification head; cnntool needs an "
            "image classifier (a …ForImageClassification model)"
        )
    module, info = _from_pretrained(transformers, model_class, folder, kwargs)
    missing = list(info.get("missing_keys") or [])
    wrong = list(info.get("mismatched_keys") or [])
    if missing or wrong:
        shown = "; ".join(map(str, (missing + wrong)[:3]))
        raise ModelLoadError(
            f"the weights in {folder} do not fit {name}: {len(missing)} missing and {len(wrong)} "
            f"wrongly shaped ({shown})"
        )
    module.eval()
    loaded = HFModel(module=module, name=name, sources=[], class_names=[])
    loaded.notes.append(returning_logits(module))
    _feed_of_folder(loaded, folder, config)
    labels = config_class_names(config, f"{folder}/config.json")
    if labels and not all(label == f"LABEL_{i}" for i, label in enumerate(labels)):
        loaded.class_names.append((f"{folder}/config.json's id2label", labels))
    return loaded


def _dtype_argument(transformers) -> str:
    """from_pretrained's dtype keyword: `dtype` since transformers 4.56, `torch_dtype` before."""
    major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def _from_pretrained(transformers, model_class, folder: Path, kwargs: dict):
    """from_pretrained with transformers' progress bar and info lines kept off stderr."""
    logging = transformers.utils.logging
    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        return model_class.from_pretrained(str(folder), output_loading_info=True, **kwargs)
    except Exception as exc:  # noqa: BLE001 - transformers raises anything for a bad folder
        raise ModelLoadError(
            f"transformers could not load {folder}: {type(exc).__name__}: {first_line(exc)}"
        ) from None
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def is_transformers_model(module) -> bool:
    """A transformers PreTrainedModel (found by its class hierarchy, without importing it)."""
    return any(
        cls.__name__ == "PreTrainedModel" and cls.__module__.startswith("transformers")
        for cls in type(module).__mro__
    )


def returning_logits(module) -> str | None:
    """Give a transformers model a forward that returns its logits tensor (in place), and say
    so; None when `module` is not one, or already returns a tensor."""
    if not is_transformers_model(module) or getattr(module, "_cnntool_logits", False):
        return None
    original = type(module)
    module.__class__ = _logits_class(original)
    module._cnntool_logits = True
    return f"{original.__name__} returns a ModelOutput: cnntool uses its .logits"


@functools.cache
def _logits_class(base: type) -> type:
    """`base` with a forward that returns `.logits` (or the first element of a tuple return)."""

    def forward(self, pixel_values, *args, **kwargs):
        output = base.forward(self, pixel_values, *args, **kwargs)
        logits = getattr(output, "logits", None)
        if logits is None and isinstance(output, (tuple, list)):
            logits = output[0]
        return logits

    doc = f"{base.__name__}, returning its logits tensor instead of a ModelOutput (cnntool)."
    return type(
        base.__name__, (base,), {"forward": forward, "__doc__": doc, "__module__": __name__}
    )


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


def _feed_of_folder(loaded: HFModel, folder: Path, config: Mapping[str, Any]) -> None:
    """The sources of the folder's feed: config.json's image size and channels, then
    preprocessor_config.json."""
    channels = config.get("num_channels") if isinstance(config.get("num_channels"), int) else None
    image_size = config.get("image_size")
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    elif isinstance(image_size, (list, tuple)) and len(image_size) == 2:
        image_size = tuple(int(v) for v in image_size)
    else:
        image_size = None
    if image_size is not None:
        loaded.sources.append(
            Source.of(
                f"{folder}/config.json's image_size",
                {"input_size": [channels or 3, *image_size]},
            )
        )
    path = folder / PROCESSOR_FILE
    if not path.is_file():
        loaded.notes.append(
            f"{folder} has no {PROCESSOR_FILE} (image_processor.save_pretrained writes it), so "
            "its feed is not known"
        )
        return
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read {path}: {first_line(exc)}") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} is not a JSON object")
    feed = processor_feed(data, str(path), channels=channels, image_size=image_size)
    loaded.sources.append(Source.of(str(path), feed.fields))
    loaded.notes.append(feed.line(str(path)))
    loaded.warnings.extend(feed.approximations)
