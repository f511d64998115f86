"""What `cnntool embed` writes besides its records: the scatter plot, the image map and grid,
the coordinates .npz, the summary JSON and TensorBoard projector files (`MapOutputs`), and the
per-image records themselves (`map_records`: path, label, x, y)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

MAP_COLUMNS = ["path", "label", "x", "y"]


def map_records(feature_set, coords: np.ndarray) -> Iterator[dict]:
    """One record per image: its path, label name and map position (4 decimals)."""
    for row, (x, y) in enumerate(coords.tolist()):
        yield {
            "path": feature_set.paths[row],
            "label": feature_set.label_name(row),
            "x": round(x, 4),
            "y": round(y, 4),
        }


@dataclass(frozen=True)
class MapOutputs:
    """The files asked for (None: not asked for): `plot` (scatter PNG), `image_map` and
    `image_grid` (thumbnail PNGs, `thumb` px, at most `max_images`), `out` (coordinates .npz),
    `projector` (a folder), `summary` (JSON)."""

    plot: str | None = None
    image_map: str | None = None
    image_grid: str | None = None
    thumb: int | None = None
    max_images: int = 10_000
    out: str | None = None
    projector: str | None = None
    summary: str | None = None

    def write(
        self,
        feature_set,
        result,
        settings,
        figures,
        load_image: Callable,
        *,
        source: str,
        info: Callable[[str], None],
        warn: Callable[[str], None],
    ) -> list[str]:
        """Write them for the map `result` (tasks.embed.Embedding) of `feature_set`, saying what
        happened through `info` and `warn`; the paths written."""
        features = feature_set.features
        from cnntool.io.image_map import save_image_maps, save_scatter
        from cnntool.io.writers import write_json

        if self.plot:
            save_scatter(
                self.plot,
                result.coords,
                feature_set.labels,
                feature_set.label_names,
                title=map_title(feature_set, result),
                seed=settings.seed,
            )
        if self.image_map or self.image_grid:
            shown, failed = save_image_maps(
                result.coords,
                load_image,
                image_map=self.image_map,
                image_grid=self.image_grid,
                thumb=self.thumb,
                max_images=self.max_images,
                seed=settings.seed,
            )
            if shown < len(features):
                info(
                    f"image maps show a random {shown} of the {len(features)} images (--max-images)"
                )
            if failed:
                warn(
                    f"{len(set(failed))} image(s) could not be read for the image maps and "
                    f"are shown gray, e.g. {failed[0]}"
                )
        if self.out:
            save_coordinates(self.out, result, feature_set, seed=settings.seed)
        if self.summary:
            write_json(self.summary, summary_record(feature_set, result, settings, figures, source))
        if self.projector:
            for warning in write_feature_projector(
                self.projector, features, feature_set, load_image
            ):
                warn(warning)
        written = [
            str(p)
            for p in (
                self.plot,
                self.image_map,
                self.image_grid,
                self.out,
                self.projector,
                self.summary,
            )
            if p
        ]
        if written:
            info("wrote " + ", ".join(written))
        return written


def save_coordinates(path, result, feature_set, *, seed: int) -> None:
    """The map's coordinates with the paths and labels of its features, as an .npz (atomic)."""
    from cnntool.io.npz import write_coordinates
    from cnntool.io.writers import atomic_path

    with atomic_path(path) as temp, open(temp, "wb") as handle:
        write_coordinates(
            handle,
            result.coords,
            feature_set,
            method=result.method,
            engine=result.engine,
            perplexity=result.perplexity,
            seed=seed,
        )


def write_feature_projector(
    folder, features: np.ndarray, feature_set, load_image
) -> tuple[str, ...]:
    """TensorBoard projector files: the features themselves (not the 2-D map), with labels,
    paths and a sprite of thumbnails (an unreadable image is a gray cell); the warnings."""
    from cnntool.io.image_map import LazyImages, tolerant
    from cnntool.io.projector import write_projector

    failed: list[str] = []
    rows = [(feature_set.label_name(row), feature_set.paths[row]) for row in range(len(features))]
    return write_projector(
        folder,
        features,
        rows,
        ["label", "path"],
        LazyImages(tolerant(load_image, failed), len(features)),
    ).warnings


def summary_record(feature_set, result, settings, figures, source: str) -> dict:
    """The settings, timing and quality figures of one map (`cnntool embed --summary`)."""
    import dataclasses

    return {
        "source": source,
        "model": feature_set.model or None,
        "layer": feature_set.layer or None,
        "pooling": feature_set.pooling or None,
        "images": len(result.coords),
        "dims": int(feature_set.features.shape[1]),
        "method": result.method,
        "engine": result.engine,
        "perplexity": result.perplexity,
        "perplexity_requested": settings.perplexity if result.method == "tsne" else None,
        "exaggeration": settings.exaggeration,
        "iterations": settings.iterations,
        "seed": settings.seed,
        "pca_dims": result.pca_dims,
        "standardize": settings.standardize,
        "seconds": round(result.seconds, 3),
        "warnings": list(result.warnings),
        "quality": dataclasses.asdict(figures) if figures else None,
    }


def map_title(feature_set, result) -> str:
    """'lenet5-mnist relu3: t-SNE, perplexity 30, 5000 images'."""
    where = " ".join(p for p in (feature_set.model, feature_set.layer) if p)
    how = "PCA" if result.method == "pca" else f"t-SNE, perplexity {result.perplexity:.3g}"
    return f"{where + ': ' if where else ''}{how}, {len(result.coords)} images"
