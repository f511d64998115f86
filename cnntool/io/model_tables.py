"""The tables and CSV rows of `cnntool models`, `cnntool layers` and `cnntool profile`."""

from __future__ import annotations

from cnntool.io.records import Column, human

MODELS_TABLE = [
    Column("name", "name"),
    Column("kind", "kind"),
    Column(
        "trained on / weights",
        lambda r: r["trained_on"] if r["kind"] == "built-in" else r["weights"],
    ),
    Column("params", lambda r: f"{r['num_params']:,}" if r.get("num_params") else "", right=True),
    Column("GMACs", lambda r: r.get("gmacs") or "", right=True),
]
LAYERS_TABLE = [
    Column("name", "name"),
    Column("type", "type"),
    Column("output shape", lambda r: "×".join(map(str, r["output_shape"] or []))),
    Column("params", lambda r: f"{r['params']:,}", right=True),
    Column("aliases", lambda r: ", ".join(r["aliases"])),
]
PROFILE_CSV_COLUMNS = [
    "name",
    "type",
    "output_shape",
    "params",
    "macs",
    "flops",
    "activation_bytes",
    "rf_size",
    "rf_jump",
    "rf_start",
    "calls",
]


def _pair(values) -> str:
    return str(values[0]) if values[0] == values[1] else f"{values[0]}×{values[1]}"


def _field(layer) -> str:
    rf = layer.receptive_field
    return "" if rf is None else f"{_pair(rf.size)} / {_pair(rf.jump)}"


PROFILE_TABLE = [
    Column("layer", lambda layer: layer.name),
    Column("type", lambda layer: layer.type),
    Column("output", lambda layer: "×".join(map(str, layer.output_shape or []))),
    Column("params", lambda layer: f"{layer.params:,}", right=True),
    Column("MACs", lambda layer: human(layer.macs), right=True),
    Column("FLOPs", lambda layer: human(layer.flops), right=True),
    Column("act. mem", lambda layer: human(layer.activation_bytes, "B"), right=True),
    Column("RF size/jump", _field, right=True),
]


def profile_records(layers, fmt: str) -> list:
    """One record per layer (tasks.profile's LayerProfile); CSV: shapes and receptive fields
    as 3x3 in PROFILE_CSV_COLUMNS; a table (PROFILE_TABLE) reads the layers themselves."""
    if fmt == "table":
        return list(layers)
    records = [layer.to_record() for layer in layers]
    return [_flat(r) for r in records] if fmt == "csv" else records


def _flat(record: dict) -> dict:
    rf = record.get("receptive_field") or {}
    flat = {k: v for k, v in record.items() if k != "receptive_field"}
    flat["output_shape"] = "x".join(map(str, record["output_shape"] or []))
    for key in ("size", "jump", "start"):
        flat[f"rf_{key}"] = "x".join(map(str, rf[key])) if rf else ""
    return flat


def profile_note(result, name: str, batch: int, shape) -> str:
    """The input, how it was counted, and the counting convention."""
    how = "on the meta device (no compute)" if result.mode == "meta" else "with a real forward pass"
    return f"{name}: input {batch}×{'×'.join(map(str, shape))}, counted {how}. {result.convention}"
