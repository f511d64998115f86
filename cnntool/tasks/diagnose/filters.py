"""Per-filter health of a convolution: noise, redundancy, norms ("filters too noisy, too
correlated, lack structure").

- noise score: the share of a filter's spectral energy at high spatial frequency. Each (output,
  input) kernel slice gets its 2-D DFT over the kernel's own grid; the energies |F(u, v)|² are
  summed over the filter's input slices; the score is the energy at radial frequency
  √(u² + v²) > `HIGH_FREQUENCY` cycles/pixel (Nyquist is 0.5) divided by all the energy, the
  mean (DC) included. White noise spreads its energy evenly over the frequency bins, so its
  expected score is the share of bins above the cut (`white_noise_score`, 4/9 for 3×3):
  learned filters (smooth blobs, edges) score well below it, noise near it. A 1×1 kernel has no
  spatial frequencies: its score is None ("n/a").
- redundancy: the largest cosine similarity (signed, uncentered) between the filter and another
  filter of the same group (near 1: a duplicate; a negated copy scores −1 and is not redundant
  before a ReLU). A depthwise filter is alone in its group: None.
- norm: the L2 norm of the filter's weights, as the layer stores them (BatchNorm not folded).

Weights are the layer's own, unfolded: what `cnntool visualize filters --layer L` draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from cnntool.errors import CnnToolError

HIGH_FREQUENCY = 0.4  # cycles per pixel


@dataclass(frozen=True)
class FilterReport:
    layer: str
    kernel: tuple[int, int]
    groups: int
    inputs_per_filter: int  # input slices per filter (in_channels / groups)
    noise: tuple[float, ...] | None  # per filter; None for 1×1 kernels
    white_noise_score: float | None  # the expected noise score of random weights
    redundancy: tuple[float, ...] | None  # per filter; None for depthwise convolutions
    most_similar: tuple[int, ...] | None  # per filter, the other filter it is closest to
    norms: tuple[float, ...]

    @property
    def median_noise(self) -> float | None:
        return None if self.noise is None else float(torch.tensor(self.noise).nanmedian())


def filter_report(model, layer: str) -> FilterReport:
    """The report of Conv2d `layer` (a module path)."""
    module = dict(model.named_modules()).get(layer)
    if not isinstance(module, nn.Conv2d):
        raise CnnToolError(f"layer '{layer}' is not a Conv2d; filters exist only for convolutions")
    # the weights as stored, as `cnntool visualize filters` shows them without --fold-bn (its
    # per-filter statistics are not needed here: they cost a Python loop per filter)
    weight = module.weight.detach().to("cpu", torch.float64)  # (out, in/groups, kh, kw)
    kernel = (weight.shape[2], weight.shape[3])
    noise, white = _noise_scores(weight)
    redundancy, partner = _redundancy(weight, module.groups)
    norms = weight.flatten(1).norm(dim=1)
    return FilterReport(
        layer,
        kernel,
        module.groups,
        weight.shape[1],
        noise,
        white,
        redundancy,
        partner,
        tuple(norms.tolist()),
    )


def high_frequency_mask(kernel: tuple[int, int]) -> torch.Tensor:
    """(kh, kw) booleans: the DFT bins above HIGH_FREQUENCY cycles/pixel (fft order)."""
    fu = torch.fft.fftfreq(kernel[0], dtype=torch.float64)
    fv = torch.fft.fftfreq(kernel[1], dtype=torch.float64)
    return (fu[:, None] ** 2 + fv[None, :] ** 2).sqrt() > HIGH_FREQUENCY


def _noise_scores(weight: torch.Tensor) -> tuple[tuple[float, ...] | None, float | None]:
    kernel = (weight.shape[2], weight.shape[3])
    if math.prod(kernel) == 1:
        return None, None
    high = high_frequency_mask(kernel)
    energy = (torch.fft.fft2(weight).abs() ** 2).sum(dim=1)  # (out, kh, kw)
    total = energy.sum(dim=(1, 2))
    score = torch.where(
        total > 0,
        energy[:, high].sum(dim=1) / total.clamp_min(1e-300),
        torch.full_like(total, math.nan),
    )
    return tuple(score.tolist()), float(high.double().mean())


def _redundancy(weight: torch.Tensor, groups: int):
    """Max cosine similarity to another filter of the same group (and which one)."""
    out = weight.shape[0]
    per_group = out // max(groups, 1)
    if per_group < 2:
        return None, None
    flat = weight.flatten(1)
    unit = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-300)
    cosine = unit @ unit.T
    group_of = torch.arange(out) // per_group
    other = (group_of[:, None] != group_of[None, :]) | torch.eye(out, dtype=torch.bool)
    best = cosine.masked_fill(other, -math.inf).max(dim=1)
    return tuple(best.values.tolist()), tuple(best.indices.tolist())
