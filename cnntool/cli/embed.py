"""`cnntool embed`: a dataset's features mapped to 2-D (t-SNE or PCA), with pictures and figures.

Thin: features (from an .npz, or extracted here as `cnntool features` does) -> tasks.embed ->
records on stdout, PNGs and an optional summary file. stdout carries only the per-image
records, so that `cnntool embed ... | jq` works; everything for people goes to stderr.
torch, numpy-heavy libraries and matplotlib are imported inside the functions.
"""
from __future__ import annotations


import click

from cnntool.cli import console
from cnntool.cli.features import layer_option, pooling_option
from cnntool.cli.options import data_options, given, model_options, output_options


@click.command("embed", epilog="""Examples:

  cnntool features lenet5-mnist mnist-5k --layer relu3 -o f.npz && cnntool embed --features f.npz --plot map.png

  cnntool embed lenet5-mnist mnist-5k --layer relu3 --plot scatter.png --image-grid grid.png > coords.jsonl

  cnntool embed efficientnet_lite0 faces --method pca --format csv --summary summary.json

  cnntool embed --features photos.npz --engine sklearn --perplexity 50 --seed 1 --image-map map.png
""")
@click.argument("model", required=False)
@click.argument("data", required=False)
@click.option("--features", "features_file", metavar="NPZ",
              help="Embed the features in this file (from `cnntool features`) instead of MODEL DATA.")
@layer_option
@pooling_option
@click.option("--method", type=click.Choice(["tsne", "pca"]), default="tsne", show_default=True,
              help="t-SNE, or a quick linear map: the first two principal components.")
@click.option("--engine", type=click.Choice(["opentsne", "sklearn"]), default="opentsne",
              show_default=True,
              help="openTSNE (FFT-accelerated from 10k points) or scikit-learn's Barnes-Hut t-SNE.")
@click.option("--perplexity", type=click.FloatRange(1.0), default=30.0, show_default=True,
              help="Effective number of neighbours; lowered with a warning for small sets.")
@click.option("--exaggeration", type=click.FloatRange(1.0), default=12.0, show_default=True,
              help="Early exaggeration during the first 250 iterations.")
@click.option("--iterations", type=click.IntRange(0), default=500, show_default=True,
              help="Iterations after the 250 of early exaggeration.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Random seed of PCA and t-SNE: the same seed gives the same map.")
@click.option("--pca-dims", type=click.IntRange(0), default=50, show_default=True,
              help="PCA to this many dimensions before t-SNE (0: none).")
@click.option("--standardize/--no-standardize", default=True, show_default=True,
              help="Scale each feature to zero mean and unit variance first.")
@click.option("--n-jobs", type=int, default=None,
              help="Threads for t-SNE and its neighbour search; -1: every core "
                   "(default: every core from 5,000 images, one below).")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl",
              show_default=True, help="stdout format of the per-image records (path, label, x, y).")
@click.option("--plot", metavar="PNG", help="Scatter plot of the map, coloured by label.")
@click.option("--image-map", metavar="PNG", help="Thumbnails at their map positions (they may overlap).")
@click.option("--image-grid", metavar="PNG", help="Thumbnails snapped to a grid, one per cell.")
@click.option("--thumb", type=click.IntRange(8, 256), default=None,
              help="Thumbnail pixels (default: 16-64, so the picture stays within 4096 px a side).")
@click.option("--max-images", type=click.IntRange(1, 65536), default=10000, show_default=True,
              help="Image maps show a seeded random sample of at most this many images.")
@click.option("-o", "--out", metavar="NPZ", help="Also save coordinates, paths and labels as .npz.")
@click.option("--projector", metavar="DIR",
              help="Also write the features for TensorBoard's projector: tensors.tsv, "
                   "metadata.tsv (label, path), sprite.png, projector_config.pbtxt.")
@click.option("--summary", metavar="JSON", help="Write settings and quality figures to this JSON file.")
@click.option("--quality-sample", type=click.IntRange(0), default=5000, show_default=True,
              help="Measure the quality figures on at most this many points (0: skip them).")
@model_options
@data_options
@output_options
def embed_command(model, data, features_file, layer, pooling, method, engine, perplexity,
                  exaggeration, iterations, seed, pca_dims, standardize, n_jobs, fmt, plot,
                  image_map, image_grid, thumb, max_images, out, projector, summary,
                  quality_sample, model_request, scan):
    """Map a dataset's features to 2-D: standardize, PCA to 50 dimensions, t-SNE.

    Features come from `--features FILE.npz` (written by `cnntool features`) or are extracted
    here from MODEL DATA at --layer. One record per image on stdout: path, label, x, y.
    Quality figures on stderr (and in --summary): trustworthiness, and the 5-nearest-neighbour
    accuracy of the labels (leave-one-out) in the 2-D map and in the original feature space.
    Under torchrun the extraction is sharded and rank 0 embeds and writes."""
    from cnntool.cli.session import tidy
    from cnntool.tasks.embed import EmbedSettings

    if features_file and (model or data):
        raise click.UsageError("give either --features FILE or MODEL DATA, not both")
    if features_file and (given("layer") or given("pooling")):
        raise click.UsageError("--layer and --pooling choose features to extract from MODEL "
                               "DATA; a --features file already holds them")
    if not features_file and not (model and data):
        raise click.UsageError("give MODEL DATA (and --layer), or --features FILE")
    if summary == "-":
        raise click.UsageError("--summary needs a file: stdout carries the per-image records")
    settings = EmbedSettings(method=method, engine=engine, perplexity=perplexity,
                             exaggeration=exaggeration, iterations=iterations, seed=seed,
                             pca_dims=pca_dims, standardize=standardize, n_jobs=n_jobs)
    outputs = dict(fmt=fmt, plot=plot, image_map=image_map, image_grid=image_grid, thumb=thumb,
                   max_images=max_images, out=out, projector=projector, summary=summary,
                   quality_sample=quality_sample)
    tidy(plot, image_map, image_grid, out, summary)
    if features_file:
        from cnntool.core.data import path_loader
        from cnntool.io.npz import read_npz

        feature_set = read_npz(features_file)
        _embed_and_write(feature_set, settings, path_loader(feature_set.paths),
                         source=str(features_file), **outputs)
        return
    _extract_then_embed(model, model_request, data, layer, pooling, scan, settings, outputs)


