"""What one measure point's running statistics say: per-unit numbers and the layer's summary."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from cnntool.tasks.diagnose.filters import FilterReport
from cnntool.tasks.diagnose.points import MeasurePoint
from cnntool.tasks.diagnose.stats import RunningStats

CONSTANT_RELATIVE_STD = 1e-3  # a unit whose std is below this × the layer's median std is constant
TOP_PAIRS = 5
RARE_ACTIVE = 0.01  # rectified units > 0 on fewer samples are left out of the correlation
#                     summary: two units that fire on the same single sample have r = 1


@dataclass(frozen=True)
class LayerDiagnosis:
    """The statistics of one measure point over the scanned images.

    Per-unit tuples are indexed by channel. `dead`, `constant`, `saturated` list unit indices.
    Rectified-only numbers (dead, sparsity) are None on a "linear" point; `at_bound` and
    `saturated` are None without a bounded activation; correlation numbers are None when the
    layer was too wide to keep co-moments or has fewer than 2 non-constant units.
    """

    point: MeasurePoint
    units: int
    images: int
    positions: int  # samples per unit per image (H·W)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    minimum: tuple[float, ...]
    maximum: tuple[float, ...]
    active: tuple[float, ...]  # share of samples > 0
    at_bound: tuple[float, ...] | None
    lifetime_sparsity: tuple[float, ...] | None
    population_sparsity: float | None
    silent: float | None  # share of samples where no unit is > 0
    dead: tuple[int, ...] | None
    rare: tuple[int, ...] | None  # > 0 on fewer than RARE_ACTIVE of samples, not dead
    constant: tuple[int, ...]  # variance ≈ 0 ("ignores the input"), dead ones excluded
    saturated: tuple[int, ...] | None  # at a bound on ≥ SATURATED_SAMPLES of samples
    mean_abs_r: float | None
    top_pairs: tuple[tuple[int, int, float], ...]  # (i, j, r), largest r first
    high_r_pairs: int | None  # pairs with r ≥ high_r (positive: a negated copy is not a duplicate)
    correlation: torch.Tensor | None  # (C, C) on the CPU, for the heat map; not serialized
    filters: FilterReport | None

    @property
    def label(self) -> str:
        """'conv2 (at relu2)': for messages."""
        return self.point.label

    @property
    def name(self) -> str:
        """The conv/linear layer whose units these are (else the measured module): a key."""
        return self.point.layer or self.point.module

    @property
    def mean_active(self) -> float | None:
        """The units' average share of samples > 0."""
        return _mean(self.active)

    @property
    def mean_lifetime_sparsity(self) -> float | None:
        return _mean(self.lifetime_sparsity)

    def share(self, units: tuple[int, ...] | None) -> float | None:
        return None if units is None else len(units) / max(self.units, 1)

    def to_record(self) -> dict:
        """A JSON-ready dict (per-unit lists included; the correlation matrix is not)."""
        point, f = self.point, self.filters
        return {
            "layer": point.layer,
            "measured_at": point.module,
            "activation": point.activation.kind,
            "units": self.units,
            "images": self.images,
            "positions": self.positions,
            "dead": _share(self, self.dead),
            "dead_units": _list(self.dead),
            "rare_units": _list(self.rare),
            "constant": _share(self, self.constant),
            "constant_units": list(self.constant),
            "saturated": _share(self, self.saturated),
            "saturated_units": _list(self.saturated),
            "mean_active": _round(self.mean_active),
            "mean_lifetime_sparsity": _round(self.mean_lifetime_sparsity),
            "population_sparsity": _round(self.population_sparsity),
            "silent_samples": _round(self.silent),
            "mean_abs_r": _round(self.mean_abs_r),
            "high_r_pairs": self.high_r_pairs,
            "top_pairs": [[i, j, _round(r)] for i, j, r in self.top_pairs],
            "unit_mean": _rounded(self.mean),
            "unit_std": _rounded(self.std),
            "unit_min": _rounded(self.minimum),
            "unit_max": _rounded(self.maximum),
            "unit_active": _rounded(self.active),
            "unit_at_bound": _rounded(self.at_bound),
            "unit_lifetime_sparsity": _rounded(self.lifetime_sparsity),
            "filters": None
            if f is None
            else {
                "kernel": list(f.kernel),
                "groups": f.groups,
                "median_noise": _round(f.median_noise),
                "white_noise_score": _round(f.white_noise_score),
                "noise": _rounded(f.noise),
                "redundancy": _rounded(f.redundancy),
                "most_similar": _list(f.most_similar),
                "norm": _rounded(f.norms),
            },
        }


