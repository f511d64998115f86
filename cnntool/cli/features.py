"""`cnntool features MODEL DATA --layer L -o FEATURES.npz`: a layer's features for a dataset.

Thin: parse -> scan session -> tasks.features.scan_features (shared with `cnntool embed MODEL
DATA`) -> .npz. torch is imported inside the function so that `--help` stays instant.
"""
from __future__ import annotations

from pathlib import Path

import click

from cnntool.cli import console
from cnntool.cli.options import data_options, model_options, output_options

POOLING_CHOICES = ["avg", "max", "flatten"]  # tasks.features.POOLINGS, without importing it

pooling_option = click.option(
    "--pooling", type=click.Choice(POOLING_CHOICES), default="avg", show_default=True,
    help="How a spatial map (C, H, W) becomes a vector: global average or max per channel "
         "(C values), or flatten (C·H·W values). Vector layers are kept as they are.")
layer_option = click.option(
    "--layer", default="penultimate", show_default=True, metavar="NAME",
    help="Layer path or alias (fc7, pool5, penultimate; `cnntool layers MODEL` lists them).")


@click.command("features", epilog="""Examples:

  cnntool features lenet5-mnist mnist-5k --layer relu3 -o mnist.npz

  cnntool features efficientnet_lite0 photos/ --layer _blocks.15 --pooling max -o photos.npz

  torchrun --nproc_per_node 2 -m cnntool features efficientnet_lite0 photos/ -o photos.npz

  cnntool features lenet5-mnist mnist-5k --layer relu3 -o f.npz && cnntool embed --features f.npz --plot map.png
""")
@click.argument("model")
@click.argument("data")
@layer_option
@pooling_option
@click.option("-o", "--out", required=True, metavar="NPZ", help="The .npz file to write.")
@model_options
@data_options
@output_options
def features_command(model, data, layer, pooling, out, model_request, scan):
    """A layer's features for every image of DATA, written to an .npz file.

    Arrays in the file: `features` (images × dims, float32), `paths`, `labels` (int, -1 when
    unknown; from class folders or the sample set), `label_names`, and `model`, `layer`,
    `pooling`. Rows are streamed to a scratch file beside the output as batches come, so a
    dataset never has to fit in memory. Unreadable images are skipped, counted and left out;
    images whose features are NaN or infinite are named in a warning. Under torchrun each rank
    scans a shard and rank 0 writes the same file one process would."""
    from cnntool.cli.session import dataset_scan, finish, tidy
    from cnntool.io.writers import atomic_path
    from cnntool.io.npz import write_npz
    from cnntool.tasks.features import FeatureSpool, nonfinite_message, scan_features

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tidy(out)
    with dataset_scan(model, model_request, data, scan) as session, \
            FeatureSpool(out.parent) as spool, FeatureSpool(out.parent) as merged:
        found = scan_features(session, layer, pooling, spool, merged)
        finish(session)
        if found is None:
            return  # not rank 0
        features, _, nonfinite = found
        with atomic_path(out) as temp, open(temp, "wb") as handle:
            write_npz(handle, features.features, features.paths, features.labels,
                      features.label_names, model=features.model, layer=features.layer,
                      pooling=pooling)
        console.info(f"wrote {out}: {len(features.paths)} images × {features.features.shape[1]} "
                     f"features of {session.model.name} {features.layer} ({pooling} pooling)")
        if nonfinite:
            paths = [session.dataset.paths[i] for i in nonfinite[:3]]
            console.warn(nonfinite_message(paths, len(nonfinite)))
