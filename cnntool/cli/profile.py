"""`cnntool profile MODEL`: params, MACs, FLOPs, activation memory and receptive fields."""
from __future__ import annotations

import sys

import click

from cnntool.cli import console
from cnntool.cli.models import DEFAULT_MODEL
from cnntool.cli.options import format_option, model_options, output_options

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
    from cnntool.io.writers import RecordWriter
    from cnntool.tasks.profile import profile

    loaded = model_request.load(model, weights_matter=False, images=False)
    shape = loaded.input_shape
    result = profile(loaded.module, input_shape=shape, batch=batch)
    records = [result.total.to_record()] if summary else result.to_records()
    if fmt == "table":
        _table(loaded.name, result, summary)
    elif fmt == "csv":
        RecordWriter(sys.stdout, "csv", CSV_COLUMNS).write_all(_flat(r) for r in records)
    else:
        RecordWriter(sys.stdout, "jsonl").write_all(records)
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


def _human(value: float, unit: str = "") -> str:
    for threshold, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= threshold:
            return f"{value / threshold:.2f}{suffix}{unit}"
    return f"{value:g}{unit}"


def _table(name: str, result, summary: bool) -> None:
    from rich.table import Table

    table = Table(title=f"{name}: params, MACs, FLOPs, activations, receptive fields",
                  title_justify="left")
    for column in ("layer", "type", "output", "params", "MACs", "FLOPs", "act. mem", "RF size/jump"):
        table.add_column(column, justify="left" if column in ("layer", "type", "output") else "right")
    rows = [result.total] if summary else [*result.layers, result.total]
    for layer in rows:
        rf = layer.receptive_field
        field = f"{_pair(rf.size)} / {_pair(rf.jump)}" if rf is not None else ""
        style = "bold" if layer is result.total else None
        table.add_row(layer.name, layer.type, "×".join(map(str, layer.output_shape or [])),
                      f"{layer.params:,}", _human(layer.macs), _human(layer.flops),
                      _human(layer.activation_bytes, "B"), field, style=style)
    console.stdout_console().print(table)


def _pair(values) -> str:
    return str(values[0]) if values[0] == values[1] else f"{values[0]}×{values[1]}"
