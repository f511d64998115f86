"""What the merged scan says about each layer and unit, and the map: frozen views for the site.

After the scan (rank 0):
- diagnose's summaries and findings for the layers with pages (tasks.diagnose);
- per unit: its top hits with boxes in the original image's pixels (tasks.top_patches), its
  figures, its histogram, the units it correlates with most (diagnose's correlation), and for a
  layer that feeds the classifier the classes it votes for (weight × mean activation);
- the map: t-SNE of the penultimate features (tasks.embed), PCA when there are too few images.
Guided-backprop projections and feature visualizations are computed per layer by the caller
(projections.py, visualize.py), so that only one layer's images are held at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from cnntool.tasks.diagnose import Diagnosis, Finding, LayerDiagnosis, diagnose
from cnntool.tasks.diagnose.findings import FollowUps
from cnntool.tasks.microscope.data_pass import ScanResult
from cnntool.tasks.microscope.histogram import UnitHistograms
from cnntool.tasks.microscope.plan import LayerPlan, MicroscopePlan, feeds_classifier
from cnntool.tasks.top_patches import Hit, original_box, top_patches

CORRELATED = 5  # most correlated units listed per unit
VOTES = 5  # classes listed per unit
DIGITS = 6  # significant digits of the figures: what a person reads, and equal across shard orders


@dataclass(frozen=True)
class UnitView:
    """One unit: its top hits in rank order (at a rectified layer only those where the unit is
    on: a dead unit has none) and its figures (None: not judged at this layer, e.g. `active`
    and `lifetime_sparsity` where no rectifier follows)."""

    index: int
    hits: tuple[Hit, ...]
    crops: tuple[tuple[int, int, int, int], ...]  # per hit, what its patch shows (see shown_box)
    mean: float
    max: float
    lifetime_sparsity: float | None
    active: float | None
    dead: bool
    constant: bool
    saturated: bool
    histogram: tuple[tuple[float, ...], tuple[int, ...]]  # (edges, counts); empty: nothing seen
    correlated: tuple[tuple[int, float], ...]  # (other unit, r), largest |r| first
    votes: tuple[tuple[int, str, float], ...]  # (class index, name, score), largest first


@dataclass(frozen=True)
class LayerView:
    """One layer with a page: its plan, diagnose's summary, the units shown, and the filters of
    the convolution when it is the model's first (weights as applied, (out, in, kh, kw))."""

    plan: LayerPlan
    diagnosis: LayerDiagnosis | None
    units: tuple[UnitView, ...]
    filters: np.ndarray | None
    feeds_classifier: bool
    top: int  # K: the hits kept per unit (fewer when DATA has fewer images)

    @property
    def name(self) -> str:
        return self.plan.name


@dataclass(frozen=True)
class MapView:
    """The 2-D map of the penultimate features: one row per image that has finite features."""

    layer: str
    method: str  # "t-SNE" or "PCA"
    coords: np.ndarray  # (N, 2)
    indices: tuple[int, ...]  # dataset index of each row
    notes: tuple[str, ...] = ()


def diagnosis(
    model: nn.Module, plan: MicroscopePlan, result: ScanResult, commands: FollowUps
) -> Diagnosis:
    """diagnose's summaries and findings for the layers with pages; each finding's `layer` is
    the name of the page it belongs to."""
    found = diagnose(
        model,
        [layer.point for layer in plan.layers],
        result.stats,
        commands,
        params_macs=(plan.params, plan.macs) if plan.macs is not None else None,
    )
    page_of = {layer.point.layer or layer.name: layer.name for layer in plan.layers}
    findings = tuple(
        Finding(
            f.severity,
            f.kind,
            page_of.get(f.layer, f.layer) if f.layer else None,
            f.message,
            f.advice,
            f.command,
        )
        for f in found.findings
    )
    return Diagnosis(found.layers, findings, found.images, found.unreached)


def layer_view(
    model: nn.Module,
    loaded,
    plan: MicroscopePlan,
    layer: LayerPlan,
    result: ScanResult,
    summary: LayerDiagnosis | None,
) -> LayerView:
    """Everything the scan measured about one layer's units (no images yet)."""
    topk = result.topk.get(layer.name)
    histograms: UnitHistograms | None = result.histograms.get(layer.name)
    patches = (
        top_patches(
            topk,
            layer=layer.name,
            units=layer.units,
            field=layer.field,
            preprocessing=loaded.preprocessing,
        )
        if topk is not None
        else None
    )
    votes = (
        _votes(model, loaded, plan, layer, summary) if feeds_classifier(model, plan, layer) else {}
    )
    correlation = summary.correlation if summary is not None else None
    sizes = topk.sizes.cpu().tolist() if topk is not None else None
    units = []
    rectified = layer.point.activation.rectified
    for position, unit in enumerate(layer.units):
        hits = patches.hits[position] if patches is not None else ()
        if rectified:  # where a rectified unit is 0 it is off: ties at 0 are arbitrary images
            hits = tuple(hit for hit in hits if hit.value > 0)
        views = [
            original_box(None, (0, 0), tuple(sizes[position][hit.rank]), loaded.preprocessing)
            for hit in hits
        ]
        units.append(
            UnitView(
                index=unit,
                hits=hits,
                crops=tuple(
                    shown_box(hit.box, view) for hit, view in zip(hits, views, strict=True)
                ),
                **_figures(summary, unit),
                histogram=histograms.unit(position) if histograms is not None else ((), ()),
                correlated=_correlated(correlation, unit),
                votes=votes.get(unit, ()),
            )
        )
    return LayerView(
        plan=layer,
        diagnosis=summary,
        units=tuple(units),
        filters=_first_filters(model, plan, layer, loaded.preprocessing),
        feeds_classifier=bool(votes),
        top=plan.top,
    )


