"""`cnntool predict MODEL DATA`: classify images."""
from __future__ import annotations

import sys

import click

from cnntool.cli import console
from cnntool.cli.options import data_options, format_option, model_options, output_options
from cnntool.io.records import Column, short_path, write_records

_TABLE_ROWS = 25
CSV_COLUMNS = ["path", "label", "top1", "top1_name", "top1_prob", "classes"]


@click.command("predict", epilog="""Examples:

  cnntool predict efficientnet_lite0 imagenet-samples --top 3

  find photos/ -name '*.jpg' | cnntool predict resnet18 - --weights r18.pth --format csv

  torchrun --nproc_per_node 2 -m cnntool predict efficientnet_lite0 photos/ > predictions.jsonl
""")
@click.argument("model")
@click.argument("data")
@click.option("--top", default=5, show_default=True, type=click.IntRange(1), help="Classes per image.")
@format_option()
@model_options
@data_options
@output_options
def predict_command(model, data, top, fmt, model_request, scan):
    """Classify the images in DATA with MODEL: one JSON Lines record per image on stdout
    (path, label when known, the top-k classes with probabilities); a table and a summary on
    stderr. DATA is a folder, a list file, '-' (paths on stdin) or a sample set
    (imagenet-samples, mnist-5k, faces, photos). Unreadable images are skipped and counted.
    Under torchrun each rank classifies a shard and rank 0 writes every record in order."""
    from cnntool.cli.session import dataset_scan, finish
    from cnntool.io.writers import RecordWriter
    from cnntool.tasks.predict import PredictionConsumer

    with dataset_scan(model, model_request, data, scan) as session:
        seen = _Seen(keep_all=fmt == "table")
        streaming = not session.shard.distributed  # else rank 0 writes the gathered records
        writer = RecordWriter(sys.stdout, fmt, CSV_COLUMNS if fmt == "csv" else None) \
            if fmt != "table" and streaming else None

        def stream_out(found):
            seen.add(found)
            if writer:
                writer.write_all(_record(p, fmt) for p in found)

        consumer = PredictionConsumer(session.model, session.dataset, top,
                                      on_predictions=stream_out if streaming else None)
        session.run([consumer], f"predict {session.model.name}")
        gathered = session.gather(consumer.predictions)
        report = finish(session)
        if not session.is_main:
            return
        if not streaming:
            everything = sorted((p for part in gathered for p in part), key=lambda p: p.index)
            seen.add(everything)
            if fmt != "table":
                write_records((_record(p, fmt) for p in everything), fmt,
                              columns=CSV_COLUMNS if fmt == "csv" else None)
        _report(session, seen, report, table_on_stdout=fmt == "table")


class _Seen:
    """The first predictions (for the table) and the accuracy tally, in constant memory."""

    def __init__(self, keep_all: bool):
        self.keep_all, self.shown, self.count, self.correct, self.judged = keep_all, [], 0, 0, 0

    def add(self, predictions) -> None:
        for p in predictions:
            self.count += 1
            if p.correct is not None:
                self.judged += 1
                self.correct += p.correct
            if self.keep_all or len(self.shown) < _TABLE_ROWS:
                self.shown.append(p)


def _record(prediction, fmt: str) -> dict:
    """CSV: the top class in columns of its own, the full list as JSON in one column."""
    record = prediction.to_record()
    if fmt != "csv":
        return record
    top1 = record["classes"][0]
    return {"path": record["path"], "label": record.get("label"), "top1": top1["index"],
            "top1_name": top1["name"], "top1_prob": top1["prob"], "classes": record["classes"]}


_COLUMNS = [Column("path", "path", fold=True), Column("label", "label", fold=True),
            Column("prediction", "prediction", fold=True), Column("prob", "prob")]


def _report(session, seen, report, table_on_stdout: bool) -> None:
    """The table (first rows on stderr; all of them with --format table) and the summary."""
    rows = [{"path": short_path(p.path), "label": session.dataset.label_name(p.index) or "",
             "prediction": f"{p.classes[0].name or p.classes[0].index}"
                           + ("" if p.correct is None else (" ✓" if p.correct else " ✗")),
             "prob": f"{p.classes[0].prob:.3f}"} for p in seen.shown]
    title = f"{session.model.name} on {session.dataset.name}"
    if table_on_stdout:
        write_records(rows, "table", title=title, table_columns=_COLUMNS)
    else:
        console.show_table(title, _COLUMNS, rows)
    summary = f"{seen.count} of {report.total} images classified"
    if seen.judged:
        summary += f"; top-1 accuracy {seen.correct}/{seen.judged} = {seen.correct / seen.judged:.1%}"
    if not table_on_stdout and seen.count > len(seen.shown):
        summary += f" (table shows the first {len(seen.shown)})"
    console.info(summary)
