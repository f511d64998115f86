"""Priors from images: a natural-image magnitude spectrum (MACO) and a PCA basis of the data.

MACO (Fel et al. 2023) fixes the Fourier magnitude of the synthesized image to the average
magnitude of natural images and lets the optimizer choose only the phase. Ours comes from the
photos that the sample packages ship (scikit-image, scikit-learn, matplotlib and foolbox's
ImageNet photos), computed offline by `scripts/make_spectrum.py` and shipped as package data
(`cnntool/data/natural_spectrum.npy`): nothing is downloaded.

The file holds one quadrant of the spectrum, (3, 129, 129) float16, at SPECTRUM_SIZE = 256
MAX_PCA_VALUES = 3 * 64 * 64  # a PCA of bigger images needs all of DATA in memory, N × values
MAX_PCA_IMAGES = 20000 px:
rows are |vertical frequency| 0..128, columns horizontal frequency 0..128, in cycles per 256
px, for the three decorrelated colour channels. Natural images' statistics do not change under
a left-right mirror, so the two signs of the vertical frequency are averaged into one row.
`magnitude_for(h, w)` resamples it to any image size by frequency in cycles per pixel.

`--prior-data DATA` replaces the photos by the user's own images: `spectrum_of` computes the
mean magnitude of DATA at the model's input size, and `PcaBasis.fit` a principal-component
basis (the Gaussian prior used for small grayscale models).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cnntool.errors import CnnToolError

SPECTRUM_SIZE = 256
MAX_PCA_VALUES = 3 * 64 * 64  # a PCA of bigger images needs all of DATA in memory, N × values
MAX_PCA_IMAGES = 20000
SPECTRUM_FILE = "natural_spectrum.npy"

# Olah et al. 2017 (lucid): square root of ImageNet's colour covariance; mixing three
# decorrelated channels through it gives natural colour statistics.
COLOR_CORRELATION = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR_CORRELATION = COLOR_CORRELATION / COLOR_CORRELATION.norm(dim=0).max()


def correlate_colors(x: Tensor) -> Tensor:
    """Decorrelated channels (N×3×H×W) -> natural RGB statistics; other channel counts pass."""
    if x.shape[1] != 3:
        return x
    return torch.einsum("ij,njhw->nihw", COLOR_CORRELATION.to(x), x)


def decorrelate_colors(x: Tensor) -> Tensor:
    """The inverse of `correlate_colors`."""
    if x.shape[1] != 3:
        return x
    return torch.einsum("ij,njhw->nihw", torch.linalg.inv(COLOR_CORRELATION).to(x), x)


def spectrum_of(
    batches: Iterable[Tensor], *, decorrelate: bool = True, window: bool = False
) -> Tensor:
    """Mean Fourier magnitude |rfft2| (orthonormal) of [0, 1] pixel batches N×C×H×W: C×H×(W//2+1).

    `decorrelate` first maps RGB to lucid's decorrelated colours (the space MACO draws in);
    `window` multiplies each image by a 2-D Hann window first, so that the jump between
    opposite borders of a photo (the FFT sees it as periodic) does not add a cross of
    horizontal and vertical energy that natural images do not have. Digits on a black ground
    are periodic already and need none.
    """
    total, count = None, 0
    for batch in batches:
        x = batch.double()
        if decorrelate:
            x = decorrelate_colors(x)
        if window:
            h, w = x.shape[-2:]
            x = x * (
                torch.hann_window(h, periodic=False, dtype=x.dtype)[:, None]
                * torch.hann_window(w, periodic=False, dtype=x.dtype)[None, :]
            )
        magnitude = torch.fft.rfft2(x, norm="ortho").abs().sum(0)
        total = magnitude if total is None else total + magnitude
        count += len(batch)
    if not count:
        raise CnnToolError("no images to compute a spectrum from")
    return (total / count).float()


def fold_quadrant(magnitude: Tensor) -> Tensor:
    """C×S×(S//2+1) magnitudes (S even) -> the C×(S//2+1)×(S//2+1) quadrant, averaging the rows
    of vertical frequency +k and -k (a mirror-symmetric estimate)."""
    size = magnitude.shape[-2]
    rows = torch.arange(size // 2 + 1)
    return (magnitude[:, rows] + magnitude[:, (-rows) % size]) / 2


@lru_cache(maxsize=1)
def natural_quadrant() -> Tensor:
    """The packaged natural-image spectrum quadrant (3, 129, 129), float32."""
    path = resources.files("cnntool.data").joinpath(SPECTRUM_FILE)
    with path.open("rb") as handle:
        return torch.from_numpy(np.load(handle).astype(np.float32))


def magnitude_for(quadrant: Tensor, height: int, width: int) -> Tensor:
    """A spectrum quadrant (C×Q×Q, Q = S/2 + 1) resampled to an image of height × width:
    C×height×(width//2+1), by frequency in cycles per pixel, bilinear in log magnitude.

    A frequency lower than the quadrant's lowest non-zero one (1/S) takes that one's value,
    so that the mean (the quadrant's DC term) never leaks into it; the DC term itself is 0:
    the image's mean is the sigmoid's midpoint, as in MACO (which standardizes the image)."""
    size = (quadrant.shape[-1] - 1) * 2
    fy = torch.fft.fftfreq(height, dtype=torch.float64).abs()[:, None] * size
    fx = torch.fft.rfftfreq(width, dtype=torch.float64)[None, :] * size
    fy, fx = torch.broadcast_tensors(fy, fx)
    radius = (fy**2 + fx**2).sqrt()
    lift = torch.where(
        (radius > 0) & (radius < 1), 1 / radius.clamp(min=1e-12), torch.ones_like(radius)
    )
    fy, fx = fy * lift, fx * lift
    # grid_sample's normalized coordinates with align_corners=True: index 0 -> -1, Q-1 -> +1
    last = quadrant.shape[-1] - 1
    grid = torch.stack([fx / last * 2 - 1, fy / last * 2 - 1], dim=-1)[None].float()
    log = quadrant.clamp(min=1e-12).log()[None]
    sampled = F.grid_sample(log, grid, mode="bilinear", align_corners=True)[0].exp()
    sampled[:, 0, 0] = 0.0
    return sampled


@dataclass(frozen=True)
class PcaBasis:
    """The data's mean and its first principal components, each scaled by its standard
    deviation: x = mean + z @ components is a Gaussian model of the data in which z ~ N(0, I).
    `mean` (D,), `components` (K, D), `shape` the image's C×H×W."""

    mean: Tensor
    components: Tensor
    shape: tuple[int, int, int]

    @staticmethod
    def fit(pixels: Tensor, count: int) -> PcaBasis:
        """The first `count` principal components of [0, 1] pixels N×C×H×W."""
        n = len(pixels)
        if n < 2:
            raise CnnToolError("a PCA prior needs at least 2 images")
        if pixels[0].numel() > MAX_PCA_VALUES:
            raise CnnToolError(
                f"a PCA prior is for small inputs (up to {MAX_PCA_VALUES} values, "
                f"e.g. 3×64×64); this model takes {tuple(pixels.shape[1:])}: "
                "use --param maco"
            )
        flat = pixels.reshape(n, -1).double()
        mean = flat.mean(0)
        _, singular, vectors = torch.linalg.svd(flat - mean, full_matrices=False)
        count = min(count, len(singular))
        scale = singular[:count] / math.sqrt(n - 1)
        return PcaBasis(
            mean.float(), (vectors[:count] * scale[:, None]).float(), tuple(pixels.shape[1:])
        )

    def coordinates(self, pixels: Tensor) -> Tensor:
        """Least-squares z for pixels N×C×H×W (the start image of a run)."""
        flat = pixels.reshape(len(pixels), -1).to(self.mean) - self.mean
        return torch.linalg.lstsq(self.components.T, flat.T).solution.T


def data_pixels(batches: Iterable[Tensor], limit: int | None = None) -> Tensor:
    """Concatenate [0, 1] pixel batches (at most `limit` images)."""
    parts: list[Tensor] = []
    total = 0
    for batch in batches:
        parts.append(batch)
        total += len(batch)
        if limit is not None and total >= limit:
            break
    if not parts:
        raise CnnToolError("the prior data holds no readable images")
    return torch.cat(parts)[:limit]
