"""`cnntool features MODEL DATA --layer L -o FEATURES.npz`: a layer's features for a dataset.
Thin: scan session -> tasks.features (shared with `cnntool embed MODEL DATA`) -> io.npz."""

from __future__ import annotations

from pathlib import Path

import click

from cnntool.cli import console
from cnntool.cli.options import model_and_data, shared_options

POOLING_CHOICES = ["avg", "max", "flatten"]  # tasks.features.POOLINGS, without importing it

pooling_option = click.option(
    "--pooling",
    type=click.Choice(POOLING_CHOICES),
    default="avg",
    show_default=True,
    help="How a spatial map (C, H, W) becomes a vector: global average or max per channel "
    "(C values), or flatten (C·H·W values). Vector layers are kept as they are.",
)
layer_option = click.option(
    "--layer",
    default="penultimate",
    show_default=True,
    metavar="NAME",
    help="Layer path or alias (fc7, pool5, penultimate; `cnntool layers MODEL` lists them).",
)


@click.command(
    "features",
    epilog="""Examples:

\b
  cnntool features lenet5-mnist mnist-5k --layer relu3 -o mnist.npz
  cnntool features efficientnet_lite0 photos/ --layer _blocks.15 --pooling max -o photos.npz
  torchrun --nproc_per_node 2 -m cnntool features efficientnet_lite0 photos/ -o photos.npz
  cnntool features lenet5-mnist mnist-5k --layer relu3 -o f.npz && cnntool embed \\
      --features f.npz --plot map.png
""",
)
@model_and_data
@layer_option
@pooling_option
@click.option("-o", "--out", required=True, metavar="NPZ", help="The .npz file to write.")
@shared_options()
def features_command(model, data, layer, pooling, out, model_request, scan):
    """A layer's features for every image of DATA, written to an .npz file.

    Arrays in the file: `features` (images × dims, float32), `paths`, `labels` (int, -1 when
    unknown), `label_names`, `model`, `layer`, `pooling`. Rows are streamed to a scratch file
    beside the output, so a dataset never has to fit in memory. Unreadable images are skipped and
    counted; NaN or infinite features are named in a warning. Under torchrun each rank scans a
    shard and rank 0 writes the same file one process would."""
    from cnntool.cli.dataset_scan import dataset_scan, finish
    from cnntool.io.npz import save_features
    from cnntool.tasks.features import nonfinite_message, spooled_features

    out = Path(out)
    with (
        dataset_scan(model, model_request, data, scan, files={"-o": out}) as session,
        spooled_features(session, layer, pooling, out.parent) as found,
    ):
        finish(session)
        if found is None:
            return  # not rank 0
        features, _, nonfinite = found
        console.info(save_features(out, features))
        if nonfinite:
            console.warn(
                nonfinite_message([session.dataset.paths[i] for i in nonfinite[:3]], len(nonfinite))
            )
