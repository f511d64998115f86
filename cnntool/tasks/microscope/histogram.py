"""Streaming per-unit activation histograms: fixed memory, exact merges across batches and ranks.

Each unit keeps `bins` counts on a grid of power-of-two bin widths aligned at multiples of the
width: bin i of a unit covers [(origin + i)·2^k, (origin + i + 1)·2^k). The grid is a function
of the unit's minimum and maximum alone (the "canonical grid"): the smallest k (not below
`FINEST`) for which both fit in `bins` bins, starting at the bin holding the minimum. When the
range grows, k only grows, and every old bin lies inside exactly one new bin (widths are powers
of two and bins are aligned), so re-binning the old counts is exact. Bins are never narrower
than 2^FINEST, nor than float32's resolution at the unit's largest |value| (2^(e − 24) for
|value| < 2^(e+1)), so bin numbers stay small integers. Hence the counts after any
sequence of batches, and after merging any split of the data across ranks, are those of all
the data on the canonical grid of its overall minimum and maximum: the same numbers whatever
the batching or the sharding.

Every (image, position) of a unit is one sample, as in diagnose's statistics. Non-finite values
are not binned; they are counted apart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from cnntool.core.session import Consumer

BINS = 64
FINEST = -24  # the narrowest bin is 2^-24 wide: finer is float32 noise around one value
MANTISSA = 24  # and no finer than float32's resolution at the unit's largest magnitude


class UnitHistograms:
    """The running histograms of U units (tensors on `device`)."""

    def __init__(self, units: int, bins: int = BINS, device=None):
        if bins < 2:
            raise ValueError("a histogram needs at least 2 bins")
        self.units, self.bins = units, bins
        self.counts = torch.zeros((units, bins), dtype=torch.long, device=device)
        self.exponent = torch.full((units,), FINEST, dtype=torch.long, device=device)  # k
        self.origin = torch.zeros(units, dtype=torch.long, device=device)
        self.minimum = torch.full((units,), math.inf, dtype=torch.float64, device=device)
        self.maximum = torch.full((units,), -math.inf, dtype=torch.float64, device=device)
        self.nonfinite = torch.zeros(units, dtype=torch.long, device=device)

    # ---- folding data in ---------------------------------------------------------------------

    def update(self, activations: torch.Tensor) -> None:
        """Fold in a batch: (B, U), (B, U, L) or (B, U, H, W).

        Bin numbers are computed in the activations' own precision (float32 at least): a few
        passes over the batch in its own layout, then one bincount; no float64 copy."""
        if activations.dim() < 2 or activations.shape[1] != self.units:
            raise ValueError(
                f"expected (B, {self.units}, ...) activations, got {tuple(activations.shape)}"
            )
        batch, units = activations.shape[:2]
        x = activations.detach().reshape(batch, units, -1)
        if x.numel() == 0:
            return
        if x.dtype not in (torch.float32, torch.float64):
            x = x.float()  # half, bfloat16 (exact) or integers
        low, high = x.amin(dim=(0, 2)), x.amax(dim=(0, 2))  # NaN and inf show here
        finite = None
        if not bool((torch.isfinite(low) & torch.isfinite(high)).all()):
            finite = torch.isfinite(x)
            self.nonfinite += (~finite).sum(dim=(0, 2))
            low = x.masked_fill(~finite, math.inf).amin(dim=(0, 2))
            high = x.masked_fill(~finite, -math.inf).amax(dim=(0, 2))
        self._regrid(
            torch.minimum(self.minimum, low.double()), torch.maximum(self.maximum, high.double())
        )
        if finite is not None:
            x = x.masked_fill(~finite, 0.0)
        # unit u's value x falls in bin floor(x · 2^-k_u) − origin_u, counted at u·bins + bin;
        # x · 2^-k is exact (a power of two), and so is adding the integer offset in float
        # while every offset is below float32's 2^24 integers (else in int64)
        offset = self.origin - torch.arange(units, device=x.device) * self.bins
        scaled = torch.mul(x, torch.exp2(-self.exponent.to(x.dtype))[None, :, None]).floor_()
        if int(offset.abs().max()) < 2**23:
            index = scaled.sub_(offset.to(x.dtype)[None, :, None]).to(torch.int32)
        else:
            index = scaled.to(torch.int64).sub_(offset[None, :, None])
        if finite is not None:
            index = index[finite]
        self.counts += torch.bincount(index.flatten(), minlength=units * self.bins).view(
            units, self.bins
        )

    def merge(self, other: UnitHistograms) -> None:
        """Fold in another shard's histograms (same units and bins)."""
        if (other.units, other.bins) != (self.units, self.bins):
            raise ValueError("cannot merge histograms of different units or bins")
        device = self.counts.device
        low = torch.minimum(self.minimum, other.minimum.to(device))
        high = torch.maximum(self.maximum, other.maximum.to(device))
        other_counts = other._on_grid(*self._canonical(low, high), device)
        self._regrid(low, high)
        self.counts += other_counts
        self.nonfinite += other.nonfinite.to(device)

    # ---- the grid ----------------------------------------------------------------------------

    def _canonical(
        self, low: torch.Tensor, high: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(exponent, origin) per unit: the smallest k ≥ the finest allowed with
        floor(high/2^k) − floor(low/2^k) < bins; units that saw nothing keep (FINEST, 0)."""
        seen = torch.isfinite(low) & torch.isfinite(high)
        low = torch.where(seen, low, torch.zeros_like(low))
        high = torch.where(seen, high, torch.zeros_like(high))
        span = (high - low).clamp_min(0)
        # a first guess from the span, then up by one until it fits (at most twice)
        guess = torch.floor(torch.log2(span.clamp_min(2.0**FINEST) / (self.bins - 1))).long()
        magnitude = torch.maximum(low.abs(), high.abs()).clamp_min(2.0**FINEST)
        finest = (torch.floor(torch.log2(magnitude)).long() - MANTISSA).clamp_min(FINEST)
        exponent = torch.maximum(guess, finest)
        for _ in range(64):
            scale = torch.exp2(-exponent.double())
            too_wide = (torch.floor(high * scale) - torch.floor(low * scale)) >= self.bins
            if not bool(too_wide.any()):
                break
            exponent = exponent + too_wide.long()
        origin = torch.floor(low * torch.exp2(-exponent.double())).long()
        return torch.where(seen, exponent, torch.full_like(exponent, FINEST)), torch.where(
            seen, origin, torch.zeros_like(origin)
        )

    def _on_grid(self, exponent: torch.Tensor, origin: torch.Tensor, device=None) -> torch.Tensor:
        """These counts re-binned onto a grid at least as coarse (exact: aligned powers of 2)."""
        device = device if device is not None else self.counts.device
        shift = exponent.to(device) - self.exponent.to(device)
        if bool((shift < 0).any()):
            raise ValueError("a histogram can only be re-binned onto a coarser grid")
        # bin numbers are below 2^26 in magnitude: exact in float64, as are the powers of two
        old = (
            self.origin.to(device)[:, None] + torch.arange(self.bins, device=device)[None, :]
        ).double()
        new = (
            torch.floor(old * torch.exp2(-shift.double())[:, None]).long()
            - origin.to(device)[:, None]
        )
        counts = self.counts.to(device)
        used = counts > 0
        if bool(((new < 0) | (new >= self.bins))[used].any()):
            raise AssertionError("re-binning lost counts: the grid does not cover the range")
        rows = torch.arange(self.units, device=device)[:, None].expand_as(new)
        flat = (rows * self.bins + new.clamp(0, self.bins - 1))[used]
        out = torch.zeros(self.units * self.bins, dtype=torch.long, device=device)
        out.index_add_(0, flat, counts[used])
        return out.view(self.units, self.bins)

    def _regrid(self, low: torch.Tensor, high: torch.Tensor) -> None:
        exponent, origin = self._canonical(low, high)
        if not (torch.equal(exponent, self.exponent) and torch.equal(origin, self.origin)):
            self.counts = self._on_grid(exponent, origin)
            self.exponent, self.origin = exponent, origin
        self.minimum, self.maximum = low, high

    # ---- reading and travelling ----------------------------------------------------------------

    def unit(self, u: int) -> tuple[tuple[float, ...], tuple[int, ...]]:
        """(edges, counts) of unit u, trimmed to its non-empty range (one more edge than
        counts); empty when the unit saw no finite value."""
        counts = self.counts[u].cpu()
        nonzero = counts.nonzero().flatten()
        if nonzero.numel() == 0:
            return (), ()
        first, last = int(nonzero[0]), int(nonzero[-1]) + 1
        width = 2.0 ** int(self.exponent[u])
        origin = int(self.origin[u])
        edges = tuple((origin + i) * width for i in range(first, last + 1))
        return edges, tuple(int(c) for c in counts[first:last])

    _TENSORS = ("counts", "exponent", "origin", "minimum", "maximum", "nonfinite")

    def state_dict(self) -> dict:
        state = {name: getattr(self, name).cpu() for name in self._TENSORS}
        state.update(units=self.units, bins=self.bins)
        return state

    @classmethod
    def from_state(cls, state: dict, device=None) -> UnitHistograms:
        histograms = cls(state["units"], state["bins"], device)
        for name in cls._TENSORS:
            setattr(histograms, name, state[name].to(device))
        return histograms


def merged_histograms(states: Sequence[dict | None]) -> UnitHistograms | None:
    """One UnitHistograms from the ranks' state dicts (None: a rank that saw nothing)."""
    result = None
    for state in filter(None, states):
        part = UnitHistograms.from_state(state)
        if result is None:
            result = part
        else:
            result.merge(part)
    return result


class HistogramConsumer(Consumer):
    """A scan consumer (core.session) folding `layer`'s output, for the chosen `units` (None:
    every channel), into UnitHistograms."""

    def __init__(
        self,
        layer: str,
        *,
        units: Sequence[int] | None,
        bins: int = BINS,
        state: UnitHistograms | None = None,
    ):
        self.layers, self.units, self.bins, self.state = (layer,), units, bins, state

    def observe(self, layer: str, output: torch.Tensor) -> None:
        if output.dim() < 2:
            raise ValueError(f"layer '{layer}' gives no (batch, units, …) output")
        chosen = output if self.units is None else output[:, list(self.units)]
        if self.state is None:
            self.state = UnitHistograms(chosen.shape[1], self.bins, chosen.device)
        self.state.update(chosen)
