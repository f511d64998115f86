"""Diagnose a trained network: dead, constant, saturated and correlated units, noisy or
duplicated filters — the "what if it does not work?" checklist as one dataset scan.

Pieces, each usable alone:
- points.py: where to measure (each conv/linear layer at its activation);
- stats.py: streaming per-unit statistics, mergeable exactly across batches and shards;
- stats_consumer.py: one pass over the data folding every point's output into its statistics;
- layer.py: per-unit numbers and a layer summary from merged statistics;
- filters.py: per-filter noise score, redundancy and norms;
- findings.py: thresholds, the advice they come from, the command that digs deeper.
`diagnose(...)` below puts a merged scan together into a `Diagnosis`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from cnntool.tasks.diagnose.filters import FilterReport, filter_report
from cnntool.tasks.diagnose.findings import (
    HIGH_R,
    SATURATED_SAMPLES,
    Finding,
    FollowUps,
    gradient_finding,
    layer_findings,
    size_finding,
)
from cnntool.tasks.diagnose.layer import LayerDiagnosis, summarize
from cnntool.tasks.diagnose.points import MeasurePoint, default_points, named_points
from cnntool.tasks.diagnose.stats import RunningStats
from cnntool.tasks.diagnose.stats_consumer import StatsConsumer, scan

__all__ = [
    "Diagnosis",
    "FollowUps",
    "StatsConsumer",
    "FilterReport",
    "Finding",
    "LayerDiagnosis",
    "MeasurePoint",
    "RunningStats",
    "default_points",
    "diagnose",
    "filter_report",
    "merge_states",
    "named_points",
    "scan",
]


@dataclass(frozen=True)
class Diagnosis:
    layers: tuple[LayerDiagnosis, ...]
    findings: tuple[Finding, ...]  # most severe first, then in layer order
    images: int
    unreached: tuple[str, ...]  # measure points that never ran in the forward pass

    def rows(self) -> list[dict]:
        """One summary per layer, as the table shows it: counts of dead/constant/saturated
        units (None where not judged), shares, sparsities, correlation and filter figures."""
        rows = []
        for layer in self.layers:
            point, f = layer.point, layer.filters
            noise = (
                "—"
                if f is None
                else (
                    "n/a"
                    if f.median_noise is None or not f.white_noise_score
                    else f"{f.median_noise / f.white_noise_score:.2f}"
                )
            )
            rows.append(
                {
                    "layer": point.layer or point.module,
                    "at": point.activation.kind,
                    "units": layer.units,
                    "dead": _count(layer.dead),
                    "constant": _count(layer.constant),
                    "saturated": _count(layer.saturated),
                    "active": layer.mean_active,
                    "lifetime_sparsity": layer.mean_lifetime_sparsity,
                    "population_sparsity": layer.population_sparsity,
                    "mean_abs_r": layer.mean_abs_r,
                    "max_r": layer.top_pairs[0][2] if layer.top_pairs else None,
                    "noise": noise,
                    "max_cosine": max(f.redundancy) if f and f.redundancy else None,
                }
            )
        return rows

    def health_series(self) -> dict[str, list[float | None]]:
        """Per layer, the shares of dead, constant and saturated units and the sparsity (share
        of samples ≤ 0); None where not judged (the unit health chart)."""
        layers = self.layers
        return {
            "dead": [layer.share(layer.dead) for layer in layers],
            "constant": [layer.share(layer.constant) for layer in layers],
            "saturated": [layer.share(layer.saturated) for layer in layers],
            "sparsity (≤ 0)": [
                None if layer.dead is None else 1 - layer.mean_active for layer in layers
            ],
        }

    def worst_correlated(self) -> LayerDiagnosis | None:
        """The layer with the largest mean |r| (for the heat map)."""
        candidates = [layer for layer in self.layers if layer.mean_abs_r is not None]
        return max(candidates, key=lambda layer: layer.mean_abs_r, default=None)


def merge_states(parts: Sequence[dict[str, dict]]) -> dict[str, RunningStats]:
    """Merge the per-rank `{module: RunningStats.state_dict()}` into one RunningStats each."""
    merged: dict[str, RunningStats] = {}
    for part in parts:
        for name, state in part.items():
            stats = RunningStats.from_state(state)
            if name in merged:
                merged[name].merge(stats)
            else:
                merged[name] = stats
    return merged


def diagnose(
    model: nn.Module,
    points: Sequence[MeasurePoint],
    states: dict[str, RunningStats],
    commands: FollowUps,
    *,
    gradcheck_result=None,
    params_macs: tuple[int, int] | None = None,
) -> Diagnosis:
    """Summaries, filter reports and findings from the merged statistics of a scan."""
    conv_types = (nn.Conv2d,)
    modules = dict(model.named_modules())
    layers, findings, unreached = [], [], []
    for point in points:
        stats = states.get(point.module)
        if stats is None or stats.samples == 0:
            unreached.append(point.module)
            continue
        weighted = modules.get(point.layer) if point.layer else None
        filters = filter_report(model, point.layer) if isinstance(weighted, conv_types) else None
        layer = summarize(point, stats, filters, high_r=HIGH_R, saturated_samples=SATURATED_SAMPLES)
        layers.append(layer)
        findings.extend(layer_findings(layer, commands))
    if gradcheck_result is not None:
        findings.append(gradient_finding(gradcheck_result, commands))
    if params_macs is not None:
        size = size_finding(*params_macs, commands)
        if size is not None:
            findings.append(size)
    order = {"error": 0, "warning": 1, "info": 2}
    findings.sort(key=lambda f: order[f.severity])  # stable: layer order within a severity
    images = max((layer.images for layer in layers), default=0)
    return Diagnosis(tuple(layers), tuple(findings), images, tuple(unreached))


def _count(units) -> int | None:
    return None if units is None else len(units)
