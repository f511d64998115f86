"""Options that mean the same in every command."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Sequence

import click

from cnntool.cli import console


def _set_quiet(ctx, param, value):
    console.set_quiet(bool(value))
    return value


def _collected(names: Sequence[str], build: Callable[[dict], object], target: str):
    """Decorator: the click options `names` arrive as one object, `target=build(values)`."""
    def decorate(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            kwargs[target] = build({name: kwargs.pop(name) for name in names})
            return func(*args, **kwargs)
        return wrapper
    return decorate


@dataclass(frozen=True)
class ModelRequest:
    """How the command line asked for MODEL to be loaded and fed (the same options everywhere)."""

    arch: str | None = None
    weights: str | None = None
    trust_code: bool = False
    device: str = "auto"
    input_size: tuple | None = None  # (C or None, H, W)
    resize: int | str | None = None  # int or "none"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    interpolation: str | None = None
    preprocessing_file: str | None = None
    classes: str | None = None
    num_classes: int | None = None
    use_ema: bool = False

    def load(self, spec: str, *, weights_matter: bool = True, images: bool = True,
             run: bool | None = None):
        """Load MODEL as asked and say on stderr how its input is fed and where that came from.

        `weights_matter`: warn when the answer describes random weights. `images`: the command
        feeds images (so the model must run on them: one forward pass checks it); else only
        the input size matters (profile, layers, gradcheck). `run` (default: `images`): check
        with one forward pass that the model runs, and that NaN/inf weights leave its output
        finite (gradcheck: their gradients would be meaningless)."""
        from cnntool.core.models import load_model
        from cnntool.core.preprocessing_sources import PreprocessingOptions

        self.check(spec)
        loaded = load_model(spec, arch=self.arch, weights=self.weights, device=self.device,
                            trust_code=self.trust_code, classes=self.classes,
                            num_classes=self.num_classes, use_ema=self.use_ema,
                            preprocessing=PreprocessingOptions(
                                input_size=self.input_size, resize=self.resize,
                                interpolation=self.interpolation, mean=self.mean, std=self.std,
                                file=self.preprocessing_file))
        for note in loaded.notes:
            console.info(note)
        if images:
            (console.warn if loaded.preprocessing_guessed else console.info)(loaded.preprocessing_line())
        if images if run is None else run:
            loaded.check_forward()
        if not images:
            shape = "×".join(map(str, loaded.input_shape))
            choice = loaded.preprocessing_choice
            if choice is not None and "size" in choice.guessed_fields:
                console.warn(f"input {shape} — {choice.guess_name}, not from the model: set "
                             "--input-size (or --preprocessing FILE.json) if it takes another")
            else:
                console.info(f"input {shape} — from {loaded.preprocessing_source}")
        for warning in loaded.warnings:
            console.warn(warning)
        if weights_matter and loaded.random_weights:
            console.warn(f"{loaded.name} has random weights (torchvision's architectures come "
                         "without trained ones here): the results describe an untrained "
                         "network; give --weights FILE for a trained one")
        return loaded

    def check(self, spec: str) -> None:
        """Flags that contradict MODEL, refused before anything is loaded."""
        from pathlib import Path

        from cnntool.core.checkpoints import WEIGHT_SUFFIXES

        path = Path(spec)
        is_file = path.suffix.lower() in WEIGHT_SUFFIXES or path.is_file() or path.is_dir()
        if self.weights and is_file:
            raise click.UsageError(f"MODEL {spec} is a weight file already; --weights is for an "
                                   "architecture named by MODEL (resnet18, FILE.py:NAME)")
        if self.arch and not is_file:
            raise click.UsageError(f"--arch names the architecture of a weight file, and MODEL "
                                   f"{spec} is not one; drop --arch")


def _size(ctx, param, value):
    size = parse_size(value)
    if size is not None and any(v is not None and v < 1 for v in size):
        raise click.BadParameter(f"'{value}' has a size below 1 pixel")
    return size


def _floats(ctx, param, value):
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a comma list of numbers like 0.5,0.5,0.5") from None


def _resize(ctx, param, value):
    if value is None or value.lower() == "none":
        return None if value is None else "none"
    try:
        size = int(value)
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a number of pixels or 'none'") from None
    if size < 1:
        raise click.BadParameter("the size must be at least 1 pixel")
    return size


_MODEL_OPTIONS = [
    click.option("--arch", metavar="NAME",
                 help="Architecture of a state-dict file: a built-in, torchvision name, timm:NAME or FILE.py:NAME."),
    click.option("--weights", metavar="PATH",
                 help="Weights for an architecture given by name or FILE.py:NAME."),
    click.option("--trust-code", is_flag=True,
                 help="Allow loading that runs code from a file: a .py model, a module that is "
                      "not an installed package, or a pickled whole module."),
    click.option("--device", default="auto", show_default=True,
                 help="auto, cpu, cuda, cuda:N or mps (auto = CUDA when present)."),
    click.option("--input-size", callback=_size, metavar="[C,]H,W",
                 help="The model's input (the crop), e.g. 32 or 3,32,32."),
    click.option("--resize", callback=_resize, metavar="N|none",
                 help="Resize the shorter side to N before the center crop (none: crop only)."),
    click.option("--mean", callback=_floats, metavar="A,B,C", help="Normalization mean per channel."),
    click.option("--std", callback=_floats, metavar="A,B,C", help="Normalization std per channel."),
    click.option("--interpolation", type=click.Choice(["nearest", "bilinear", "bicubic"]),
                 help="Resize filter."),
    click.option("--preprocessing", "preprocessing_file", metavar="FILE.json",
                 help='How images are fed: {"input_size": [3, 32, 32], "resize": 32, '
                      '"interpolation": "bilinear", "mean": [...], "std": [...]} (crop_pct too).'),
    click.option("--classes", metavar="FILE",
                 help="Class names: one per line, a JSON list, or a JSON {name: index} dict."),
    click.option("--num-classes", type=click.IntRange(1), metavar="N",
                 help="Outputs of the classifier head, for an architecture or factory."),
    click.option("--use-ema", is_flag=True,
                 help="Load the EMA weights of a checkpoint that holds them."),
]
_MODEL_NAMES = ["arch", "weights", "trust_code", "device", "input_size", "resize", "mean", "std",
                "interpolation", "preprocessing_file", "classes", "num_classes", "use_ema"]


def model_options(func):
    """The MODEL loading and feeding options, given to the command as `model_request`."""
    func = _collected(_MODEL_NAMES, lambda values: ModelRequest(**values), "model_request")(func)
    for option in reversed(_MODEL_OPTIONS):
        func = option(func)
    return func


def output_options(func):
    """-q/--quiet and --debug (the latter is read by cnntool.cli.main before parsing)."""
    func = click.option("--debug", is_flag=True, expose_value=False,
                        help="Show the full traceback when something fails.")(func)
    func = click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_set_quiet,
                        is_eager=True, help="No progress bars or tables on stderr.")(func)
    return func


def format_option(default: str = "jsonl"):
    """--format; `auto` means a table on a terminal and JSON Lines in a pipe."""
    choices = ["jsonl", "csv", "table"] + (["auto"] if default == "auto" else [])
    return click.option("--format", "fmt", type=click.Choice(choices), default=default,
                        show_default=True, callback=_resolve_auto,
                        help="stdout format: JSON Lines, CSV, or a table for people"
                             + (" (auto: a table on a terminal, JSON Lines in a pipe)." if default == "auto" else "."))


def _resolve_auto(ctx, param, value):
    if value == "auto":
        import sys

        return "table" if sys.stdout.isatty() else "jsonl"
    return value


@dataclass(frozen=True)
class ScanOptions:
    """How a dataset scan reads and batches its images (the same options on every scan)."""

    batch_size: int = 32
    workers: int | None = None  # None: from the core count
    max_pixels: int | None = None  # None: Pillow's limit
    precision: str = "fp32"
    fold_bn: bool = True


_SCAN_OPTIONS = [
    click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1),
                 help="Images per forward pass."),
    click.option("--workers", type=click.IntRange(0),
                 help="Processes reading images (default: from the core count; 0 reads in this one)."),
    click.option("--max-pixels", type=click.IntRange(1), metavar="N",
                 help="Skip images whose header claims more pixels (decompression bombs; "
                      "default: Pillow's 89,478,485)."),
    click.option("--precision", type=click.Choice(["fp32", "tf32", "bf16", "fp16"]),
                 default="fp32", show_default=True,
                 help="Arithmetic of the forward pass: fp32 (exact); tf32 (CUDA); bf16 (CUDA, "
                      "or CPUs with AVX512-BF16/AMX); fp16 (CUDA). Reduced precision is faster "
                      "and moves activations by about 1e-3 to 1e-2; stderr says what changes."),
    click.option("--fold-bn/--no-fold-bn", default=True, show_default=True,
                 help="Fold each BatchNorm into the convolution before it: faster, the same "
                      "numbers to float rounding; layers whose own output the command reads "
                      "are left alone."),
]


def data_options(func):
    """The dataset-scan options, given to the command as `scan`."""
    func = _collected(["batch_size", "workers", "max_pixels", "precision", "fold_bn"],
                      lambda values: ScanOptions(**values), "scan")(func)
    for option in reversed(_SCAN_OPTIONS):
        func = option(func)
    return func


def parse_size(text: str | None, channels_default: int | None = None):
    """'224', '224x224', '3x224x224' or '3,224,224' -> (C|None, H, W)."""
    if text is None:
        return None
    parts = [p for p in text.lower().replace(",", "x").replace("×", "x").split("x") if p]
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        raise click.BadParameter(f"'{text}' is not a size like 224, 224x224 or 3x224x224") from None
    if len(numbers) == 1:
        numbers = numbers * 2
    if len(numbers) == 2:
        return (channels_default, numbers[0], numbers[1])
    if len(numbers) == 3:
        return tuple(numbers)
    raise click.BadParameter(f"'{text}' is not a size like 224, 224x224 or 3x224x224")


stats_format_option = click.option(
    "--format", "fmt", type=click.Choice(["jsonl", "csv"]), default=None,
    help="Also print one record per filter/map on stdout.")

records_format_option = click.option(
    "--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True,
    help="stdout format of the per-unit records.")


def position_option(ctx, param, value):
    """'3,5' (row, column) -> (3, 5)."""
    if value is None:
        return None
    parts = value.replace("x", ",").split(",")
    try:
        row, col = (int(p) for p in parts)
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a position like 3,5 (row,column)") from None
    return row, col


def given(name: str) -> bool:
    """Whether the user typed option `name` (a default does not count)."""
    from click.core import ParameterSource

    source = click.get_current_context().get_parameter_source(name)
    return source not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)
