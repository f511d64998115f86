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
  -> --input-size 320 resizes to 365, as timm's crop_pct does), and over a guess (or over a
  source that resized to its own input size) it means "resize to exactly that size, no crop"
  (a user model trained on 32-px images gets no 224/256-style margin, a 48×64 one no crop);
- a new channel count over guessed mean/std re-guesses them for that count.
The stderr line names the source of each field when they differ, and says when a resize was
derived rather than given.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnntool.core.option_values import parse_fractions
from cnntool.core.preprocessing import (
    Preprocessing,
    PreprocessingError,
    broadcast,
    is_exact_resize,
    parse_fields,
    range_problem,
    resize_for_crop_pct,
)

# The option that sets each field, for the sentence a guess prints.
OPTION_OF_FIELD = {
    "size": "--input-size",
    "resize": "--resize",
    "mean": "--mean",
    "std": "--std",
    "interpolation": "--interpolation",
    "channel_order": "--channel-order",
    "range": "--range",
}
# Guessed fields worth a warning (a guessed interpolation alone is not, nor the default RGB
# order and [0, 1] range: the schema's own defaults, which every real source may leave out).
_GUESS_MATTERS = ("size", "resize", "mean", "std")
_FIELD_WORDS = {
    "size": "input size",
    "resize": "resize",
    "interpolation": "interpolation",
    "channel_order": "channel order",
    "range": "range",
    "mean": "mean",
    "std": "std",
}


@dataclass(frozen=True)
class PreprocessingOptions:
    """What the command line said about the input; None means "not given".

    `input_size` is (C or None, H, W); `resize` an int, (H, W) or "none"; `mean`/`std` one value
    per channel (one value stands for all); `channel_order` "rgb" or "bgr"; `input_range` 1 or
    255; `file` a `--preprocessing` JSON file.
    """

    input_size: tuple[int | None, int, int] | None = None
    resize: int | tuple[int, int] | str | None = None
    interpolation: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    file: str | None = None
    channel_order: str | None = None
    input_range: int | None = None

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
        channel_order: str | None = None,
        input_range: str | int | None = None,
    ) -> PreprocessingOptions:
        """From the command line's strings: input size '32', '32x32', '3,32,32' or '1x28x28';
        resize '256', '48x64' or 'none'; mean/std '0.5', '0.49,0.48,0.45' or '104/255'; channel
        order 'rgb' or 'bgr'; range '1' or '255'. The file is read now, so a bad one fails
        before any model is loaded."""
        options = cls(
            input_size=parse_input_size(input_size) if input_size else None,
            resize=_parse_resize(resize) if resize is not None else None,
            interpolation=interpolation.lower() if interpolation else None,
            mean=_parse_numbers(mean, "--mean") if mean is not None else None,
            std=_parse_numbers(std, "--std") if std is not None else None,
            file=file,
            channel_order=channel_order.lower() if channel_order else None,
            input_range=_parse_range(input_range) if input_range is not None else None,
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
                self.channel_order,
                self.input_range,
            )
        )

    def command_line_fields(self) -> dict:
        """The fields set by --input-size, --resize, --interpolation, --mean, --std,
        --channel-order and --range."""
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
        if self.channel_order is not None:
            data["channel_order"] = self.channel_order
        if self.input_range is not None:
            data["range"] = self.input_range
        return parse_fields(data, "the command line")

    def file_fields(self) -> dict:
        """The fields the --preprocessing file sets ({} without one)."""
        if self.file is None:
            return {}
        data = read_json(self.file, "--preprocessing")
        feed = hf_feed(data, f"--preprocessing {self.file}")  # HF's preprocessor_config.json
        return parse_fields(feed.fields if feed else data, f"--preprocessing {self.file}")


def hf_feed(data: Any, where: str):
    """The feed of a Hugging Face preprocessor_config.json (loading/hf_processor.py), else None."""
    from cnntool.core.loading.hf_processor import is_processor_config, processor_feed

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
    if len(numbers) == 2:
        return None, numbers[0], numbers[1]
    return numbers[0], numbers[1], numbers[2]


