"""`cnntool profile MODEL`: params, MACs, FLOPs, activation memory and receptive fields."""

from __future__ import annotations

import click

from cnntool.cli import console
from cnntool.cli.models import DEFAULT_MODEL
from cnntool.cli.options import format_option, shared_options


@click.command(
    "profile",
    epilog="""\b
Examples:
  cnntool profile alexnet --format table
  cnntool profile resnet50 --format jsonl | jq 'select(.name == "total") | .macs'
  cnntool profile efficientnet_lite0 --input-size 320 --batch 8 --summary
""",
)
@click.argument("model", default=DEFAULT_MODEL)
@click.option(
    "--batch",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    help="Batch size (MACs, FLOPs and activation memory scale with it).",
)
@click.option("--summary", is_flag=True, help="Only the totals.")
@shared_options(format_option(default="auto"), data=False)
def profile_command(model, batch, summary, fmt, model_request):
    """Count, per layer of MODEL (default: efficientnet_lite0): parameters (shared ones once),
    MACs (convolution, linear, matmul — also functional calls), FLOPs (2 per MAC plus
    element-wise, normalization, pooling and activation work), activation memory, and the
    receptive field (size, jump, start) on convolutional paths; then the totals. Counting runs
    on the meta device (no memory, no compute) when the model allows it."""
    from cnntool.io import model_tables as tables
    from cnntool.io.records import write_records
    from cnntool.tasks.profile import profile

    loaded = model_request.load(model, weights_matter=False, images=False)
    result = profile(loaded.module, input_shape=loaded.input_shape, batch=batch)
    layers = [result.total] if summary else [*result.layers, result.total]
    write_records(
        tables.profile_records(layers, fmt),
        fmt,
        columns=tables.PROFILE_CSV_COLUMNS,
        table_columns=tables.PROFILE_TABLE,
        styles=lambda layer: "bold" if layer is result.total else None,
        title=f"{loaded.name}: params, MACs, FLOPs, activations, receptive fields",
    )
    console.info(tables.profile_note(result, loaded.name, batch, loaded.input_shape))
    if result.note:
        console.warn(result.note)
    if result.uncounted:
        console.warn("no counting rule for: " + ", ".join(result.uncounted) + " (counted as 0)")
