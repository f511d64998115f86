"""`cnntool predict MODEL DATA`: classify images."""
from __future__ import annotations

import sys

import click

from cnntool.cli import console
from cnntool.cli.options import (data_options, format_option, load_cli_model,
                                  model_options, output_options)

_TABLE_ROWS = 25


@click.command("predict", epilog="""Examples:

  cnntool predict efficientnet_lite0 imagenet-samples --top 3

  find photos/ -name '*.jpg' | cnntool predict resnet18 - --weights r18.pth --format csv
""")
@click.argument("model")
@click.argument("data")
@click.option("--top", default=5, show_default=True, type=click.IntRange(1), help="Classes per image.")
@format_option()
@model_options
@data_options
@output_options
def predict_command(model, data, top, fmt, arch, weights, trust_code, device, batch_size, workers):
    """Classify the images in DATA with MODEL: one JSON Lines record per image on stdout
    (path, label when known, the top-k classes with probabilities); a table and a summary on
    stderr. DATA is a folder, a list file, '-' (paths on stdin) or a sample set
    (imagenet-samples, mnist-5k, faces, photos). Unreadable images are skipped and counted."""
    from cnntool.core.data import BatchStream, open_data
    from cnntool.io.writers import RecordWriter
    from cnntool.tasks.predict import predict

    loaded = load_cli_model(model, arch=arch, weights=weights, device=device, trust_code=trust_code)
    dataset = open_data(data)
    stream = BatchStream(dataset, loaded.preprocessing, batch_size=batch_size, workers=workers)
    writer = RecordWriter(sys.stdout, fmt) if fmt != "table" else None
    shown, correct, judged = [], 0, 0
    with console.progress(f"predict {loaded.name}", total=len(dataset)) as advance:
        for prediction in predict(loaded, stream, top=top):
            record = prediction.to_record()
            if writer:
                writer.write(_flat(record) if fmt == "csv" else record)
            if len(shown) < _TABLE_ROWS or fmt == "table":
                shown.append(prediction)
            if prediction.correct is not None:
                judged += 1
                correct += prediction.correct
            advance(1)
        advance(len(stream.skipped))
    _report(loaded, dataset, shown, stream.skipped, correct, judged, table_on_stdout=fmt == "table")
    predicted = len(dataset) - len(stream.skipped)
    if predicted == 0:
        from cnntool.errors import DataError

        raise DataError(f"none of the {len(dataset)} images in {data} could be read")


def _flat(record: dict) -> dict:
    """CSV: the top class in columns of its own, the full list as JSON in one column."""
    top1 = record["classes"][0]
    return {"path": record["path"], "label": record.get("label"), "top1": top1["index"],
            "top1_name": top1["name"], "top1_prob": top1["prob"], "classes": record["classes"]}


def _short(path: str, keep: int = 2) -> str:
    """The last `keep` parts of a path: enough to recognise a file in a table."""
    parts = path.replace("\\", "/").split("/")
    return "/".join(parts[-keep:]) if len(parts) > keep else path


def _report(loaded, dataset, shown, skipped, correct, judged, table_on_stdout: bool) -> None:
    from rich.table import Table

    table = Table(title=f"{loaded.name} on {dataset.name}", title_justify="left")
    for column in ("path", "label", "prediction", "prob"):
        table.add_column(column, overflow="fold")
    for p in shown:
        best = p.classes[0]
        label = dataset.label_name(p.index) or ""
        mark = "" if p.correct is None else (" ✓" if p.correct else " ✗")
        table.add_row(_short(p.path), label, f"{best.name or best.index}{mark}", f"{best.prob:.3f}")
    if table_on_stdout:
        console.stdout_console().print(table)
    else:
        console.show(table)
    predicted = len(dataset) - len(skipped)
    summary = f"{predicted} of {len(dataset)} images classified"
    if judged:
        summary += f"; top-1 accuracy {correct}/{judged} = {correct / judged:.1%}"
    if not table_on_stdout and predicted > len(shown):
        summary += f" (table shows the first {len(shown)})"
    console.info(summary)
    if skipped:
        console.warn(f"skipped {len(skipped)} unreadable image(s), e.g. {skipped[0][1]}")
