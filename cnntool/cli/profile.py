"""`cnntool profile MODEL`: params, MACs, FLOPs, activation memory and receptive fields."""
from __future__ import annotations

import click

from cnntool.cli import console
from cnntool.cli.models import DEFAULT_MODEL
from cnntool.cli.options import format_option, model_options, output_options
from cnntool.io.records import Column, human, write_records

CSV_COLUMNS = ["name", "type", "output_shape", "params", "macs", "flops", "activation_bytes",
               "rf_size", "rf_jump", "rf_start", "calls"]


@click.command("profile", epilog="""Examples:

  cnntool profile alexnet --format table

  cnntool profile resnet50 --format jsonl | jq 'select(.name == "total") | .macs'

  cnntool profile efficientnet_lite0 --input-size 320 --batch 8 --summary
""")
@click.argument("model", default=DEFAULT_MODEL)
@click.option("--batch", default=1, show_default=True, type=click.IntRange(1),
              help="Batch size (MACs, FLOPs and activation memory scale with it).")
@click.option("--summary", is_flag=True, help="Only the totals.")
@format_option(default="auto")
@model_options
@output_options
def profile_command(model, batch, summary, fmt, model_request):
    """Count, per layer of MODEL (default: efficientnet_lite0): parameters (shared ones once),
    MACs (convolution, linear, matmul — also functional calls), FLOPs (2 per MAC plus
    element-wise, normalization, pooling and activation work), activation memory, and the
    receptive field (size, jump, start) on convolutional paths; then the totals. Counting runs
    on the meta device (no memory, no compute) when the model allows it."""
    from cnntool.tasks.profile import profile

    loaded = model_request.load(model, weights_matter=False, images=False)
    shape = loaded.input_shape
    result = profile(loaded.module, input_shape=shape, batch=batch)
    layers = [result.total] if summary else [*result.layers, result.total]
    if fmt == "table":
        write_records(layers, "table", table_columns=_COLUMNS, styles=lambda layer: "bold" if layer is result.total else None,
                      title=f"{loaded.name}: params, MACs, FLOPs, activations, receptive fields")
    else:
        records = [layer.to_record() for layer in layers]
        write_records([_flat(r) for r in records] if fmt == "csv" else records, fmt,
                      columns=CSV_COLUMNS if fmt == "csv" else None)
    how = "on the meta device (no compute)" if result.mode == "meta" else "with a real forward pass"
    console.info(f"{loaded.name}: input {batch}×{'×'.join(map(str, shape))}, counted {how}. "
                 f"{result.convention}")
    if result.uncounted:
        console.warn("no counting rule for: " + ", ".join(result.uncounted) + " (counted as 0)")


def _flat(record: dict) -> dict:
    rf = record.get("receptive_field") or {}
    flat = {k: v for k, v in record.items() if k != "receptive_field"}
    flat["output_shape"] = "x".join(map(str, record["output_shape"] or []))
    for key in ("size", "jump", "start"):
        flat[f"rf_{key}"] = "x".join(map(str, rf[key])) if rf else ""
    return flat


def _field(layer) -> str:
    rf = layer.receptive_field
    return "" if rf is None else f"{_pair(rf.size)} / {_pair(rf.jump)}"


def _pair(values) -> str:
    return str(values[0]) if values[0] == values[1] else f"{values[0]}×{values[1]}"


_COLUMNS = [Column("layer", lambda layer: layer.name), Column("type", lambda layer: layer.type),
            Column("output", lambda layer: "×".join(map(str, layer.output_shape or []))),
            Column("params", lambda layer: f"{layer.params:,}", right=True),
            Column("MACs", lambda layer: human(layer.macs), right=True),
            Column("FLOPs", lambda layer: human(layer.flops), right=True),
            Column("act. mem", lambda layer: human(layer.activation_bytes, "B"), right=True),
            Column("RF size/jump", _field, right=True)]
