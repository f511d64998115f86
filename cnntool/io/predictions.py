"""What `cnntool predict` writes: its records (CSV: the top class in columns of its own), the
table for people and the summary sentence."""

from __future__ import annotations

import sys
from collections.abc import Callable

from cnntool.io.records import Column, RecordWriter, short_path, write_records

TABLE_ROWS = 25  # on stderr; --format table shows every row
CSV_COLUMNS = ["path", "label", "top1", "top1_name", "top1_prob", "classes"]
TABLE = [
    Column("path", "path", fold=True),
    Column("label", "label", fold=True),
    Column("prediction", "prediction", fold=True),
    Column("prob", "prob"),
]


class PredictionRecords:
    """Predictions' records on stdout as JSON Lines or CSV, flushed as they come (nothing for
    a table: the table is written instead)."""

    def __init__(self, fmt: str):
        self.fmt = fmt
        self.writer = RecordWriter(sys.stdout, fmt, CSV_COLUMNS) if fmt != "table" else None

    def write(self, predictions) -> None:
        if self.writer is not None:
            self.writer.write_all(record(p, self.fmt) for p in predictions)


def record(prediction, fmt: str) -> dict:
    """CSV: the top class in columns of its own, the full list as JSON in one column."""
    record = prediction.to_record()
    if fmt != "csv":
        return record
    top1 = record["classes"][0]
    return {
        "path": record["path"],
        "label": record.get("label"),
        "top1": top1["index"],
        "top1_name": top1["name"],
        "top1_prob": top1["prob"],
        "classes": record["classes"],
    }


def write_table(predictions, model_name: str, dataset, fmt: str, *, show: Callable) -> None:
    """The predictions' table (the top class, ✓ or ✗ where the label is known): with `table` on
    stdout, else to `show(title, columns, rows)` (stderr)."""
    rows = [
        {
            "path": short_path(p.path),
            "label": dataset.label_name(p.index) or "",
            "prediction": f"{p.classes[0].name or p.classes[0].index}"
            + ("" if p.correct is None else (" ✓" if p.correct else " ✗")),
            "prob": f"{p.classes[0].prob:.3f}",
        }
        for p in predictions
    ]
    title = f"{model_name} on {dataset.name}"
    if fmt == "table":
        write_records(rows, "table", title=title, table_columns=TABLE)
    else:
        show(title, TABLE, rows)


def summary(tally, total: int, table_on_stdout: bool, labels=None) -> str:
    """How many images were classified, the top-1 accuracy when labels are known (`tally`: a
    tasks.predict.PredictionTally) with how many gave NaN/inf logits, how the labels were mapped
    (`labels`: a core.class_indices.LabelMapping) and how much of it the stderr table shows."""
    line = f"{tally.count} of {total} images classified"
    if tally.judged:
        line += (
            f"; top-1 accuracy {tally.correct}/{tally.judged} = {tally.correct / tally.judged:.1%}"
        )
        if tally.nonfinite:
            line += f" ({tally.nonfinite} with non-finite logits counted wrong)"
        if labels is not None:
            line += f" ({labels.description})"
    if not table_on_stdout and tally.count > len(tally.kept):
        line += f" (table shows the first {len(tally.kept)})"
    return line
