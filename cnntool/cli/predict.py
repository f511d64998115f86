"""`cnntool predict MODEL DATA`: classify images."""

from __future__ import annotations

import click

from cnntool.cli import console
from cnntool.cli.options import format_option, model_and_data, shared_options


@click.command(
    "predict",
    epilog="""\b
Examples:
  cnntool predict efficientnet_lite0 imagenet-samples --top 3
  find photos/ -name '*.jpg' | cnntool predict resnet18 - --weights r18.pth --format csv
  torchrun --nproc_per_node 2 -m cnntool predict efficientnet_lite0 photos/ > predictions.jsonl
""",
)
@model_and_data
@click.option(
    "--top", default=5, show_default=True, type=click.IntRange(1), help="Classes per image."
)
@shared_options(format_option())
def predict_command(model, data, top, fmt, model_request, scan):
    """Classify the images in DATA with MODEL: one JSON Lines record per image on stdout
    (path, label when known, the top-k classes with probabilities); a table and a summary on
    stderr. DATA is a folder, a list file, '-' (paths on stdin) or a sample set
    (imagenet-samples, mnist-5k, faces, photos). Unreadable images are skipped and counted.
    Under torchrun each rank classifies a shard and rank 0 writes every record in order."""
    from cnntool.cli.dataset_scan import dataset_scan, finish, say_labels
    from cnntool.io import predictions as out
    from cnntool.tasks.predict import PredictionTally, nonfinite_warning, predict_session

    with dataset_scan(model, model_request, data, scan) as session:
        labels = say_labels(session)
        tally = PredictionTally(keep=None if fmt == "table" else out.TABLE_ROWS)
        records = out.PredictionRecords(
            fmt
        )  # in one process as they come; under torchrun on rank 0
        everything = predict_session(session, top, tally, on_predictions=records.write)
        report = finish(session)
        if not session.is_main:
            return
        records.write(everything)  # every rank's under torchrun; none in one process
        out.write_table(
            tally.kept, session.model.name, session.dataset, fmt, show=console.show_table
        )
        if tally.nonfinite:
            console.warn(nonfinite_warning(tally.nonfinite, tally.count))
        console.info(
            out.summary(tally, report.total, table_on_stdout=fmt == "table", labels=labels)
        )
