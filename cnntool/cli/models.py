"""`cnntool models` and `cnntool layers MODEL`."""

from __future__ import annotations

import click

from cnntool.cli.options import format_option, output_options, shared_options

DEFAULT_MODEL = "efficientnet_lite0"


@click.command("models", epilog="Example: cnntool models --format table")
@format_option(default="auto")
@output_options
def models_command(fmt):
    """List what a bare MODEL name can load: the built-in trained models (weights shipped in
    pip packages, nothing downloaded) and torchvision's classification architectures (random
    init unless --weights). MODEL can also be a weight file or FILE.py:NAME."""
    from cnntool.core.loading.models import list_models
    from cnntool.io.model_tables import MODELS_TABLE
    from cnntool.io.records import write_records

    write_records(list_models(), fmt, table_columns=MODELS_TABLE, title="models")


@click.command(
    "layers",
    epilog="""\b
Examples:
  cnntool layers alexnet
  cnntool layers lenet5-mnist --format jsonl | jq -r .name
""",
)
@click.argument("model", default=DEFAULT_MODEL)
@shared_options(format_option(default="auto"), data=False)
def layers_command(model, fmt, model_request):
    """List every module of MODEL (default: efficientnet_lite0) with its type, output shape at
    the model's input size, parameters (a container's include its children's) and aliases (conv5,
    pool5, fc7, penultimate, logits…).
    Layer names here are what --layer accepts everywhere."""
    from cnntool.io.model_tables import LAYERS_TABLE
    from cnntool.io.records import write_records
    from cnntool.tasks.profile import layers

    loaded = model_request.load(model, weights_matter=False, images=False)
    shape = loaded.input_shape
    write_records(
        layers(loaded.module, shape),
        fmt,
        table_columns=LAYERS_TABLE,
        title=f"{loaded.name}: input {'×'.join(map(str, shape))}",
    )
