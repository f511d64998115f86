"""`cnntool models` and `cnntool layers MODEL`."""
from __future__ import annotations

import sys

import click

from cnntool.cli import console
from cnntool.cli.options import (format_option, load_cli_model, model_options,
                                  output_options, parse_size)

DEFAULT_MODEL = "efficientnet_lite0"


@click.command("models", epilog="Example: cnntool models --format table")
@format_option(default="auto")
@output_options
def models_command(fmt):
    """List what a bare MODEL name can load: the built-in trained models (weights shipped in
    pip packages, nothing downloaded) and torchvision's classification architectures (random
    init unless --weights). MODEL can also be a weight file or FILE.py:NAME."""
    from cnntool.core.models import list_models

    records = list_models()
    if fmt == "table":
        from rich.table import Table

        table = Table(title="models", title_justify="left")
        for column in ("name", "kind", "trained on / weights", "params", "GMACs"):
            table.add_column(column, justify="right" if column in ("params", "GMACs") else "left")
        for r in records:
            params = f"{r['num_params']:,}" if r.get("num_params") else ""
            table.add_row(r["name"], r["kind"],
                          r["trained_on"] if r["kind"] == "built-in" else r["weights"],
                          params, str(r.get("gmacs") or ""))
        console.stdout_console().print(table)
        return
    _write_records(records, fmt)


@click.command("layers", epilog="""Examples:

  cnntool layers alexnet

  cnntool layers lenet5-mnist --format jsonl | jq -r .name
""")
@click.argument("model", default=DEFAULT_MODEL)
@click.option("--input-size", metavar="[Cx]HxW", help="Input size (default: the model's own).")
@format_option(default="auto")
@model_options
@output_options
def layers_command(model, input_size, fmt, arch, weights, trust_code, device):
    """List every module of MODEL (default: efficientnet_lite0) with its type, output shape at
    the model's input size, parameters (a container's include its children's) and aliases (conv5, pool5, fc7, penultimate, logits…).
    Layer names here are what --layer accepts everywhere."""
    from cnntool.core.layers import layer_aliases
    from cnntool.tasks.profile import profile

    loaded = load_cli_model(model, arch=arch, weights=weights, device=device, trust_code=trust_code, weights_matter=False)
    shape = input_shape_for(loaded, input_size)
    result = profile(loaded.module, input_shape=shape, batch=1, all_modules=True)
    modules = dict(loaded.module.named_modules())
    aliases: dict[str, list[str]] = {}
    for alias, path in layer_aliases(loaded.module).items():
        aliases.setdefault(path, []).append(alias)
    records = [{"name": layer.name, "type": layer.type, "output_shape": layer.output_shape,
                "params": sum(p.numel() for p in modules[layer.name].parameters()),
                "aliases": aliases.get(layer.name, [])}
               for layer in result.layers]
    if fmt == "table":
        from rich.table import Table

        table = Table(title=f"{loaded.name}: input {'×'.join(map(str, shape))}", title_justify="left")
        for column in ("name", "type", "output shape", "params", "aliases"):
            table.add_column(column, justify="right" if column == "params" else "left")
        for r in records:
            table.add_row(r["name"], r["type"], "×".join(map(str, r["output_shape"] or [])),
                          f"{r['params']:,}", ", ".join(r["aliases"]))
        console.stdout_console().print(table)
        return
    _write_records(records, fmt)


def input_shape_for(loaded, input_size: str | None) -> tuple[int, int, int]:
    """The (C, H, W) a command counts at: --input-size, else the model's own crop."""
    size = parse_size(input_size, channels_default=loaded.input_shape[0])
    return tuple(size) if size else loaded.input_shape


def _write_records(records, fmt: str) -> None:
    from cnntool.io.writers import RecordWriter

    RecordWriter(sys.stdout, fmt).write_all(records)