def shown_box(
    box: tuple[int, int, int, int], view: tuple[int, int, int, int]
) -> tuple[int, int, int, int]:
    """What a hit's patch shows: its receptive field `box`, except along an axis where the
    field is as large as the model's `view` of the image (or larger): there the view. A deep
    unit sees all the input, and a crop of its whole field would be mostly zero padding; an
    early unit's small field keeps its padding at the image's border (as R-CNN crops it).
    Boxes are (start, start, end, end) pairs in the same pixels, either axis order."""
    first = (view[0], view[2]) if box[2] - box[0] >= view[2] - view[0] else (box[0], box[2])
    second = (view[1], view[3]) if box[3] - box[1] >= view[3] - view[1] else (box[1], box[3])
    return (first[0], second[0], first[1], second[1])


def _figures(summary: LayerDiagnosis | None, unit: int) -> dict:
    if summary is None:
        return dict(
            mean=math.nan,
            max=math.nan,
            lifetime_sparsity=None,
            active=None,
            dead=False,
            constant=False,
            saturated=False,
        )
    rectified = summary.point.activation.rectified
    lifetime = summary.lifetime_sparsity[unit] if summary.lifetime_sparsity is not None else None
    return dict(
        mean=rounded(summary.mean[unit]),
        max=rounded(summary.maximum[unit]),
        lifetime_sparsity=None if lifetime is None or math.isnan(lifetime) else rounded(lifetime),
        active=rounded(summary.active[unit]) if rectified else None,
        dead=summary.dead is not None and unit in summary.dead,
        constant=unit in summary.constant,
        saturated=summary.saturated is not None and unit in summary.saturated,
    )


def _correlated(correlation: torch.Tensor | None, unit: int) -> tuple[tuple[int, float], ...]:
    """The units with the largest |r| with `unit` (ties: the lower index first)."""
    if correlation is None:
        return ()
    row = correlation[unit].double().clone()
    row[unit] = math.nan
    defined = (~row.isnan()).nonzero().flatten().tolist()
    ranked = sorted(defined, key=lambda other: (-round(abs(float(row[other])), DIGITS), other))
    return tuple((other, rounded(float(row[other]))) for other in ranked[:CORRELATED])


def _votes(
    model: nn.Module, loaded, plan: MicroscopePlan, layer: LayerPlan, summary: LayerDiagnosis | None
) -> dict[int, tuple[tuple[int, str, float], ...]]:
    """Per unit shown, the classes with the largest weight × mean activation (the unit's
    average push on each logit)."""
    if summary is None:
        return {}
    weight = dict(model.named_modules())[plan.classifier.name].weight.detach().double().cpu()
    units = list(layer.units)
    mean = torch.tensor([summary.mean[u] for u in units], dtype=torch.float64)
    scores = weight[:, units] * mean[None, :]  # (classes, units shown)
    count = min(VOTES, scores.shape[0])
    votes = {}
    for column, unit in enumerate(units):
        if not bool(scores[:, column].any()):
            continue  # a unit that is always 0 (dead) pushes no logit
        order = sorted(range(scores.shape[0]), key=lambda c: (-float(scores[c, column]), c))[:count]
        votes[unit] = tuple(
            (c, loaded.class_name(c) or str(c), rounded(float(scores[c, column]))) for c in order
        )
    return votes


def _first_filters(
    model: nn.Module, plan: MicroscopePlan, layer: LayerPlan, preprocessing
) -> np.ndarray | None:
    """The first convolution's weights, on the page of the layer whose units it makes, with
    their input channels in the image's order (a BGR model's filters shown as RGB)."""
    if plan.first_conv is None or plan.first_conv not in (layer.name, layer.point.layer):
        return None
    from cnntool.tasks.filters import filters, shown_filters

    return shown_filters(filters(model, plan.first_conv).weights, preprocessing).numpy()


def embedding(result: ScanResult, layer: str, *, seed: int = 0) -> MapView | None:
    """t-SNE (tasks.embed's defaults) of the finite feature rows; PCA below t-SNE's minimum of
    images; None for fewer than 2 images."""
    from cnntool.tasks.embed import MIN_TSNE_POINTS, EmbedSettings, embed

    features = np.asarray(result.features, dtype=np.float32)
    keep = np.isfinite(features).all(axis=1) if features.size else np.zeros(len(features), bool)
    indices = tuple(int(i) for i, k in zip(result.feature_indices, keep, strict=True) if k)
    notes = []
    if (~keep).any():
        notes.append(
            f"{int((~keep).sum())} image(s) with NaN or infinite features are left off the map"
        )
    if len(indices) < 2:
        return None
    method = "tsne" if len(indices) >= MIN_TSNE_POINTS else "pca"
    mapped = embed(features[keep], EmbedSettings(method=method, seed=seed))
    notes += list(mapped.warnings)
    return MapView(
        layer=layer,
        method="t-SNE" if method == "tsne" else "PCA",
        coords=np.asarray(mapped.coords, dtype=np.float64),
        indices=indices,
        notes=tuple(notes),
    )


def rounded(value: float | None, digits: int = DIGITS) -> float | None:
    """`digits` significant digits (float64 merges in another order differ in the last bits)."""
    if value is None or not math.isfinite(value):
        return value
    return float(f"{value:.{digits}g}")