def _extract_then_embed(model, model_request, data, layer, pooling, scan, settings, outputs) -> None:
    """Features of MODEL DATA into a scratch file (sharded under torchrun), then embed on rank 0."""
    import tempfile

    from cnntool.cli.session import dataset_scan, finish
    from cnntool.tasks.features import FeatureSpool, scan_features

    with dataset_scan(model, model_request, data, scan) as session, \
            tempfile.TemporaryDirectory(prefix="cnntool-embed-") as scratch, \
            FeatureSpool(scratch) as spool, FeatureSpool(scratch) as merged:
        found = scan_features(session, layer, pooling, spool, merged)
        finish(session)
        if found is None:
            return  # not rank 0
        feature_set, indices, _ = found  # NaN/inf rows: _embed_and_write names them and stops
        dataset = session.dataset
        _embed_and_write(feature_set, settings, lambda row: dataset.load(indices[row]),
                         source=f"{session.model.name} {feature_set.layer} of {dataset.name}",
                         **outputs)


def _embed_and_write(feature_set, settings, load_image, *, source, fmt, plot, image_map,
                     image_grid, thumb, max_images, out, projector, summary, quality_sample) -> None:
    import numpy as np

    from cnntool.io.image_map import save_image_maps, save_scatter
    from cnntool.io.npz import write_coordinates
    from cnntool.io.records import write_records
    from cnntool.io.writers import atomic_path, write_json
    from cnntool.tasks.embed import embed, map_title, quality, summary_record
    from cnntool.tasks.features import check_finite

    features = np.asarray(feature_set.features, dtype=np.float32)
    check_finite(features, feature_set.paths)
    if settings.method == "tsne" and len(features) >= 2000:  # a minute or more: say it started
        console.info(f"t-SNE ({settings.engine}) of {len(features)} images × {features.shape[1]} features …")
    result = embed(features, settings)
    for warning in result.warnings:
        console.warn(warning)
    console.info(result.describe(*features.shape))
    write_records(({"path": feature_set.paths[row], "label": feature_set.label_name(row),
                    "x": round(x, 4), "y": round(y, 4)}
                   for row, (x, y) in enumerate(result.coords.tolist())),
                  fmt, columns=["path", "label", "x", "y"])
    figures = quality(features, result.coords, feature_set.labels, sample=quality_sample,
                      seed=settings.seed) if quality_sample else None
    if figures:
        console.info(figures.describe())
    if plot:
        save_scatter(plot, result.coords, feature_set.labels, feature_set.label_names,
                     title=map_title(feature_set, result), seed=settings.seed)
    if image_map or image_grid:
        shown, failed = save_image_maps(result.coords, load_image, image_map=image_map,
                                        image_grid=image_grid, thumb=thumb,
                                        max_images=max_images, seed=settings.seed)
        if shown < len(features):
            console.info(f"image maps show a random {shown} of the {len(features)} images (--max-images)")
        if failed:
            console.warn(f"{len(set(failed))} image(s) could not be read for the image maps and "
                         f"are shown gray, e.g. {failed[0]}")
    if out:
        with atomic_path(out) as temp, open(temp, "wb") as handle:
            write_coordinates(handle, result.coords, feature_set, method=result.method,
                              engine=result.engine, perplexity=result.perplexity, seed=settings.seed)
    if summary:
        write_json(summary, summary_record(feature_set, result, settings, figures, source))
    if projector:
        _projector(projector, features, feature_set, load_image)
    written = [str(p) for p in (plot, image_map, image_grid, out, projector, summary) if p]
    if written:
        console.info("wrote " + ", ".join(written))


def _projector(folder, features, feature_set, load_image) -> None:
    """TensorBoard projector files: the features themselves (not the 2-D map), with labels,
    paths and a sprite of thumbnails (an unreadable image is a gray cell)."""
    from cnntool.io.image_map import LazyImages, tolerant
    from cnntool.io.projector import write_projector

    failed: list[str] = []
    rows = [(feature_set.label_name(row), feature_set.paths[row]) for row in range(len(features))]
    export = write_projector(folder, features, rows, ["label", "path"],
                             LazyImages(tolerant(load_image, failed), len(features)))
    for warning in export.warnings:
        console.warn(warning)
