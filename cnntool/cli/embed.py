"""`cnntool embed`: a dataset's features mapped to 2-D (t-SNE or PCA), with pictures and figures.

Thin: features (from an .npz, or extracted here as `cnntool features` does) -> tasks.embed ->
records on stdout, PNGs and an optional summary file. stdout carries only the per-image
records, so that `cnntool embed ... | jq` works; everything for people goes to stderr.
torch, numpy-heavy libraries and matplotlib are imported inside the functions.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from cnntool.cli import console
from cnntool.cli.features import layer_option, pooling_option
from cnntool.cli.options import data_options, load_cli_model, model_options, output_options
from cnntool.errors import CnnToolError


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
@click.option("--summary", metavar="JSON", help="Write settings and quality figures to this JSON file.")
@click.option("--quality-sample", type=click.IntRange(0), default=5000, show_default=True,
              help="Measure the quality figures on at most this many points (0: skip them).")
@model_options
@data_options
@output_options
def embed_command(model, data, features_file, layer, pooling, method, engine, perplexity,
                  exaggeration, iterations, seed, pca_dims, standardize, n_jobs, fmt, plot,
                  image_map, image_grid, thumb, max_images, out, summary, quality_sample,
                  arch, weights, trust_code, device, batch_size, workers):
    """Map a dataset's features to 2-D: standardize, PCA to 50 dimensions, t-SNE.

    Features come from `--features FILE.npz` (written by `cnntool features`) or are extracted
    here from MODEL DATA at --layer. One record per image on stdout: path, label, x, y.
    Quality figures on stderr (and in --summary): trustworthiness, and the 5-nearest-neighbour
    accuracy of the labels (leave-one-out) in the 2-D map and in the original feature space.
    Under torchrun the extraction is sharded and rank 0 embeds and writes."""
    from cnntool.tasks.embed import EmbedSettings

    if features_file and (model or data):
        raise click.UsageError("give either --features FILE or MODEL DATA, not both")
    if not features_file and not (model and data):
        raise click.UsageError("give MODEL DATA (and --layer), or --features FILE")
    if summary == "-":
        raise click.UsageError("--summary needs a file: stdout carries the per-image records")
    settings = EmbedSettings(method=method, engine=engine, perplexity=perplexity,
                             exaggeration=exaggeration, iterations=iterations, seed=seed,
                             pca_dims=pca_dims, standardize=standardize, n_jobs=n_jobs)
    outputs = dict(fmt=fmt, plot=plot, image_map=image_map, image_grid=image_grid, thumb=thumb,
                   max_images=max_images, out=out, summary=summary, quality_sample=quality_sample)
    if features_file:
        from cnntool.tasks.features import read_npz

        feature_set = read_npz(features_file)
        _embed_and_write(feature_set, settings, _loader_for_paths(feature_set.paths),
                         source=str(features_file), **outputs)
        return
    _extract_then_embed(model, data, layer, pooling, settings, outputs, arch=arch, weights=weights,
                        trust_code=trust_code, device=device, batch_size=batch_size,
                        workers=workers)


def _extract_then_embed(model, data, layer, pooling, settings, outputs, *, arch, weights,
                        trust_code, device, batch_size, workers) -> None:
    """Features of MODEL DATA into a scratch file (sharded under torchrun), then embed on rank 0."""
    import tempfile

    from cnntool.cli.features import scan_features
    from cnntool.core.data import open_data
    from cnntool.core.sharding import distributed
    from cnntool.tasks.features import FeatureSpool

    loaded = load_cli_model(model, arch=arch, weights=weights, device=device, trust_code=trust_code)
    dataset = open_data(data)
    with distributed(loaded.device) as shard:
        if not shard.is_main:
            console.set_quiet(True)
        with tempfile.TemporaryDirectory(prefix="cnntool-embed-") as scratch, \
                FeatureSpool(scratch) as spool, FeatureSpool(scratch) as merged:
            found = scan_features(loaded, dataset, layer, pooling, shard, spool, merged,
                                  batch_size=batch_size, workers=workers)
            if found is None:
                return  # not rank 0
            feature_set, indices, _ = found  # NaN/inf rows: _embed_and_write names them and stops
            _embed_and_write(feature_set, settings, lambda row: dataset.load(indices[row]),
                             source=f"{loaded.name} {feature_set.layer} of {dataset.name}", **outputs)


def _embed_and_write(feature_set, settings, load_image, *, source, fmt, plot, image_map,
                     image_grid, thumb, max_images, out, summary, quality_sample) -> None:
    import numpy as np

    from cnntool.tasks.embed import embed, quality
    from cnntool.tasks.features import check_finite

    features = np.asarray(feature_set.features, dtype=np.float32)
    count, dims = features.shape
    check_finite(features, feature_set.paths)
    if settings.method == "tsne" and count >= 2000:
        console.info(f"t-SNE ({settings.engine}) of {count} images × {dims} features …")
    result = embed(features, settings)
    for warning in result.warnings:
        console.warn(warning)
    what = ("PCA" if result.method == "pca" else
            f"t-SNE ({result.engine}, perplexity {result.perplexity:.3g}"
            + (f", after PCA to {result.pca_dims}" if result.pca_dims else "") + ")")
    console.info(f"{what} of {count} images × {dims} features in {result.seconds:.1f} s")
    _write_records(feature_set, result.coords, fmt)
    figures = None
    if quality_sample:
        figures = quality(features, result.coords, feature_set.labels, sample=quality_sample,
                          seed=settings.seed)
        _report_quality(figures)
    title = _title(feature_set, result)
    if plot:
        from cnntool.io.image_map import save_scatter

        save_scatter(plot, result.coords, feature_set.labels, feature_set.label_names,
                     title=title, seed=settings.seed)
        console.info(f"wrote {plot}")
    if image_map or image_grid:
        _write_image_maps(result.coords, load_image, image_map, image_grid, thumb, max_images,
                          settings.seed)
    if out:
        _write_coordinates(out, feature_set, result, settings)
    if summary:
        _write_summary(summary, feature_set, result, settings, figures, source)


def _write_records(feature_set, coords, fmt) -> None:
    from cnntool.io.writers import RecordWriter

    writer = RecordWriter(sys.stdout, fmt, columns=["path", "label", "x", "y"])
    for row, (x, y) in enumerate(coords.tolist()):
        writer.write({"path": feature_set.paths[row], "label": feature_set.label_name(row),
                      "x": round(x, 4), "y": round(y, 4)})


def _report_quality(figures) -> None:
    parts = []
    if figures.trustworthiness is not None:
        parts.append(f"trustworthiness (k={figures.neighbours}) {figures.trustworthiness:.3f}")
    if figures.knn_accuracy_2d is not None:
        parts.append(f"{figures.classes}-class 5-NN accuracy (leave-one-out): 2-D map "
                     f"{figures.knn_accuracy_2d:.3f}, features {figures.knn_accuracy_features:.3f}")
    elif figures.classes < 2:
        parts.append("no k-NN accuracy: fewer than two labelled classes")
    console.info("quality: " + "; ".join(parts) + "".join(f" ({n})" for n in figures.notes))


def _title(feature_set, result) -> str:
    where = " ".join(p for p in (feature_set.model, feature_set.layer) if p)
    how = "PCA" if result.method == "pca" else f"t-SNE, perplexity {result.perplexity:.3g}"
    return f"{where + ': ' if where else ''}{how}, {len(result.coords)} images"


def _write_image_maps(coords, load_image, image_map, image_grid, thumb, max_images, seed) -> None:
    import numpy as np

    from cnntool.io.image_map import save_image_grid, save_image_map

    rows = np.arange(len(coords))
    if len(rows) > max_images:
        rows = np.sort(np.random.default_rng(seed).choice(len(rows), size=max_images, replace=False))
        console.info(f"image maps show a random {max_images} of the {len(coords)} images (--max-images)")
    if thumb:
        from cnntool.io.image_map import grid_shape

        side = max(grid_shape(len(rows))) * thumb
        if side > 4 * 4096:
            raise CnnToolError(f"{len(rows)} thumbnails of {thumb} px make a picture {side} px wide; "
                               "use a smaller --thumb or --max-images")
    failed: list[str] = []
    load = _tolerant(load_image, failed)
    pictures = [(image_map, save_image_map), (image_grid, save_image_grid)]
    for path, save in pictures:
        if path:
            save(path, coords[rows], lambda i: load(int(rows[i])), thumb=thumb)
            console.info(f"wrote {path}")
    if failed:
        console.warn(f"{len(set(failed))} image(s) could not be read for the image maps and are "
                     f"shown gray, e.g. {failed[0]}")


def _tolerant(load_image, failed: list):
    """A loader that never stops a map for one unreadable image: a gray tile instead, noted."""
    from PIL import Image

    def load(row: int):
        try:
            return load_image(row)
        except CnnToolError as exc:
            failed.append(str(exc))
            return Image.new("RGB", (8, 8), (128, 128, 128))

    return load


def _loader_for_paths(paths):
    """Thumbnails for a features file: image files by path, and sample-set items by their
    `set/NNNNN` key (mnist-5k and faces are arrays, not files)."""
    from cnntool.core.images import load_image
    from cnntool.core.samples import SAMPLE_SETS

    opened: dict = {}

    def load(row: int):
        path = paths[row]
        prefix = path.split("/", 1)[0]
        if prefix in SAMPLE_SETS and not Path(path).exists():
            if prefix not in opened:
                from cnntool.core.data import open_data

                sample_set = open_data(prefix)
                opened[prefix] = (sample_set, {p: i for i, p in enumerate(sample_set.paths)})
            sample_set, index = opened[prefix]
            if path in index:
                return sample_set.load(index[path])
        return load_image(path)

    return load


def _write_coordinates(out, feature_set, result, settings) -> None:
    import numpy as np

    from cnntool.io.writers import atomic_path

    with atomic_path(out) as temp, open(temp, "wb") as handle:
        np.savez(handle, coords=result.coords, paths=np.array(feature_set.paths, dtype=str),
                 labels=np.asarray(feature_set.labels, dtype=np.int64),
                 label_names=np.array(feature_set.label_names, dtype=str),
                 method=np.array(result.method), engine=np.array(result.engine or ""),
                 perplexity=np.array(result.perplexity or 0.0), seed=np.array(settings.seed))
    console.info(f"wrote {out}")


def _write_summary(path, feature_set, result, settings, figures, source) -> None:
    import dataclasses
    import json

    from cnntool.io.writers import _plain, open_output

    record = {
        "source": source, "model": feature_set.model or None, "layer": feature_set.layer or None,
        "pooling": feature_set.pooling or None, "images": len(result.coords),
        "dims": int(feature_set.features.shape[1]), "method": result.method,
        "engine": result.engine, "perplexity": result.perplexity,
        "perplexity_requested": settings.perplexity if result.method == "tsne" else None,
        "exaggeration": settings.exaggeration, "iterations": settings.iterations,
        "seed": settings.seed, "pca_dims": result.pca_dims, "standardize": settings.standardize,
        "seconds": round(result.seconds, 3), "warnings": list(result.warnings),
        "quality": dataclasses.asdict(figures) if figures else None,
    }
    with open_output(path) as handle:
        handle.write(json.dumps(_plain(record), indent=2) + "\n")
    console.info(f"wrote {path}")
