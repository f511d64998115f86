"""`cnntool features MODEL DATA --layer L -o FEATURES.npz`: a layer's features for a dataset.

Thin: parse -> core (model, data, shards) -> tasks.features (extract, assemble) -> .npz.
`scan_features` is shared with `cnntool embed MODEL DATA`. torch is imported inside the
functions so that `--help` stays instant.
"""
from __future__ import annotations

from pathlib import Path

import click

from cnntool.cli import console
from cnntool.cli.options import data_options, load_cli_model, model_options, output_options

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
def features_command(model, data, layer, pooling, out, arch, weights, trust_code, device,
                     batch_size, workers):
    """A layer's features for every image of DATA, written to an .npz file.

    Arrays in the file: `features` (images × dims, float32), `paths`, `labels` (int, -1 when
    unknown; from class folders or the sample set), `label_names`, and `model`, `layer`,
    `pooling`. Rows are streamed to a scratch file beside the output as batches come, so a
    dataset never has to fit in memory. Unreadable images are skipped, counted and left out;
    images whose features are NaN or infinite are named in a warning. Under torchrun each rank
    scans a shard and rank 0 writes the same file one process would."""
    from cnntool.core.data import open_data
    from cnntool.core.sharding import distributed
    from cnntool.io.writers import atomic_path
    from cnntool.tasks.features import FeatureSpool, nonfinite_message, write_npz

    loaded = load_cli_model(model, arch=arch, weights=weights, device=device, trust_code=trust_code)
    dataset = open_data(data)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with distributed(loaded.device) as shard:
        if not shard.is_main:
            console.set_quiet(True)
        with FeatureSpool(out.parent) as spool, FeatureSpool(out.parent) as merged:
            found = scan_features(loaded, dataset, layer, pooling, shard, spool, merged,
                                  batch_size=batch_size, workers=workers)
            if found is None:
                return  # not rank 0
            features, _, nonfinite = found
            with atomic_path(out) as temp, open(temp, "wb") as handle:
                write_npz(handle, features.features, features.paths, features.labels,
                          features.label_names, model=features.model, layer=features.layer,
                          pooling=pooling)
            console.info(f"wrote {out}: {len(features.paths)} images × {features.features.shape[1]} "
                         f"features of {loaded.name} {features.layer} ({pooling} pooling)")
            if nonfinite:
                paths = [dataset.paths[i] for i in nonfinite[:3]]
                console.warn(nonfinite_message(paths, len(nonfinite)))


def scan_features(loaded, dataset, layer: str, pooling: str, shard, spool, merged, *,
                  batch_size: int, workers: int):
    """Extract the features of this shard into `spool` and assemble every rank's on rank 0.

    Returns, on rank 0, (the FeatureSet of the readable images in dataset order, the dataset
    index of each of its rows, the dataset indices of the rows with NaN/inf features); None on
    the other ranks. Warns once about
    unreadable images (rank 0). Raises DataError when no image at all could be read.
    """
    from cnntool.core.layers import resolve_layer
    from cnntool.core.sharding import merged_skipped, shard_stream
    from cnntool.errors import DataError
    from cnntool.tasks.features import FeatureSet, assemble, extract, integer_labels

    module = loaded.module.to(shard.device)
    name = resolve_layer(module, layer)[0]
    stream = shard_stream(dataset, loaded.preprocessing, shard, batch_size=batch_size,
                          workers=workers)
    with console.progress(f"features {name}", total=stream.total) as advance:
        extract(module, name, stream, spool, pooling=pooling, device=shard.device,
                on_batch=lambda batch: advance(len(batch.indices)))
    skipped = merged_skipped(stream.skipped, shard)
    result = assemble(spool, shard, merged)
    if not shard.is_main:
        return None
    if skipped:
        console.warn(f"skipped {len(skipped)} unreadable image(s), e.g. {skipped[0][0]} "
                     f"({skipped[0][1]})")
    if not len(result):
        raise DataError(f"none of the {len(dataset)} images in {dataset.name} could be read")
    labels, names = integer_labels(dataset.labels, dataset.label_names)
    features = FeatureSet(features=result.rows(), paths=[dataset.paths[i] for i in result.indices],
                          labels=labels[result.indices], label_names=names, model=loaded.name,
                          layer=name, pooling=pooling)
    return features, list(result.indices), list(result.nonfinite)
