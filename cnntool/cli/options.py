"""Options that mean the same in every command."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import fields

import click
from click.core import ParameterSource

from cnntool.cli import console
from cnntool.core.loading import model_request
from cnntool.core.option_values import (
    parse_eps,
    parse_floats,
    parse_names,
    parse_pool,
    parse_position,
    parse_resize,
    parse_size,
)
from cnntool.core.scan_options import ScanOptions


def _parsed(parse: Callable[[str | None], object]):
    """A click callback that parses the value (core.option_values), a ValueError a bad parameter."""

    def callback(ctx, param, value):
        try:
            return parse(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None

    return callback


position_option = _parsed(parse_position)  # '3,5' (row, column) -> (3, 5)
names_option = _parsed(parse_names)  # 'conv1,fc' -> ['conv1', 'fc'], '' -> None
pool_option = _parsed(parse_pool)  # 'auto', 'none' or a grid side '4'


def eps_values(one: str | None = None):
    """A callback for ε-like values: '0.007', '8/255' or a comma list (one: a single float)."""
    return _parsed(lambda text: parse_eps(text, one))


def stacked(*decorators):
    """Apply click options (or other decorators) to a command so that they list in the order
    given."""
    return lambda func: functools.reduce(
        lambda f, decorate: decorate(f), reversed(decorators), func
    )


def collect(cls: type, target: str):
    """Decorator: the command's arguments named after `cls`'s fields arrive as one `cls(**values)`
    named `target` (put it below the options that give them)."""

    def decorate(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            kwargs[target] = cls(**{field.name: kwargs.pop(field.name) for field in fields(cls)})
            return func(*args, **kwargs)

        return wrapper

    return decorate


class ModelRequest(model_request.ModelRequest):
    """How the command line asked for MODEL to be loaded and fed (loading/model_request.py):
    flags that contradict MODEL are a usage error, and `load` says on stderr how MODEL is fed."""

    @staticmethod
    def say(text: str, warning: bool) -> None:
        console.say(text, warning)

    @staticmethod
    def refuse(problem: str) -> Exception:
        return click.UsageError(problem)


# the MODEL loading and feeding options, given to the command as `model_request`
model_options = stacked(
    click.option(
        "--arch",
        metavar="NAME",
        help="Architecture of a state-dict file: a built-in, torchvision name, timm:NAME or "
        "FILE.py:NAME.",
    ),
    click.option(
        "--weights",
        metavar="PATH",
        help="Weights for an architecture given by name or FILE.py:NAME.",
    ),
    click.option(
        "--trust-code",
        is_flag=True,
        help="Allow loading that runs code from a file: a .py "
        "model, a module that is not an installed package, or a pickled whole module.",
    ),
    click.option(
        "--device",
        default="auto",
        show_default=True,
        help="auto, cpu, cuda, cuda:N or mps (auto = CUDA when present).",
    ),
    click.option(
        "--input-size",
        callback=_parsed(parse_size),
        metavar="[C,]H,W",
        help="The model's input (the crop), e.g. 32 or 3,32,32.",
    ),
    click.option(
        "--resize",
        callback=_parsed(parse_resize),
        metavar="N|HxW|none",
        help="Resize the shorter side to N before the center crop, or the image to exactly "
        "H×W (none: crop only; not given: the model's own, else the input size, no crop).",
    ),
    click.option(
        "--mean",
        callback=_parsed(parse_floats),
        metavar="A,B,C",
        help="Normalization mean per channel, in the model's channel order and range "
        "(0.485,0.456,0.406; 103.939,116.779,123.68; 104/255).",
    ),
    click.option(
        "--std",
        callback=_parsed(parse_floats),
        metavar="A,B,C",
        help="Normalization std per channel (1: none).",
    ),
    click.option(
        "--channel-order",
        type=click.Choice(["rgb", "bgr"], case_sensitive=False),
        help="The model's channel order (bgr: Caffe-style ports).",
    ),
    click.option(
        "--range",
        "input_range",
        type=click.Choice(["1", "255"]),
        callback=lambda ctx, param, value: None if value is None else int(value),
        help="The model's input range before mean and std: 1 ([0, 1]) or 255 ([0, 255], Caffe).",
    ),
    click.option(
        "--interpolation",
        type=click.Choice(["nearest", "bilinear", "bicubic"]),
        help="Resize filter.",
    ),
    click.option(
        "--preprocessing",
        "preprocessing_file",
        metavar="FILE.json",
        help='How images are fed: {"input_size": [3, 32, 32], "resize": 32, '
        '"interpolation": "bilinear", "mean": [...], "std": [...]} (crop_pct, '
        '"channel_order": "bgr" and "range": 255 too).',
    ),
    click.option(
        "--classes",
        metavar="FILE",
        help="Class names: one per line, a JSON list, or a JSON {name: index} dict.",
    ),
    click.option(
        "--num-classes",
        type=click.IntRange(1),
        metavar="N",
        help="Outputs of the classifier head, for an architecture or factory.",
    ),
    click.option(
        "--use-ema", is_flag=True, help="Load the EMA weights of a checkpoint that holds them."
    ),
    collect(ModelRequest, "model_request"),
)


model_and_data = stacked(
    click.argument("model"), click.argument("data")
)  # a dataset command's arguments

# -q/--quiet and --debug (the latter is read by cnntool.cli.main before parsing)
output_options = stacked(
    click.option(
        "-q",
        "--quiet",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=lambda ctx, param, value: console.set_quiet(bool(value)),
        help="No progress bars or tables on stderr.",
    ),
    click.option(
        "--debug",
        is_flag=True,
        expose_value=False,
        help="Show the full traceback when something fails.",
    ),
)


def _resolved(ctx, param, value):  # --format auto
    return ("table" if sys.stdout.isatty() else "jsonl") if value == "auto" else value


def format_option(default: str | None = "jsonl", records: str | None = None):
    """--format; `auto` means a table on a terminal and JSON Lines in a pipe. With `records` (the
    option's help), records for pipelines only: jsonl or csv, no table."""
    choices = (
        ["jsonl", "csv"] + ([] if records else ["table"]) + (["auto"] if default == "auto" else [])
    )
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(choices),
        default=default,
        show_default=default is not None,
        callback=_resolved,
        help=records
        or "stdout format: JSON Lines, CSV, or a table for people"
        + (" (auto: a table on a terminal, JSON Lines in a pipe)." if default == "auto" else "."),
    )


