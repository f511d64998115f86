"""Which preprocessing a model gets, and where each part of it came from.

Sources, highest first (DESIGN.md, issue #12):
1. the command line (`PreprocessingOptions`);
2. `--preprocessing FILE.json`;
3. a "preprocessing" entry stored in the checkpoint (dict, or safetensors metadata);
4. the module's own `preprocessing` attribute (a Preprocessing or a schema dict);
5. timm's pretrained_cfg or torchvision's weight metadata;
6. the built-in entry;
7. a guess from the model's first convolution.

Each source may set some fields only; a higher one overrides field by field. Two rules keep a
partial override sensible:
- a new input size without a resize keeps the crop ratio of a real source below it (224 of 256
  -> --input-size 320 resizes to 365, as timm's crop_pct does), and over a guess it means "resize
  to that size" (a user model trained on 32-px images gets no 224/256-style margin);
- a new channel count over guessed mean/std re-guesses them for that count.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnntool.core.preprocessing import (
    Preprocessing,
    PreprocessingError,
    broadcast,
    parse_fields,
    resize_for_crop_pct,
)

# The option that sets each field, for the sentence a guess prints.
OPTION_OF_FIELD = {
    "size": "--input-size",
    "resize": "--resize",
    "mean": "--mean",
    "std": "--std",
    "interpolation": "--interpolation",
}
# Guessed fields worth a warning (a guessed interpolation alone is not).
_GUESS_MATTERS = ("size", "resize", "mean", "std")
_FIELD_WORDS = {"size": "input size", "resize": "resize", "mean": "mean", "std": "std"}


@dataclass(frozen=True)
class PreprocessingOptions:
    """What the command line said about the input; None means "not given".

    `input_size` is (C or None, H, W); `resize` an int or "none"; `mean`/`std` one value per
    channel (one value stands for all); `file` a `--preprocessing` JSON file.
    """

    input_size: tuple[int | None, int, int] | None = None
    resize: int | str | None = None
    interpolation: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    file: str | None = None

    @classmethod
    def parse(
        cls,
        *,
        input_size: str | None = None,
        resize: str | None = None,
        interpolation: str | None = None,
        mean: str | None = None,
        std: str | None = None,
        file: str | None = None,
    ) -> PreprocessingOptions:
        """From the command line's strings: input size '32', '32x32', '3,32,32' or '1x28x28';
        resize '256' or 'none'; mean/std '0.5' or '0.49,0.48,0.45'. The file is read now, so a
        bad one fails before any model is loaded."""
        options = cls(
            input_size=parse_input_size(input_size) if input_size else None,
            resize=_parse_resize(resize) if resize is not None else None,
            interpolation=interpolation.lower() if interpolation else None,
            mean=_parse_numbers(mean, "--mean") if mean is not None else None,
            std=_parse_numbers(std, "--std") if std is not None else None,
            file=file,
        )
        options.command_line_fields()
        options.file_fields()
        return options

    @property
    def given(self) -> bool:
        return any(
            v is not None
            for v in (
                self.input_size,
                self.resize,
                self.interpolation,
                self.mean,
                self.std,
                self.file,
            )
        )

    def command_line_fields(self) -> dict:
        """The fields set by --input-size, --resize, --interpolation, --mean and --std."""
        data: dict[str, Any] = {}
        if self.input_size is not None:
            channels, height, width = self.input_size
            data["input_size"] = [height, width] if channels is None else [channels, height, width]
        if self.resize is not None:
            data["resize"] = self.resize
        if self.interpolation is not None:
            data["interpolation"] = self.interpolation
        if self.mean is not None:
            data["mean"] = list(self.mean)
        if self.std is not None:
            data["std"] = list(self.std)
        return parse_fields(data, "the command line")

    def file_fields(self) -> dict:
        """The fields the --preprocessing file sets ({} without one)."""
        if self.file is None:
            return {}
        data = read_json(self.file, "--preprocessing")
        feed = hf_feed(data, f"--preprocessing {self.file}")  # HF's preprocessor_config.json
        return parse_fields(feed.fields if feed else data, f"--preprocessing {self.file}")


def hf_feed(data: Any, where: str):
    """The feed of a Hugging Face preprocessor_config.json (core/hf_models.py), else None."""
    from cnntool.core.hf_models import is_processor_config, processor_feed

    return processor_feed(data, where) if is_processor_config(data) else None


def parse_input_size(text: str) -> tuple[int | None, int, int]:
    """'32', '32x32', '3x32x32' or '3,32,32' -> (C or None, H, W)."""
    parts = str(text).lower().replace(",", "x").replace("×", "x").split("x")
    try:
        numbers = [int(p.strip()) for p in parts]
    except ValueError:
        numbers = []
    if len(numbers) == 1:
        numbers = numbers * 2
    if len(numbers) not in (2, 3):
        raise PreprocessingError(f"--input-size '{text}' is not a size like 32, 32x32 or 3,32,32")
    return (None, *numbers) if len(numbers) == 2 else tuple(numbers)


def _parse_resize(text) -> int | str:
    if str(text).strip().lower() == "none":
        return "none"
    try:
        return int(str(text).strip())
    except ValueError:
        raise PreprocessingError(f"--resize '{text}' is not a number of pixels or 'none'") from None


def _parse_numbers(text: str, option: str) -> tuple[float, ...]:
    try:
        numbers = tuple(float(p) for p in str(text).split(",") if p.strip())
    except ValueError:
        numbers = ()
    if not numbers or not all(math.isfinite(v) for v in numbers):
        raise PreprocessingError(
            f"{option} '{text}' is not a list of numbers like 0.5 or 0.485,0.456,0.406"
        )
    return numbers


def read_json(path: str | Path, option: str) -> Any:
    """A JSON file's content, or one sentence saying why it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise PreprocessingError(f"{option} file {path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise PreprocessingError(f"cannot read {option} file {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise PreprocessingError(
            f"{option} file {path} is not valid JSON ({exc.msg} at line {exc.lineno})"
        ) from None


