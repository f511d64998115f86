"""Options that mean the same in every command."""
from __future__ import annotations

import click

from cnntool.cli import console


def _set_quiet(ctx, param, value):
    console.set_quiet(bool(value))
    return value


def model_options(func):
    """MODEL loading options: --arch, --weights, --trust-code, --device."""
    func = click.option("--device", default="auto", show_default=True,
                        help="auto, cpu, cuda, cuda:N or mps (auto = CUDA when present).")(func)
    func = click.option("--trust-code", is_flag=True,
                        help="Allow loading that runs code from a file: a .py model or a pickled whole module.")(func)
    func = click.option("--weights", metavar="PATH", help="Weights for an architecture given by name or FILE.py:NAME.")(func)
    func = click.option("--arch", metavar="NAME", help="Architecture for a state-dict file (e.g. resnet18).")(func)
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


def data_options(func):
    """--batch-size and --workers for dataset scans."""
    func = click.option("--workers", default=0, show_default=True, type=click.IntRange(0),
                        help="DataLoader worker processes for reading images.")(func)
    func = click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1),
                        help="Images per forward pass.")(func)
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


def load_cli_model(model: str, *, arch=None, weights=None, device="auto", trust_code=False,
                   weights_matter: bool = True):
    """core.models.load_model for a command, saying so when the model has random weights.

    torchvision ships architectures without weights offline, so `resnet18` alone is randomly
    initialized: fine for counting (profile, layers, gradcheck: `weights_matter=False`), but
    predictions, attacks, visualizations, features and diagnoses of it describe noise.
    """
    from cnntool.core.models import load_model

    loaded = load_model(model, arch=arch, weights=weights, device=device, trust_code=trust_code)
    if weights_matter and loaded.random_weights:
        console.warn(f"{loaded.name} has random weights (torchvision's architectures come without "
                     "trained ones here): the results describe an untrained network; give "
                     "--weights FILE for a trained one")
    return loaded


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


def write_records(records, fmt: str | None, columns=None) -> None:
    """Records on stdout as JSON Lines or CSV; nothing when fmt is None."""
    import sys

    from cnntool.io.writers import RecordWriter

    if fmt:
        RecordWriter(sys.stdout, fmt, columns).write_all(records)
