"""Write a microscope site from the microscope's views (tasks.microscope): the images first,
under the names io/site/layout.py gives them, then the records and pages (io/site).

`MicroscopeSite` is fed a layer at a time (`add_layer`), so only one layer's pictures are held;
`finish` writes index.html, the layer and unit pages, the map and the attack page. Images of the
dataset are re-read from DATA for the crops (the scan keeps boxes, not pixels); one that cannot
be read any more is left out and counted in `lost`.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from cnntool.errors import CnnToolError
from cnntool.io.figures import perturbation_pixels, pixels_to_image
from cnntool.io.grids import side_by_side
from cnntool.io.image_map import LazyImages, tolerant
from cnntool.io.layer_grids import filter_sheet
from cnntool.io.overlays import projection_image
from cnntool.io.site import layout
from cnntool.io.site.images import (
    PATCH_MAX_SIDE,
    PATCH_MIN_SIDE,
    atlas_slot,
    atlas_thumb_size,
    fit,
    save_jpeg,
    save_patch,
    save_source,
    write_atlases,
)
from cnntool.io.site.model import (
    Attack,
    Correlated,
    DataCard,
    Embedding,
    Finding,
    Histogram,
    LayerPage,
    LayerSummary,
    ModelCard,
    Patch,
    Point,
    Site,
    Triptych,
    Unit,
    UnitStats,
    Vote,
)
from cnntool.io.site.write import write_site
from cnntool.io.synthesized import stretched
from cnntool.io.writers import atomic_path

VISUALIZATION_SIDE = 160  # feature visualizations are shown at least this large
PREVIEWS = 6  # top patches in a layer's row of the index
_OPEN_IMAGES = 32  # originals kept open while a layer's crops are cut


class MicroscopeSite:
    """A site being written into `folder` for `model` (a core LoadedModel) over `dataset`."""

    def __init__(self, folder: str | Path, model, dataset):
        self.folder = Path(folder)
        self.model, self.dataset = model, dataset
        self.pages: list[LayerPage] = []
        self.summaries: list[LayerSummary] = []
        self.sources: dict[int, tuple[str, tuple[int, int]]] = {}  # dataset index -> (path, size)
        self.lost: list[str] = []
        self._open: OrderedDict[int, Image.Image | None] = OrderedDict()

    # ---- one layer at a time -------------------------------------------------------------------

    def add_layer(
        self,
        view,
        *,
        project: Callable[[Sequence], list] | None = None,
        visualizations: Sequence[np.ndarray] | None = None,
        recipe: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> LayerPage:
        """The layer's images and records. `project(hits)` gives each hit's raw projection (or
        None); `visualizations` are the units' feature visualizations in the order of
        `view.units` (tasks.microscope.pictures.Visualization, checked, or bare [0, 1] pixels),
        none drawn for a dead unit, and `recipe` how they were made (shown on the pages);
        `progress(1)` is called after each unit."""
        name = view.name
        units = []
        for position, unit in enumerate(view.units):
            projections = (
                project(unit.hits) if project is not None and unit.hits else [None] * len(unit.hits)
            )
            patches = [
                p
                for p in (
                    self._patch(name, unit.index, rank, hit, crop, raw)
                    for rank, (hit, crop, raw) in enumerate(
                        zip(unit.hits, unit.crops, projections, strict=True)
                    )
                )
                if p is not None
            ]
            visualization, failure = None, None
            if visualizations is not None and not unit.dead:  # a dead unit has nothing to draw
                visualization = layout.visualization_image(name, unit.index)
                shown = visualizations[position]
                failure = getattr(shown, "failure", None)
                pixels = np.asarray(getattr(shown, "pixels", shown), dtype=np.float32)
                # a result is shown stretched (1st–99th percentile, as its thumbnail's contrast);
                # a failed one as it came out, under its mark
                picture = pixels_to_image(pixels if failure else stretched(pixels))
                save_jpeg(
                    fit(picture, VISUALIZATION_SIDE, 2 * VISUALIZATION_SIDE),
                    self.folder / visualization,
                )
            units.append(
                Unit(
                    index=unit.index,
                    patches=tuple(patches),
                    stats=_stats(unit),
                    histogram=_histogram(unit.histogram),
                    correlated=tuple(Correlated(u, r) for u, r in unit.correlated),
                    votes=tuple(Vote(c, n, s) for c, n, s in unit.votes),
                    visualization=visualization,
                    visualization_failure=failure,
                )
            )
            if progress is not None:
                progress(1)
        self._open.clear()
        plan = view.plan
        spatial = len(plan.output_shape) == 3
        page = LayerPage(
            name=name,
            top=view.top,
            units=tuple(units),
            histogram_of="activation at every position"
            if spatial and plan.output_shape[1:] != (1, 1)
            else "activation per image",
            visualizations=recipe if visualizations is not None else None,
        )
        self.pages.append(page)
        self.summaries.append(self._summary(view, page))
        return page

    def add_layers(
        self, layers: Iterable[tuple], progress: Callable, recipe: str | None = None
    ) -> None:
        """`add_layer` for each (view, visualizations, project) (tasks.microscope.run.layer_views),
        with a bar of its pages (`progress(title, total)` gives `advance(n)`); `recipe`: how
        the visualizations were made."""
        for view, visualizations, project in layers:
            with progress(f"pages of {view.name}", len(view.units)) as advance:
                self.add_layer(
                    view,
                    project=project,
                    visualizations=visualizations,
                    recipe=recipe,
                    progress=advance,
                )

    def _patch(self, layer: str, unit: int, rank: int, hit, crop, raw) -> Patch | None:
        original = self._original(hit.index)
        if original is None:
            return None
        image = layout.patch_image(layer, unit, rank)
        save_patch(original, crop, self.folder / image)
        source, size = self._source(hit.index, original)
        projection = None
        if raw is not None:
            projection = layout.projection_image(layer, unit, rank)
            shown = fit(projection_image(raw, "guided"), PATCH_MIN_SIDE, PATCH_MAX_SIDE)
            save_jpeg(shown, self.folder / projection)
        return Patch(
            image=image,
            value=float(hit.value),
            source_index=int(hit.index),
            source_path=self.dataset.paths[hit.index],
            box=tuple(int(v) for v in hit.box),
            source_image=source,
            source_size=size,
            projection=projection,
        )

    def _original(self, index: int) -> Image.Image | None:
        if index in self._open:
            self._open.move_to_end(index)
            return self._open[index]
        try:
            image = self.dataset.load(index).convert("RGB")
        except CnnToolError as exc:
            self.lost.append(str(exc))
            image = None
        self._open[index] = image
        if len(self._open) > _OPEN_IMAGES:
            self._open.popitem(last=False)
        return image

    def _source(self, index: int, original: Image.Image) -> tuple[str, tuple[int, int]]:
        if index not in self.sources:
            path = layout.source_image(index)
            size = save_source(original, self.folder / path)
            self.sources[index] = (path, tuple(size))
        return self.sources[index]

    def _summary(self, view, page: LayerPage) -> LayerSummary:
        plan, diagnosis = view.plan, view.diagnosis
        field = plan.field
        filters_image = self._filters(view) if view.filters is not None else None
        preview = tuple(u.patches[0].image for u in page.units if u.patches and not u.stats.dead)[
            :PREVIEWS
        ]
        return LayerSummary(
            name=plan.name,
            type=plan.kind,
            output_shape=plan.output_shape,
            params=plan.params,
            macs=plan.macs,
            receptive_field=None if field is None else max(field.size),
            jump=None if field is None else max(field.jump),
            units=plan.channels,
            dead=None if diagnosis is None else diagnosis.share(diagnosis.dead),
            constant=None if diagnosis is None else diagnosis.share(diagnosis.constant),
            mean_abs_r=None if diagnosis is None else _round(diagnosis.mean_abs_r),
            filters_image=filters_image,
            preview=preview,
        )

    def _filters(self, view) -> str:
        """The first convolution's filters as a PNG sheet, `visualize filters --tiles outputs`'s
        look (io.layer_grids.filter_sheet): RGB tiles for 3 input channels (0 at mid-grey),
        else one tile per filter (the mean over its inputs) in blue–white–red with its colour
        bar, each scaled by its own largest |weight|."""
        conv = getattr(view.plan.point, "layer", None) or view.name
        picture = filter_sheet(view.filters, f"{self.model.name} {conv}", tiles="outputs")
        path = layout.filters_image(view.name)
        with atomic_path(self.folder / path) as temp:
            picture.save(temp, format="PNG")
        return path

    # ---- the map and the attack ----------------------------------------------------------------

    def embedding(self, view, predictions, label_names: Sequence[str]) -> Embedding:
        """The map's records and atlases; `predictions` (tasks.microscope.data_pass.Predictions)
        give each point's label, prediction and right/wrong."""
        rows = {int(i): k for k, i in enumerate(predictions.index)}
        thumb = atlas_thumb_size(len(view.indices))
        # read on demand; an image that cannot be read any more is a gray square
        thumbnails = LazyImages(
            tolerant(lambda row: self.dataset.load(view.indices[row]), []), len(view.indices)
        )
        atlases = write_atlases(
            self.folder / layout.ATLASES, thumbnails, thumb, site_root=self.folder
        )
        points = []
        for row, (index, (x, y)) in enumerate(zip(view.indices, view.coords.tolist(), strict=True)):
            k = rows.get(index)
            label = None if k is None or predictions.label[k] < 0 else int(predictions.label[k])
            predicted = None if k is None else int(predictions.predicted[k])
            atlas, cell = atlas_slot(row, thumb)
            path = self.dataset.paths[index]
            points.append(
                Point(
                    x=float(x),
                    y=float(y),
                    label=label,
                    prediction=predicted,
                    correct=None if label is None or predicted is None else label == predicted,
                    path=path,
                    atlas=atlas,
                    cell=cell,
                    href=Path(path).resolve().as_uri() if os.path.isfile(path) else None,
                )
            )
        return Embedding(
            layer=view.layer,
            method=view.method,
            points=tuple(points),
            label_names=tuple(label_names),
            atlases=tuple(atlases),
        )

    def attack(self, view) -> Attack:
        """The curve, and a triptych (original | amplified perturbation | adversarial) of each
        fooled image."""
        triptychs = []
        for fooled in view.fooled:
            clean, adversarial = fooled.clean.numpy(), fooled.adversarial.numpy()
            # ±ε (FGSM's L∞ step) spans black to white, as in the attack command's triptychs
            shown, _ = perturbation_pixels(adversarial - clean, fooled.eps)
            panels = [
                fit(pixels_to_image(np.clip(p, 0, 1)), 160, 224)
                for p in (clean, shown, adversarial)
            ]
            path = f"attack/triptych_{fooled.index:07d}.jpg"
            save_jpeg(side_by_side(panels), self.folder / path)
            triptychs.append(
                Triptych(
                    image=path,
                    eps=fooled.eps,
                    label=self._class(fooled.label),
                    adversarial=self._class(fooled.adversarial_class),
                )
            )
        return Attack(
            method=view.method,
            eps=view.eps,
            accuracy=view.accuracy,
            triptychs=tuple(triptychs),
            clean_accuracy=view.clean_accuracy,
        )

    def _class(self, index: int) -> str:
        return self.model.class_name(index) or f"class {index}"

    # ---- the whole site --------------------------------------------------------------------------

    def finish(
        self,
        *,
        plan,
        findings,
        data: DataCard,
        embedding: Embedding | None = None,
        attack: Attack | None = None,
        generator: str = "cnntool microscope",
    ) -> Site:
        """index.html and every page (and their JSON); returns the Site record."""
        model = self.model
        layers = list(self.summaries)
        classifier = plan.classifier
        if classifier is not None and classifier.name not in {s.name for s in layers}:
            layers.append(
                LayerSummary(
                    classifier.name,
                    classifier.kind,
                    classifier.output_shape,
                    classifier.params,
                    classifier.macs,
                    None,
                    None,
                    classifier.output_shape[0],
                    None,
                    None,
                    None,
                    page=False,
                )
            )
        classes = classifier.output_shape[0] if classifier is not None else model.num_outputs
        site = Site(
            model=ModelCard(
                name=model.name,
                source=model.source,
                preprocessing=model.preprocessing.describe(),
                preprocessing_source=model.preprocessing_source,
                params=plan.params,
                macs=plan.macs,
                classes=classes,
                class_names=tuple(model.class_names) if model.class_names else None,
            ),
            data=data,
            layers=tuple(layers),
            findings=tuple(
                Finding(f.severity, f.layer, f.message, f.advice, f.command or "") for f in findings
            ),
            embedding=embedding,
            attack=attack,
            generator=generator,
        )
        write_site(self.folder, site, self.pages)
        return site

    def finish_scan(
        self,
        *,
        plan,
        findings,
        report,
        predictions,
        embedding=None,
        label_names: Sequence[str] = (),
        attack=None,
    ) -> Site:
        """`finish` from the scan's ScanReport and Predictions, and the map and attack views of
        tasks.microscope (None: no such page)."""
        return self.finish(
            plan=plan,
            findings=findings,
            data=data_card(self.dataset, report, predictions),
            embedding=self.embedding(embedding, predictions, label_names) if embedding else None,
            attack=self.attack(attack) if attack else None,
        )


