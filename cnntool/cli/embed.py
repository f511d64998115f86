"""`cnntool embed`: features (an .npz, or extracted as `cnntool features` does) -> tasks.embed ->
records on stdout (only they: `cnntool embed ... | jq` works), io.embedding's files."""

from __future__ import annotations

import contextlib
import os

import click

from cnntool.cli import console
from cnntool.cli.features import layer_option, pooling_option
from cnntool.cli.options import collect, format_option, given, shared_options
from cnntool.io.embedding import MapOutputs
from cnntool.tasks.embed import EmbedSettings


@click.command(
    "embed",
    epilog="""Examples:

\b
  cnntool features lenet5-mnist mnist-5k --layer relu3 -o f.npz && cnntool embed \\
      --features f.npz --plot map.png
  cnntool embed lenet5-mnist mnist-5k --layer relu3 --plot scatter.png \\
      --image-grid grid.png > coords.jsonl
  cnntool embed efficientnet_lite0 faces --method pca --format csv --summary summary.json
  cnntool embed --features photos.npz --engine sklearn --perplexity 50 --seed 1 --image-map map.png
""",
)
@click.argument("model", required=False)
@click.argument("data", required=False)
@click.option(
    "--features",
    "features_file",
    metavar="NPZ",
    help="Embed the features in this file (from `cnntool features`) instead of MODEL DATA.",
)
@layer_option
@pooling_option
@click.option(
    "--method",
    type=click.Choice(["tsne", "pca"]),
    default="tsne",
    show_default=True,
    help="t-SNE, or a quick linear map: the first two principal components.",
)
@click.option(
    "--engine",
    type=click.Choice(["opentsne", "sklearn"]),
    default="opentsne",
    show_default=True,
    help="openTSNE (FFT-accelerated from 10k points) or scikit-learn's Barnes-Hut t-SNE.",
)
@click.option(
    "--perplexity",
    type=click.FloatRange(1.0),
    default=30.0,
    show_default=True,
    help="Effective number of neighbours; lowered with a warning for small sets.",
)
@click.option(
    "--exaggeration",
    type=click.FloatRange(1.0),
    default=12.0,
    show_default=True,
    help="Early exaggeration during the first 250 iterations.",
)
@click.option(
    "--iterations",
    type=click.IntRange(0),
    default=500,
    show_default=True,
    help="Iterations after the 250 of early exaggeration.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Random seed of PCA and t-SNE: the same seed gives the same map.",
)
@click.option(
    "--pca-dims",
    type=click.IntRange(0),
    default=50,
    show_default=True,
    help="PCA to this many dimensions before t-SNE (0: none).",
)
@click.option(
    "--standardize/--no-standardize",
    default=True,
    show_default=True,
    help="Scale each feature to zero mean and unit variance first.",
)
@click.option(
    "--n-jobs",
    type=int,
    default=None,
    help="Threads for t-SNE and its neighbour search; -1: every core (default: every core from "
    "5,000 images, one below).",
)
@format_option(records="stdout format of the per-image records (path, label, x, y).")
@click.option("--plot", metavar="PNG", help="Scatter plot of the map, coloured by label.")
@click.option(
    "--image-map", metavar="PNG", help="Thumbnails at their map positions (they may overlap)."
)
@click.option("--image-grid", metavar="PNG", help="Thumbnails snapped to a grid, one per cell.")
@click.option(
    "--thumb",
    type=click.IntRange(8, 256),
    default=None,
    help="Thumbnail pixels (default: 16-64, so the picture stays within 4096 px a side).",
)
@click.option(
    "--max-images",
    type=click.IntRange(1, 65536),
    default=10000,
    show_default=True,
    help="Image maps show a seeded random sample of at most this many images.",
)
@click.option("-o", "--out", metavar="NPZ", help="Also save coordinates, paths and labels as .npz.")
@click.option(
    "--projector",
    metavar="DIR",
    help="Also write the features for TensorBoard's projector: tensors.tsv, "
    "metadata.tsv (label, path), sprite.png, projector_config.pbtxt.",
)
@click.option(
    "--summary", metavar="JSON", help="Write settings and quality figures to this JSON file."
)
@click.option(
    "--quality-sample",
    type=click.IntRange(0),
    default=5000,
    show_default=True,
    help="Measure the quality figures on at most this many points (0: skip them).",
)
@shared_options()
@collect(EmbedSettings, "settings")
@collect(MapOutputs, "outputs")
def embed_command(
    model,
    data,
    features_file,
    layer,
    pooling,
    fmt,
    quality_sample,
    settings,
    outputs,
    model_request,
    scan,
):
    """Map a dataset's features to 2-D: standardize, PCA to 50 dimensions, t-SNE.

    Features come from `--features FILE.npz` (from `cnntool features`) or are extracted here from
    MODEL DATA at --layer. One record per image on stdout: path, label, x, y. Quality figures on
    stderr (and in --summary): trustworthiness, and the leave-one-out 5-NN accuracy of the labels
    in the map and in feature space. Under torchrun the extraction is sharded; rank 0 embeds."""
    from cnntool.io.embedding import MAP_COLUMNS, map_records
    from cnntool.io.records import write_records
    from cnntool.tasks.embed import embed_features

    if features_file and (model or data):
        raise click.UsageError("give either --features FILE or MODEL DATA, not both")
    if features_file and (given("layer") or given("pooling")):
        raise click.UsageError(
            "--layer and --pooling choose features to extract from MODEL "
            "DATA; a --features file already holds them"
        )
    if not features_file and not (model and data):
        raise click.UsageError("give MODEL DATA (and --layer), or --features FILE")
    if outputs.summary == "-":
        raise click.UsageError("--summary needs a file: stdout carries the per-image records")
    written = dict(
        files={
            "--plot": outputs.plot,
            "--image-map": outputs.image_map,
            "--image-grid": outputs.image_grid,
            "-o": outputs.out,
            "--summary": outputs.summary,
        },
        folders={"--projector": outputs.projector},
    )
    with _features(
        features_file, model, model_request, data, layer, pooling, scan, written
    ) as found:
        if found is None:
            return
        feature_set, load_image, source = found  # NaN/inf rows: embed_features names them and stops
        result, figures = embed_features(
            feature_set, settings, quality_sample=quality_sample, announce=console.info
        )
        for warning in result.warnings:
            console.warn(warning)
        console.info(result.describe(*feature_set.features.shape))
        write_records(map_records(feature_set, result.coords), fmt, columns=MAP_COLUMNS)
        if figures:
            console.info(figures.describe())
        outputs.write(
            feature_set,
            result,
            settings,
            figures,
            load_image,
            source=source,
            info=console.info,
            warn=console.warn,
        )


@contextlib.contextmanager
def _features(features_file, model, model_request, data, layer, pooling, scan, written):
    """(the FeatureSet, row -> its image, where it comes from) on rank 0, None on the others:
    read from --features, or extracted from MODEL DATA (sharded under torchrun). The outputs
    `written` (dataset_scan's files= and folders=) are checked against the inputs first."""
    if features_file:
        from cnntool.cli.dataset_scan import guard
        from cnntool.io.npz import read_feature_file
        from cnntool.io.outputs import InputFiles

        found = read_feature_file(features_file)
        paths = [p for p in found[0].paths if os.path.isfile(p)]  # not mnist-5k/00001 keys
        guard(InputFiles(files=[features_file, *paths]), **written)
        yield found
        return
    from cnntool.cli.dataset_scan import dataset_scan, finish
    from cnntool.tasks.features import spooled_features

    with (
        dataset_scan(model, model_request, data, scan, **written) as session,
        spooled_features(session, layer, pooling) as found,
    ):
        finish(session)
        if found is None:
            yield None  # not rank 0
            return
        feature_set, indices, _ = found
        yield (
            feature_set,
            lambda row: session.dataset.load(indices[row]),
            f"{session.model.name} {feature_set.layer} of {session.dataset.name}",
        )