# --- sources and their merge ---------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One place preprocessing fields came from: its name as the stderr line says it
    ("the checkpoint", "--preprocessing cifar.json") and the fields it sets."""

    name: str
    fields: Mapping[str, Any]
    guess: bool = False

    @classmethod
    def of(cls, name: str, value: Preprocessing | Mapping[str, Any]) -> Source:
        """A source from a Preprocessing (every field) or a schema dict (what it sets)."""
        if isinstance(value, Preprocessing):
            return cls(name, fields_of(value))
        return cls(name, parse_fields(value, name))


def fields_of(prep: Preprocessing) -> dict:
    return {
        "channels": prep.channels,
        "size": tuple(prep.crop),
        "resize": prep.resize,
        "interpolation": prep.interpolation,
        "mean": prep.mean,
        "std": prep.std,
    }


def guess_for_channels(channels: int) -> Preprocessing:
    """What a model with this many input channels most likely wants, when nothing says.
    1: MNIST-like 28-px [0, 1] digits; 3: ImageNet 224 of 256; 4: the same plus a raw alpha."""
    if channels == 1:
        return Preprocessing(crop=(28, 28), resize=28, mean=(0.0,), std=(1.0,), channels=1)
    if channels == 3:
        return Preprocessing(crop=(224, 224), resize=256)
    if channels == 4:
        return Preprocessing(
            crop=(224, 224),
            resize=256,
            mean=(0.485, 0.456, 0.406, 0.0),
            std=(0.229, 0.224, 0.225, 1.0),
            channels=4,
        )
    return Preprocessing(
        crop=(224, 224),
        resize=256,
        mean=(0.0,) * channels,
        std=(1.0,) * channels,
        channels=channels,
    )


@dataclass(frozen=True)
class Chosen:
    """The merged preprocessing, the phrase naming its source, and what of it is a guess."""

    preprocessing: Preprocessing
    source: str
    guessed_fields: tuple[str, ...] = ()
    guess_name: str = ""

    @property
    def guessed(self) -> bool:
        return bool(self.guessed_fields)

    def line(self) -> str:
        """`preprocessing: <describe()> — from <source>`; a guess names the options that set it."""
        text = f"preprocessing: {self.preprocessing.describe()}"
        if not self.guessed:
            return f"{text} — from {self.source}"
        if self.source == self.guess_name:
            options = ", ".join(
                OPTION_OF_FIELD[f] for f in ("size", "resize", "mean", "std", "interpolation")
            )
            return (
                f"{text} — {self.guess_name}, not from the model: if it was trained "
                f"otherwise, set {options} or --preprocessing FILE.json"
            )
        words = " and ".join(_FIELD_WORDS[f] for f in self.guessed_fields)
        options = " and ".join(OPTION_OF_FIELD[f] for f in self.guessed_fields)
        verb = "is" if len(self.guessed_fields) == 1 else "are"
        return (
            f"{text} — from {self.source}; its {words} {verb} {self.guess_name}: set "
            f"{options} (or --preprocessing FILE.json)"
        )


def choose(sources: Sequence[Source]) -> Chosen:
    """Merge `sources` (lowest first; the first one must set every field) field by field."""
    values: dict[str, Any] = {}
    owner: dict[str, int] = {}
    for index, source in enumerate(sources):
        fields = dict(source.fields)
        if "channels" in fields and fields["channels"] != values.get("channels"):
            _new_channel_count(fields, values, owner, sources, index)
        if "size" in fields and "resize" not in fields and "crop_pct" not in fields and values:
            fields["resize"] = _resize_for_new_size(fields["size"], values, owner, sources)
        if "crop_pct" in fields:
            size = fields.get("size", values.get("size"))
            fields["resize"] = resize_for_crop_pct(size, fields.pop("crop_pct"))
        for key, value in fields.items():
            values[key] = value
            owner[key] = index
    top = sources[max(owner.values())]
    channels = values["channels"]
    mean = broadcast(values["mean"], channels, "mean", sources[owner["mean"]].name)
    std = broadcast(values["std"], channels, "std", sources[owner["std"]].name)
    prep = Preprocessing(
        crop=values["size"],
        resize=values["resize"],
        interpolation=values["interpolation"],
        mean=mean,
        std=std,
        channels=channels,
    )
    guess_index = next((i for i, s in enumerate(sources) if s.guess), None)
    guessed = tuple(
        f for f in _GUESS_MATTERS if guess_index is not None and owner[f] == guess_index
    )
    real = sorted({i for i in owner.values() if not sources[i].guess}, reverse=True)
    source = " over ".join(sources[i].name for i in real) if real else top.name
    return Chosen(
        prep, source, guessed, sources[guess_index].name if guess_index is not None else ""
    )


def _new_channel_count(fields, values, owner, sources, index) -> None:
    """A source changes the channel count without saying mean/std: re-guess guessed ones, keep
    one-value ones, and refuse per-channel values from a source that assumed another count."""
    channels = fields["channels"]
    for name in ("mean", "std"):
        if name in fields or name not in values:
            continue
        below = sources[owner[name]]
        if below.guess:
            values[name] = getattr(guess_for_channels(channels), name)
        elif len(values[name]) not in (1, channels):
            raise PreprocessingError(
                f"{sources[index].name} gives {channels}-channel input but the {name} "
                f"{tuple(round(v, 3) for v in values[name])} from {below.name} has "
                f"{len(values[name])} values; give --mean and --std for {channels} channels"
            )


def _resize_for_new_size(size, values, owner, sources) -> int | None:
    """A new input size without a resize: keep the crop ratio of a real source, else no margin."""
    resize = values.get("resize")
    below = sources[owner["resize"]] if "resize" in owner else None
    if resize is None and below is not None and not below.guess:
        return None  # "no resize" stays no resize
    if below is None or below.guess or resize is None:
        return max(size)
    if tuple(size) == tuple(values["size"]):
        return resize
    # the ratio, rounded the other way than a float quotient might (299 * 342 / 299 is 342)
    return max(math.floor(side * resize / max(values["size"]) + 1e-9) for side in size)