def check_site_folder(folder: str | Path) -> None:
    """A site needs a folder: an error when `folder` is a file."""
    if Path(folder).exists() and not Path(folder).is_dir():
        raise CnnToolError(f"-o {folder} is a file; the site needs a folder")


def data_card(dataset, report, predictions) -> DataCard:
    """The data card of a scan: its ScanReport (core.session) and its merged Predictions."""
    return DataCard(
        name=dataset.name,
        images=report.read,
        skipped=len(report.skipped),
        labelled=predictions.labelled,
        accuracy=predictions.accuracy,
    )


def summary_record(index: Path, site: Site, plan) -> dict:
    """The one JSON record `cnntool microscope` prints: where the site is, and what it holds."""
    data = site.data
    return {
        "site": str(index),
        "model": site.model.name,
        "data": data.name,
        "images": data.images,
        "skipped": data.skipped,
        "accuracy": data.accuracy,
        "layers": [layer.name for layer in plan.layers],
        "units": sum(len(layer.units) for layer in plan.layers),
        "findings": len(site.findings),
        "map": site.embedding is not None,
        "attack": site.attack is not None,
    }


def _stats(unit) -> UnitStats:
    return UnitStats(
        mean=unit.mean,
        max=unit.max,
        lifetime_sparsity=unit.lifetime_sparsity,
        active=unit.active,
        dead=unit.dead,
        constant=unit.constant,
        saturated=unit.saturated,
    )


def _histogram(histogram) -> Histogram | None:
    edges, counts = histogram
    return Histogram(edges=tuple(edges), counts=tuple(counts)) if counts else None


def _round(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.6g}")