# the dataset-scan options, given to the command as `scan`
data_options = stacked(
    click.option(
        "--batch-size",
        default=ScanOptions.batch_size,
        show_default=True,
        type=click.IntRange(1),
        help="Images per forward pass.",
    ),
    click.option(
        "--workers",
        type=click.IntRange(0),
        help="Processes reading images (default: from the core count; 0 reads in this one).",
    ),
    click.option(
        "--max-pixels",
        type=click.IntRange(1),
        metavar="N",
        help="Skip images whose header claims more pixels (decompression bombs; default: Pillow's "
        "89,478,485).",
    ),
    click.option(
        "--precision",
        type=click.Choice(["fp32", "tf32", "bf16", "fp16"]),
        default=ScanOptions.precision,
        show_default=True,
        help="Arithmetic of the forward pass: fp32 (exact); tf32 (CUDA); bf16 (CUDA, or CPUs with "
        "AVX512-BF16/AMX); fp16 (CUDA). The reduced ones are faster and move activations "
        "by about 1e-3 to 1e-2; stderr says what changes.",
    ),
    click.option(
        "--fold-bn/--no-fold-bn",
        default=ScanOptions.fold_bn,
        show_default=True,
        help="Fold each BatchNorm into the convolution before it: faster, the same numbers to "
        "float rounding; layers whose own output the command reads are left alone.",
    ),
    click.option(
        "--dist-timeout",
        type=click.FloatRange(0, min_open=True),
        default=ScanOptions.dist_timeout,
        show_default=True,
        envvar="CNNTOOL_DIST_TIMEOUT",
        show_envvar=True,
        metavar="SECONDS",
        help="Under torchrun, srun or mpirun: how long a rank waits for the others (to start, "
        "and at each merge) before it stops with exit 1: one of them may have died.",
    ),
    collect(ScanOptions, "scan"),
)


def shared_options(fmt=None, *, data: bool = True):
    """What every command takes after its own options: `fmt` (a --format option), MODEL's
    loading and feeding options, the dataset-scan options (`data`), -q and --debug."""

    def decorate(func):
        func = model_options(data_options(output_options(func)) if data else output_options(func))
        return fmt(func) if fmt else func

    return decorate


limit_option = click.option(
    "--limit",
    type=click.IntRange(1),
    metavar="N",
    help="Scan N images spread evenly over DATA (every len/N-th), not the first N: a sorted set's "
    "head has few classes.",
)


stats_format_option = format_option(None, records="Also print one record per filter/map on stdout.")
records_format_option = format_option(records="stdout format of the per-unit records.")


def given(name: str) -> bool:
    """Whether the user typed option `name` (a default does not count)."""
    source = click.get_current_context().get_parameter_source(name)
    return source not in (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)
