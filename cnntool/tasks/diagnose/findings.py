"""The checklist: each statistic against a named threshold, as findings a person can act on.

Every finding says what was measured, over how much data, against which threshold; quotes the
practical advice it comes from; and gives the cnntool command that digs deeper. The thresholds
are deliberately plain numbers (shown in every message) rather than tuned scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cnntool.tasks.diagnose.layer import CONSTANT_RELATIVE_STD, RARE_ACTIVE, LayerDiagnosis

# --- thresholds ---------------------------------------------------------------------------------
DEAD_SHARE = 0.10  # warn when at least this share of a layer's units is never > 0
DEAD_SHARE_ERROR = 0.50  # … an error from this share on
CONSTANT_SHARE = 0.10  # units with (almost) no variance that are not dead
SATURATED_SAMPLES = 0.99  # a unit at its activation's bound on this share of samples is stuck
SATURATED_SHARE = 0.10  # warn when at least this share of units is stuck at a bound
DENSE_ACTIVE = 0.90  # mean share of samples > 0 above this: the layer is not sparse
HIGH_R = 0.99  # r between two units at least this: they carry the same signal
MEAN_ABS_R = 0.50  # mean |r| between a layer's units at least this: strongly correlated
# r is judged only over at least this many samples (images × positions), and at least as many
# samples as units: over n samples, the units' centred values live in n − 1 dimensions, so with
# fewer samples than units most pairs are correlated by construction (2 samples: every r = ±1),
# and two independent units already reach |r| ≈ 0.8/√n by chance.
MIN_R_SAMPLES = 30
DUPLICATE_COSINE = 0.99  # cosine similarity of two filters at least this: duplicates
NOISY_RATIO = 0.90  # median noise score ≥ this × white noise's: the filters look like noise
NOISY_MIN_WEIGHTS = 18  # judged only for filters of this many weights or more: a single 3×3
#                         slice is too few numbers to tell an edge detector from noise
VANISHING_NORM = 0.01  # a filter norm below this × the layer's median norm: a vanished filter
TINY_MODEL_PARAMS = 50_000  # fewer parameters than this: say it may be too small

# --- the seeds' advice, quoted --------------------------------------------------------------------
ADVICE_IGNORE = (
    "bad training: many hidden units ignore the input and/or exhibit strong correlations"
)
ADVICE_SPARSE = "good training: hidden units are sparse across samples and across features"
ADVICE_UNCORRELATED = (
    "visualize features (feature maps need to be uncorrelated) and have high variance"
)
ADVICE_FILTERS = "filters: too noisy, too correlated, lack structure"
ADVICE_GRADIENTS = "check gradients numerically by finite differences"
ADVICE_SIZE = "compute flops and nr. params -> if too small, make net larger"

SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Finding:
    severity: str  # "error", "warning" or "info"
    kind: str  # "dead", "constant", "saturated", "dense", "duplicate-units", "correlated",
    #            "too-few-samples", "noisy-filters", "duplicate-filters", "vanishing-filters",
    #            "gradients", "size"
    layer: str | None  # the layer's name (LayerDiagnosis.name), None for the whole model
    message: str
    advice: str
    command: str | None  # the cnntool command that digs deeper

    def to_record(self) -> dict:
        return {
            "severity": self.severity,
            "kind": self.kind,
            "layer": self.layer,
            "message": self.message,
            "advice": self.advice,
            "command": self.command,
        }


class FollowUps(Protocol):
    """Spells the command that digs deeper into a finding (the CLI gives one: cli/followups.py;
    the task does not know the command line's flags)."""

    def top_patches(self, layer: str, units: Sequence[int]) -> str: ...
    def activations(self, layer: str) -> str: ...
    def filters(self, layer: str) -> str: ...
    def gradcheck(self) -> str: ...
    def profile(self) -> str: ...


def layer_findings(layer: LayerDiagnosis, commands: FollowUps) -> list[Finding]:
    """Everything one layer's statistics and filters say, most severe first."""
    found = [
        *_unit_findings(layer, commands),
        *_correlation_findings(layer, commands),
        *_filter_findings(layer, commands),
    ]
    return sorted(found, key=lambda f: SEVERITIES.index(f.severity))


def _over(layer: LayerDiagnosis) -> str:
    return f"over {layer.images:,} images"


def _unit_findings(layer: LayerDiagnosis, commands: FollowUps) -> list[Finding]:
    found = []
    where, measured, key = layer.label, layer.point.module, layer.name
    dead_share = layer.share(layer.dead) or 0.0
    if dead_share >= DEAD_SHARE:  # fewer dead units are listed in the table and the records
        severity = "error" if dead_share >= DEAD_SHARE_ERROR else "warning"
        found.append(
            Finding(
                severity,
                "dead",
                key,
                f"{where}: {dead_share:.0%} of units dead ({len(layer.dead)} of {layer.units}: "
                "never > 0 "
                f"{_over(layer)}; threshold {DEAD_SHARE:.0%}){_rare(layer)}",
                ADVICE_IGNORE,
                commands.top_patches(measured, layer.dead),
            )
        )
    constant_share = len(layer.constant) / max(layer.units, 1)
    if constant_share >= CONSTANT_SHARE:
        found.append(
            Finding(
                "warning",
                "constant",
                key,
                f"{where}: {constant_share:.0%} of units ignore the input "
                f"({len(layer.constant)} of "
                f"{layer.units} with std ≤ {CONSTANT_RELATIVE_STD:g} × the layer's median std "
                f"{_over(layer)}; threshold {CONSTANT_SHARE:.0%})",
                ADVICE_IGNORE,
                commands.top_patches(measured, layer.constant),
            )
        )
    if layer.saturated:
        share = len(layer.saturated) / layer.units
        if share >= SATURATED_SHARE:
            found.append(
                Finding(
                    "warning",
                    "saturated",
                    key,
                    f"{where}: {share:.0%} of units stuck at the {layer.point.activation.kind} "
                    "bound "
                    f"({len(layer.saturated)} of {layer.units} at the bound on ≥ "
                    f"{SATURATED_SAMPLES:.0%} "
                    f"of samples {_over(layer)}; threshold {SATURATED_SHARE:.0%})",
                    ADVICE_IGNORE,
                    commands.top_patches(measured, layer.saturated),
                )
            )
    if layer.point.activation.rectified and layer.units > 1:
        mean_active = layer.mean_active
        if mean_active is not None and mean_active > DENSE_ACTIVE:
            found.append(
                Finding(
                    "info",
                    "dense",
                    key,
                    f"{where}: units are active (> 0) on {mean_active:.0%} of samples on average — "
                    f"not sparse (threshold {DENSE_ACTIVE:.0%})",
                    ADVICE_SPARSE,
                    commands.activations(measured),
                )
            )
    return found


def _rare(layer: LayerDiagnosis) -> str:
    if not layer.rare:
        return ""
    count = len(layer.rare)
    verb = "is" if count == 1 else "are"
    return f"; {count} more {verb} > 0 on fewer than {RARE_ACTIVE:.0%} of samples"


def _correlation_findings(layer: LayerDiagnosis, commands: FollowUps) -> list[Finding]:
    found = []
    where, measured, key = layer.label, layer.point.module, layer.name
    samples = layer.images * layer.positions
    flagged = layer.high_r_pairs or (layer.mean_abs_r or 0) >= MEAN_ABS_R
    if flagged and samples < max(MIN_R_SAMPLES, layer.units):
        return [
            Finding(
                "info",
                "too-few-samples",
                key,
                f"{where}: correlation between its {layer.units} units not judged: {samples:,} "
                f"sample(s) ({_over(layer)}) are too few (at least "
                f"{max(MIN_R_SAMPLES, layer.units):,}"
                "; fewer samples than units make most pairs correlated by chance)",
                "measure correlations over more images than the layer has units",
                None,
            )
        ]
    if layer.high_r_pairs:
        pairs = [p for p in layer.top_pairs if p[2] >= HIGH_R]
        shown = ", ".join(f"{i}~{j} (r={r:.3f})" for i, j, r in pairs[:3])
        units = sorted({u for i, j, _ in pairs for u in (i, j)})
        found.append(
            Finding(
                "warning",
                "duplicate-units",
                key,
                f"{where}: {layer.high_r_pairs} pair(s) of units carry the same signal, r ≥ "
                f"{HIGH_R} "
                f"{_over(layer)}, e.g. {shown}",
                ADVICE_IGNORE,
                commands.top_patches(measured, units),
            )
        )
    if layer.mean_abs_r is not None and layer.mean_abs_r >= MEAN_ABS_R:
        found.append(
            Finding(
                "warning",
                "correlated",
                key,
                f"{where}: mean |r| between units {layer.mean_abs_r:.2f} {_over(layer)} "
                f"(threshold {MEAN_ABS_R})",
                ADVICE_UNCORRELATED,
                commands.activations(measured),
            )
        )
    return found


def _filter_findings(layer: LayerDiagnosis, commands: FollowUps) -> list[Finding]:
    report = layer.filters
    if report is None:
        return []
    found = []
    where = key = conv = report.layer
    count = len(report.norms)
    median_noise = report.median_noise
    weights = report.kernel[0] * report.kernel[1] * report.inputs_per_filter
    if (
        median_noise is not None
        and report.white_noise_score
        and weights >= NOISY_MIN_WEIGHTS
        and median_noise >= NOISY_RATIO * report.white_noise_score
    ):
        found.append(
            Finding(
                "warning",
                "noisy-filters",
                key,
                f"{where}: filters look like noise — median high-frequency energy share "
                f"{median_noise:.2f}, white noise {report.white_noise_score:.2f} (threshold "
                f"{NOISY_RATIO} × white noise)",
                ADVICE_FILTERS,
                commands.filters(conv),
            )
        )
    if report.redundancy is not None:
        duplicates = [i for i, c in enumerate(report.redundancy) if c >= DUPLICATE_COSINE]
        if duplicates:
            pairs = sorted({tuple(sorted((i, report.most_similar[i]))) for i in duplicates})
            shown = ", ".join(f"{i}~{j}" for i, j in pairs[:4])
            found.append(
                Finding(
                    "warning",
                    "duplicate-filters",
                    key,
                    f"{where}: {len(duplicates)} of {count} filters have a near-duplicate "
                    "(cosine ≥ "
                    f"{DUPLICATE_COSINE}), e.g. {shown}",
                    ADVICE_FILTERS,
                    commands.filters(conv),
                )
            )
    norms = sorted(report.norms)
    median = norms[len(norms) // 2]
    vanished = [n for n in report.norms if n < VANISHING_NORM * median]
    if vanished:
        found.append(
            Finding(
                "warning",
                "vanishing-filters",
                key,
                f"{where}: {len(vanished)} of {count} filters have (almost) no weight (norm < "
                f"{VANISHING_NORM} × the median {median:.3g})",
                ADVICE_FILTERS,
                commands.filters(conv),
            )
        )
    return found


def gradient_finding(result, commands: FollowUps) -> Finding:
    """The verdict of the whole-model gradient check (a GradcheckResult)."""
    if result.ok:
        return Finding(
            "info",
            "gradients",
            None,
            f"gradients agree with finite differences ({len(result.tensors)} tensors, "
            f"{result.tolerances.describe()})",
            ADVICE_GRADIENTS,
            commands.gradcheck(),
        )
    wrong = ", ".join(t.path for t in result.failures[:5])
    return Finding(
        "error",
        "gradients",
        None,
        f"wrong gradients in {len(result.failures)} of {len(result.tensors)} tensors "
        f"(e.g. {wrong}; {result.tolerances.describe()})",
        ADVICE_GRADIENTS,
        commands.gradcheck(),
    )


def size_finding(params: int, macs: int, commands: FollowUps) -> Finding | None:
    """Only for a tiny model: the findings above cannot tell under-capacity apart."""
    if params >= TINY_MODEL_PARAMS:
        return None
    return Finding(
        "info",
        "size",
        None,
        f"the model is small: {params:,} parameters, {macs:,} MACs per image "
        f"(threshold {TINY_MODEL_PARAMS:,}); if the training loss stays high, make it larger",
        ADVICE_SIZE,
        commands.profile(),
    )