def _parse_resize(text) -> int | tuple[int, int] | str:
    if isinstance(text, (int, tuple)) and not isinstance(text, bool):
        return text
    if str(text).strip().lower() == "none":
        return "none"
    parts = str(text).lower().replace(",", "x").replace("×", "x").split("x")
    try:
        numbers = tuple(int(p.strip()) for p in parts)
    except ValueError:
        numbers = ()
    if len(numbers) not in (1, 2):
        raise PreprocessingError(
            f"--resize '{text}' is not a number of pixels, HxW or 'none'"
        ) from None
    return numbers[0] if len(numbers) == 1 else (numbers[0], numbers[1])


def _parse_range(text) -> int:
    try:
        value = float(str(text).strip())
    except ValueError:
        value = math.nan
    if value not in (1, 255):
        raise PreprocessingError(f"--range '{text}' is not 1 (pixels in [0, 1]) or 255")
    return int(value)


def _parse_numbers(text: str, option: str) -> tuple[float, ...]:
    try:
        return parse_fractions(str(text))
    except ValueError:
        raise PreprocessingError(
            f"{option} '{text}' is not a list of numbers like 0.5, 0.485,0.456,0.406 or 104/255"
        ) from None


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
    ("the checkpoint", "--preprocessing cifar.json") and the fields it sets. A guess has a
    `reason` that ends the sentence of a feed that is all guess ("not from the model")."""

    name: str
    fields: Mapping[str, Any]
    guess: bool = False
    reason: str = "not from the model"

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
        "channel_order": prep.channel_order,
        "range": prep.input_range,
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
    """The merged preprocessing, the phrase naming its source, and what of it is a guess.

    `owners` names, per field, the source it came from (or, for a resize nobody gave, how it
    was derived: "resize to the input size, as the command line gives none")."""

    preprocessing: Preprocessing
    source: str
    guessed_fields: tuple[str, ...] = ()
    guess_name: str = ""
    owners: Mapping[str, str] = field(default_factory=dict)
    guess_reason: str = "not from the model"

    @property
    def guessed(self) -> bool:
        return bool(self.guessed_fields)

    def line(self) -> str:
        """`preprocessing: <describe()> — from <source>`; field by field when sources mix; a
        guess names the options that set it."""
        text = f"preprocessing: {self.preprocessing.describe()}"
        if self.guessed and self.source == self.guess_name:
            options = ", ".join(
                OPTION_OF_FIELD[f]
                for f in (
                    "size",
                    "resize",
                    "mean",
                    "std",
                    "interpolation",
                    "channel_order",
                    "range",
                )
            )
            return (
                f"{text} — {self.guess_name}, {self.guess_reason}: if it was trained "
                f"otherwise, set {options} or --preprocessing FILE.json"
            )
        text = f"{text} — {self._where()}"
        if not self.guessed:
            return text
        words = _listed([_FIELD_WORDS[f] for f in self.guessed_fields])
        options = _listed([OPTION_OF_FIELD[f] for f in self.guessed_fields])
        verb = "is" if len(self.guessed_fields) == 1 else "are"
        return (
            f"{text}; its {words} {verb} {self.guess_name}: set "
            f"{options} (or --preprocessing FILE.json)"
        )

    def _where(self) -> str:
        """'from the checkpoint', or field by field: 'input size from the command line; resize
        to the input size, as the command line gives none; mean and std from the checkpoint'.
        Guessed fields are left to the caller; the default channel order and range are named
        only when a source said them."""
        groups: dict[str, list[str]] = {}
        for name in _FIELD_WORDS:
            if name in self.guessed_fields or name not in self.owners:
                continue
            groups.setdefault(self.owners[name], []).append(name)
        if len(groups) <= 1 and not (self.guessed and groups):
            return f"from {next(iter(groups), self.source)}"
        parts = []
        for owner, names in groups.items():
            if owner.startswith(DERIVED):
                parts.append(owner[len(DERIVED) :])
            else:
                parts.append(f"{_listed([_FIELD_WORDS[n] for n in names])} from {owner}")
        return "; ".join(parts)


def _listed(words: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


DERIVED = "derived: "  # an owner that is a sentence, not a source name


def choose(sources: Sequence[Source]) -> Chosen:
    """Merge `sources` (lowest first; the first one must set every field) field by field."""
    values: dict[str, Any] = {}
    owner: dict[str, int] = {}
    derived: dict[str, str] = {}
    for index, source in enumerate(sources):
        fields = dict(source.fields)
        if "channels" in fields and fields["channels"] != values.get("channels"):
            _new_channel_count(fields, values, owner, sources, index)
        why = ""
        if "size" in fields and "resize" not in fields and "crop_pct" not in fields and values:
            fields["resize"], why = _resize_for_new_size(fields["size"], values, owner, sources)
        if "crop_pct" in fields:
            size = fields["size"] if "size" in fields else values["size"]
            fields["resize"] = resize_for_crop_pct(size, fields.pop("crop_pct"))
        for key, value in fields.items():
            values[key] = value
            owner[key] = index
            derived.pop(key, None)
        if why:
            derived["resize"] = DERIVED + why.format(source=source.name)
    top = sources[max(owner.values())]
    channels = values["channels"]
    mean = broadcast(values["mean"], channels, "mean", sources[owner["mean"]].name)
    std = broadcast(values["std"], channels, "std", sources[owner["std"]].name)
    _check_range(mean, values["range"], sources[owner["mean"]], sources[owner["range"]])
    prep = Preprocessing(
        crop=values["size"],
        resize=values["resize"],
        interpolation=values["interpolation"],
        mean=mean,
        std=std,
        channels=channels,
        channel_order=values["channel_order"],
        input_range=values["range"],
    )
    guessed = tuple(f for f in _GUESS_MATTERS if sources[owner[f]].guess and f not in derived)
    guess_source = next(
        (sources[owner[f]] for f in reversed(guessed)), next((s for s in sources if s.guess), None)
    )
    real = sorted({i for i in owner.values() if not sources[i].guess}, reverse=True)
    source_words = " over ".join(sources[i].name for i in real) if real else top.name
    owners = {
        name: derived.get(name, sources[index].name)
        for name, index in owner.items()
        if name in _FIELD_WORDS
        and (name in derived or not sources[index].guess)
        and values[name] != _DEFAULTS.get(name)
    }
    return Chosen(
        prep,
        source_words,
        guessed,
        guess_source.name if guess_source is not None else "",
        owners,
        guess_source.reason if guess_source is not None else "not from the model",
    )


# The channel order and range the line names only when they are not these.
_DEFAULTS = {"channel_order": "rgb", "range": 1}


def _check_range(mean, input_range: int, mean_from: Source, range_from: Source) -> None:
    """Refuse a mean that cannot belong to pixels of the chosen range, naming both sources."""
    if mean_from.guess and input_range == 255 and range_problem(mean, input_range):
        raise PreprocessingError(
            f"the range 255 (from {range_from.name}) needs a mean in 0–255 units, and the mean "
            f"{tuple(round(v, 3) for v in mean)} is {mean_from.name}: give --mean and --std "
            "too (Caffe's VGG16: --mean 103.939,116.779,123.68 --std 1)"
        )
    problem = range_problem(mean, input_range, mean_from.name)
    if problem:
        said = "" if range_from.guess else f" (the range {input_range} is from {range_from.name})"
        raise PreprocessingError(f"{problem}{said}")


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


def _resize_for_new_size(size, values, owner, sources) -> tuple[Any, str]:
    """A new input size without a resize: keep the crop ratio of a real source, else resize to
    exactly that size. Returns the resize and how it was derived ("" for none of note; the
    text may name the new size's source as {source})."""
    resize = values.get("resize")
    below = sources[owner["resize"]] if "resize" in owner else None
    exact = tuple(size)
    if resize is None and below is not None and not below.guess:
        return None, ""  # "no resize" stays no resize
    if below is None or below.guess or resize is None:
        return exact, "resize to the input size, as {source} gives no resize"
    if tuple(size) == tuple(values["size"]):
        return resize, ""
    if is_exact_resize(resize, values["size"]):
        return exact, "resize to the input size, as {source} gives no resize"
    if isinstance(resize, tuple):
        scaled = tuple(
            math.floor(side * r / old + 1e-9)
            for side, r, old in zip(size, resize, values["size"], strict=True)
        )
        return scaled, f"resize keeping the ratio of {below.name}'s resize to its input size"
    # the ratio, rounded the other way than a float quotient might (299 * 342 / 299 is 342)
    scaled = max(math.floor(side * resize / max(values["size"]) + 1e-9) for side in size)
    return scaled, f"resize keeping the crop ratio of {below.name}"
