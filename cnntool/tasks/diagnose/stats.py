"""Streaming per-unit statistics of one layer over a dataset, mergeable exactly across shards.

A "unit" is a channel (dim 1) of the layer's output; every (image, spatial position) is one
sample of every unit, so a conv layer of H×W positions gives H·W samples per image. Nothing is
stored per sample: the running state is a handful of (C,) vectors and the (C, C) co-moment
matrix, on the device, whatever the dataset's size.

Moments are accumulated in float64 and merged with Chan et al.'s parallel formula
(n = nA + nB, δ = meanB − meanA, M = MA + MB + δδᵀ·nA·nB/n): batch after batch and shard after
shard give the same mean, variance and correlation as one pass over stored activations, up to
float64 rounding. Counts (active, at a bound) and min/max are exact.

Definitions (what the report and JSON Lines call them):
- active fraction: share of samples where the unit is > 0; dead = never > 0;
- lifetime sparsity (Treves–Rolls, Vinje & Gallant 2000), per unit over its samples r ≥ 0:
  S = (1 − (Σr/n)² / (Σr²/n)) / (1 − 1/n): 0 = the same response everywhere, 1 = one sample
  only. Computed from the mean and variance: (Σr/n)²/(Σr²/n) = mean² / (mean² + var);
- population sparsity: the same formula across the C units of one sample (image, position),
  averaged over the samples where at least one unit is active ("silent" samples are counted
  apart, since the formula is 0/0 there);
- at a bound: the value is within `SATURATION_MARGIN` of the activation's range from its upper
  bound (and, for two-sided activations such as sigmoid/tanh, from its lower bound);
- correlation: Pearson r between channels with samples = (image, position), from the co-moment
  matrix; r is undefined (NaN) for a constant unit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SATURATION_MARGIN = 0.01  # of the activation's range (upper − lower)
CORRELATION_MAX_UNITS = 4096  # wider layers keep only the variances (C² co-moments get costly)


@dataclass(frozen=True)
class Bounds:
    """The output range of a bounded activation; `two_sided`: both ends saturate (sigmoid,
    tanh); otherwise only the upper one does (ReLU6: its lower end 0 is "inactive")."""

    lower: float
    upper: float
    two_sided: bool

    @property
    def margin(self) -> float:
        return SATURATION_MARGIN * (self.upper - self.lower)


class RunningStats:
    """The running statistics of one layer's C units (tensors on `device`)."""

    def __init__(
        self,
        units: int,
        device=None,
        *,
        bounds: Bounds | None = None,
        correlation: bool | None = None,
    ):
        self.units = units
        self.bounds = bounds
        self.correlation = units <= CORRELATION_MAX_UNITS if correlation is None else correlation
        f64 = dict(dtype=torch.float64, device=device)
        self.samples = 0  # per unit: images × positions
        self.images = 0
        self.positions = 0  # per image (H·W; 1 for a linear layer)
        self.mean = torch.zeros(units, **f64)
        # co-moments Σ(x_i − mean_i)(x_j − mean_j); only the diagonal when correlation is off
        self.comoment = torch.zeros((units, units) if self.correlation else (units,), **f64)
        self.minimum = torch.full((units,), math.inf, **f64)
        self.maximum = torch.full((units,), -math.inf, **f64)
        self.active = torch.zeros(units, dtype=torch.long, device=device)
        self.at_bound = torch.zeros(units, dtype=torch.long, device=device)
        self.population_sum = torch.zeros((), **f64)  # Σ over non-silent samples of their S
        self.population_samples = 0  # non-silent samples
        self.silent_samples = 0  # samples where no unit is > 0

    # ---- folding data in -------------------------------------------------------------------

    def update(self, activations: torch.Tensor) -> None:
        """Fold in a batch: (B, C), (B, C, L) or (B, C, H, W), any float dtype."""
        if activations.dim() < 2 or activations.shape[1] != self.units:
            raise ValueError(
                f"expected (B, {self.units}, ...) activations, got {tuple(activations.shape)}"
            )
        batch, units = activations.shape[:2]
        positions = math.prod(activations.shape[2:])
        if batch * positions == 0:
            return
        # One unit-major copy (C, N), every (image, position) a sample of every unit, at the
        # activations' own precision (at least float32): each statistic below is one pass
        # along contiguous rows or columns. Counts, min/max and the per-sample sums over the
        # C units (population sparsity) are exact or short sums; the sums that run over the
        # whole dataset (moments, co-moments) are taken in float64.
        dtype = torch.promote_types(activations.dtype, torch.float32)
        x = torch.empty((units, batch, positions), dtype=dtype, device=activations.device)
        x.copy_(activations.detach().reshape(batch, units, positions).transpose(0, 1))
        x = x.view(units, -1)
        self.minimum = torch.minimum(self.minimum, x.amin(dim=1).double())
        self.maximum = torch.maximum(self.maximum, x.amax(dim=1).double())
        self.active += _count(x > 0)
        if self.bounds is not None:
            self.at_bound += self._at_bound(x)
        self._population(x.clamp_min(0))
        x = x.double()
        batch_mean = x.mean(dim=1)
        centered = x.sub_(batch_mean[:, None])  # our own copy: centre it in place
        if self.correlation:
            batch_comoment = centered @ centered.T
        else:
            batch_comoment = torch.linalg.vector_norm(centered, dim=1) ** 2
        self._merge_moments(x.shape[1], batch_mean, batch_comoment)
        self.images += batch
        self.positions = positions

    def _at_bound(self, x: torch.Tensor) -> torch.Tensor:
        """Per unit, how many samples are within the margin of a bound."""
        bounds = self.bounds
        stuck = _count(x >= bounds.upper - bounds.margin)
        if bounds.two_sided:
            stuck += _count(x <= bounds.lower + bounds.margin)
        return stuck

    def _population(self, r: torch.Tensor) -> None:
        """Treves–Rolls across units per sample (r = the activations clamped at 0: on a
        rectified layer that changes nothing), over the samples where any unit is > 0."""
        if self.units < 2:
            return
        ones = r.new_ones(self.units)
        total = torch.mv(r.T, ones)  # per sample: Σ r and Σ r² over the units
        squares = torch.mv((r * r).T, ones)
        heard = total > 0
        ratio = (total / self.units) ** 2 / (squares / self.units).clamp_min(
            torch.finfo(r.dtype).tiny
        )
        sparsity = ((1 - ratio) / (1 - 1 / self.units)).clamp(0, 1)
        self.population_sum += sparsity[heard].double().sum()
        heard_count = int(heard.sum())
        self.population_samples += heard_count
        self.silent_samples += r.shape[1] - heard_count

    def _merge_moments(self, count: int, mean: torch.Tensor, comoment: torch.Tensor) -> None:
        """Chan et al.'s parallel update of (samples, mean, co-moments)."""
        before = self.samples
        total = before + count
        delta = mean - self.mean
        self.mean = self.mean + delta * (count / total)
        weight = before * count / total
        if self.correlation:
            self.comoment = self.comoment + comoment + torch.outer(delta, delta) * weight
        else:
            self.comoment = self.comoment + comoment + delta * delta * weight
        self.samples = total

    def merge(self, other: RunningStats) -> None:
        """Fold in another shard's state (same layer)."""
        if other.units != self.units or other.correlation != self.correlation:
            raise ValueError("cannot merge statistics of different layers")
        if other.samples:
            device = self.mean.device
            self._merge_moments(other.samples, other.mean.to(device), other.comoment.to(device))
            self.minimum = torch.minimum(self.minimum, other.minimum.to(device))
            self.maximum = torch.maximum(self.maximum, other.maximum.to(device))
            self.active += other.active.to(device)
            self.at_bound += other.at_bound.to(device)
            self.positions = other.positions
        self.population_sum += other.population_sum.to(self.population_sum.device)
        self.population_samples += other.population_samples
        self.silent_samples += other.silent_samples
        self.images += other.images

    # ---- travelling between ranks -------------------------------------------------------------

    _TENSORS = ("mean", "comoment", "minimum", "maximum", "active", "at_bound", "population_sum")
    _NUMBERS = ("samples", "images", "positions", "population_samples", "silent_samples")

    def state_dict(self) -> dict:
        """CPU tensors and plain numbers (for gathering across ranks)."""
        state = {name: getattr(self, name).cpu() for name in self._TENSORS}
        state.update({name: getattr(self, name) for name in self._NUMBERS})
        state.update(
            units=self.units,
            correlation=self.correlation,
            bounds=None if self.bounds is None else vars(self.bounds).copy(),
        )
        return state

    @classmethod
    def from_state(cls, state: dict, device=None) -> RunningStats:
        bounds = Bounds(**state["bounds"]) if state["bounds"] else None
        stats = cls(state["units"], device, bounds=bounds, correlation=state["correlation"])
        for name in cls._TENSORS:
            setattr(stats, name, state[name].to(device))
        for name in cls._NUMBERS:
            setattr(stats, name, state[name])
        return stats

    # ---- what they mean -------------------------------------------------------------------------

    def variance(self) -> torch.Tensor:
        """Population variance per unit (divided by the number of samples)."""
        diagonal = self.comoment.diagonal() if self.correlation else self.comoment
        return (diagonal / max(self.samples, 1)).clamp_min(0)

    def correlation_matrix(self) -> torch.Tensor | None:
        """(C, C) Pearson r; NaN in the rows and columns of constant units; None when the layer
        was too wide to keep co-moments."""
        if not self.correlation:
            return None
        diagonal = self.comoment.diagonal()
        scale = diagonal.sqrt()
        r = self.comoment / (scale[:, None] * scale[None, :])
        constant = diagonal <= 0
        r[constant, :] = math.nan
        r[:, constant] = math.nan
        return r.clamp(-1, 1)

    def lifetime_sparsity(self) -> torch.Tensor:
        """Treves–Rolls per unit over its samples (r ≥ 0 assumed); NaN for an all-zero unit."""
        mean, var = self.mean, self.variance()
        second = mean * mean + var
        ratio = torch.where(
            second > 0, mean * mean / second.clamp_min(1e-300), torch.full_like(second, math.nan)
        )
        n = max(self.samples, 2)
        return ((1 - ratio) / (1 - 1 / n)).clamp(0, 1)

    def population_sparsity(self) -> float | None:
        if self.population_samples == 0:
            return None
        return float(self.population_sum) / self.population_samples


def _count(mask: torch.Tensor) -> torch.Tensor:
    """Per row, how many entries of a (C, N) boolean mask are set, as int64. A float
    matrix-vector product is several times faster than a boolean sum on CPUs, and exact while
    N < 2**24 (float32 integers)."""
    if mask.shape[1] >= 2**24:
        return mask.sum(dim=1)
    ones = torch.ones(mask.shape[1], dtype=torch.float32, device=mask.device)
    return torch.mv(mask.to(torch.float32), ones).round().long()