def summarize(
    point: MeasurePoint,
    stats: RunningStats,
    filters: FilterReport | None,
    *,
    high_r: float,
    saturated_samples: float,
) -> LayerDiagnosis:
    """Per-unit numbers and the layer's summary from a merged RunningStats."""
    samples = max(stats.samples, 1)
    variance = stats.variance()
    std = variance.sqrt()
    active = stats.active.double() / samples
    rectified = point.activation.rectified
    dead = _indices(stats.active == 0) if rectified else None
    constant = _constant_units(std, stats.active == 0 if rectified else None)
    at_bound = saturated = None
    if stats.bounds is not None:
        at_bound_share = stats.at_bound.double() / samples
        at_bound = _tuple(at_bound_share)
        saturated = _indices(at_bound_share >= saturated_samples)
    # Treves–Rolls assumes responses ≥ 0: only at a rectifier's own output
    lifetime = (
        _tuple(stats.lifetime_sparsity())
        if rectified and not point.activation.kind.startswith("pre-")
        else None
    )
    silent_share = None
    heard = stats.population_samples + stats.silent_samples
    if rectified and heard:
        silent_share = stats.silent_samples / heard
    correlation = stats.correlation_matrix()
    rare = (active < RARE_ACTIVE) & (stats.active > 0) if rectified else None
    summarized = correlation
    if correlation is not None and rare is not None and bool(rare.any()):
        summarized = correlation.clone()
        summarized[rare, :] = math.nan
        summarized[:, rare] = math.nan
    mean_abs_r, pairs, high = _correlation_summary(summarized, high_r)
    return LayerDiagnosis(
        point=point,
        units=stats.units,
        images=stats.images,
        positions=stats.positions,
        mean=_tuple(stats.mean),
        std=_tuple(std),
        minimum=_tuple(stats.minimum),
        maximum=_tuple(stats.maximum),
        active=_tuple(active),
        at_bound=at_bound,
        lifetime_sparsity=lifetime,
        population_sparsity=stats.population_sparsity() if rectified else None,
        silent=silent_share,
        dead=dead,
        rare=None if rare is None else _indices(rare),
        constant=constant,
        saturated=saturated,
        mean_abs_r=mean_abs_r,
        top_pairs=pairs,
        high_r_pairs=high,
        correlation=None if correlation is None else correlation.float().cpu(),
        filters=filters,
    )


def _constant_units(std: torch.Tensor, dead: torch.Tensor | None) -> tuple[int, ...]:
    """Units whose std is ≤ CONSTANT_RELATIVE_STD × the layer's median std (of units that vary
    at all), or exactly 0; dead units are reported as dead instead."""
    varying = std[std > 0]
    reference = float(varying.median()) if varying.numel() else 0.0
    flat = std <= CONSTANT_RELATIVE_STD * reference
    if dead is not None:
        flat &= ~dead
    return _indices(flat)


def _correlation_summary(r: torch.Tensor | None, high_r: float):
    if r is None:
        return None, (), None
    rows, cols = torch.triu_indices(r.shape[0], r.shape[0], offset=1, device=r.device)
    values = r[rows, cols]
    defined = ~values.isnan()
    if int(defined.sum()) == 0:
        return None, (), None
    signed = values.nan_to_num(-2.0)  # undefined pairs sort last
    top = signed.topk(min(TOP_PAIRS, int(defined.sum()))).indices
    pairs = tuple((int(rows[k]), int(cols[k]), float(values[k])) for k in top)
    mean_abs = float(values[defined].abs().mean())
    return mean_abs, pairs, int((signed >= high_r).sum())


def _indices(mask: torch.Tensor) -> tuple[int, ...]:
    return tuple(mask.nonzero().flatten().tolist())


def _tuple(values: torch.Tensor) -> tuple[float, ...]:
    return tuple(values.double().cpu().tolist())


def _mean(values) -> float | None:
    if values is None:
        return None
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else None


def _share(layer: LayerDiagnosis, units) -> float | None:
    share = layer.share(units)
    return None if share is None else _round(share)


def _list(values):
    return None if values is None else list(values)


def _round(value: float | None, digits: int = 6) -> float | None:
    """6 significant digits: what a person reads, and stable across shard orders (float64
    merges differ only in the last bits)."""
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")


def _rounded(values) -> list | None:
    return None if values is None else [_round(v) for v in values]
