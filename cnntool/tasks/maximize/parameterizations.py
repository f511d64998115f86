"""The learnable image: parameters -> N×C×H×W pixels in [0, 1].

- `PixelImage`: the sigmoid of free pixels (Simonyan et al. 2014; Yosinski et al. 2015 blur it).
- `FourierImage`: a spectrum scaled by 1/frequency, decorrelated colour, sigmoid (Olah et al.
  2017). With `closeness` and a start photo it is feature accentuation (Hamblin et al. 2024).
- `MacoImage`: only the Fourier phase is free; the magnitude is a fixed natural-image spectrum
  (Fel et al. 2023), so every image the optimizer can reach has natural-image energy at every
  frequency and cannot fill up with high-frequency noise.
- `PcaImage`: the data's mean plus principal components of the prior data, with a Gaussian
  prior on the coordinates: the image stays in the data's span (digits look like digits).

Penalties whose gradient is simple (accentuation's closeness, the Gaussian prior) are added to
the parameters' gradient by hand in `add_penalty_gradients`, after the objective's backward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from cnntool.errors import CnnToolError
from cnntool.tasks.maximize.config import MaximizeConfig
from cnntool.tasks.maximize.spectrum import (
    PcaBasis,
    correlate_colors,
    decorrelate_colors,
    magnitude_for,
    natural_quadrant,
)
from cnntool.tasks.maximize.transforms import gaussian_blur


@dataclass(frozen=True)
class ImagePrior:
    """What the prior data gives: a mean magnitude spectrum C×H×(W//2+1) at the model's input
    size (for "maco") and/or a PCA basis (for "pca")."""

    spectrum: Tensor | None = None
    basis: PcaBasis | None = None


def build_image(
    config: MaximizeConfig,
    shape: tuple[int, int, int, int],
    start: Tensor | None,
    generator: torch.Generator,
    device,
    prior: ImagePrior | None = None,
):
    """The parameterization `config.param` for a batch of `shape`, at `start` (C×H×W pixels in
    [0, 1]) or at seeded noise."""
    if config.param == "pixel":
        return PixelImage.create(shape, start, generator, device)
    if config.param == "fourier":
        return FourierImage.create(shape, start, generator, device, config.closeness)
    if config.param == "maco":
        spectrum = (
            prior.spectrum
            if prior is not None and prior.spectrum is not None
            else natural_magnitude(shape[1], *shape[2:])
        )
        return MacoImage.create(shape, start, generator, device, spectrum)
    if config.param == "pca":
        if prior is None or prior.basis is None:
            raise CnnToolError("the pca parameterization needs prior data (--prior-data DATA)")
        return PcaImage.create(shape, start, generator, device, prior.basis, config.prior)
    raise CnnToolError(
        f"unknown parameterization '{config.param}'; use maco, fourier, pixel or pca"
    )


def _logits(start: Tensor, shape, device) -> Tensor:
    """Pixels -> the pre-sigmoid values that give them back (clamped to stay finite)."""
    return torch.logit(start.clamp(0.02, 0.98)).to(device).expand(shape)


class PixelImage:
    """Free pixels through a sigmoid."""

    def __init__(self, param: Tensor):
        self.param = param

    @classmethod
    def create(cls, shape, start, generator, device) -> PixelImage:
        init = (
            _logits(start, shape, device).clone()
            if start is not None
            else (torch.randn(shape, generator=generator) * 0.1).to(device)
        )
        return cls(init.requires_grad_())

    def pixels(self) -> Tensor:
        return torch.sigmoid(self.param)

    @torch.no_grad()
    def blur(self, sigma: float) -> None:
        """Gaussian blur of the parameters (Yosinski et al.)."""
        self.param.copy_(gaussian_blur(self.param, sigma))

    def add_penalty_gradients(self) -> None:
        pass


class FourierImage:
    """lucid's fft_image: a spectrum (real and imaginary parts) scaled by 1/frequency, then the
    inverse FFT, decorrelated colour and a sigmoid. With a start photo and `closeness` > 0, the
    gradient of closeness · Σ|X − X_start|² is added (feature accentuation): X the spectrum
    (orthonormal rfft of the decorrelated pre-sigmoid image), so by Parseval about the squared
    distance to the photo in that pixel space. At equilibrium each Fourier coefficient moves
    by the objective's gradient there over 2·closeness."""

    def __init__(self, param: Tensor, shape, closeness: float = 0.0):
        self.param, self.shape, self.closeness = param, shape, closeness
        h, w = shape[2:]
        fy = torch.fft.fftfreq(h, device=param.device)[:, None]
        fx = torch.fft.rfftfreq(w, device=param.device)[None, :]
        freq = (fy**2 + fx**2).sqrt().clamp(min=1.0 / max(h, w))
        # 1/f scaling (as lucid): natural images' spectrum falls as 1/f, so a unit step in
        # each parameter moves the image like natural-image statistics would. With the
        # orthonormal FFT and lucid's /4 this is lucid's fft_image exactly.
        self.scale = (1.0 / freq) / 4.0
        self.origin = param.detach().clone() if closeness else None

    @classmethod
    def create(cls, shape, start, generator, device, closeness: float = 0.0) -> FourierImage:
        n, c, h, w = shape
        if start is None:
            spectrum = (torch.randn((n, c, h, w // 2 + 1, 2), generator=generator) * 0.01).to(
                device
            )
            return cls(spectrum.requires_grad_(), shape)
        probe = cls(torch.zeros(1, device=device), shape)  # for its scale only
        colors = decorrelate_colors(_logits(start, shape, device))
        spectrum = torch.fft.rfft2(colors, norm="ortho") / probe.scale
        return cls(torch.view_as_real(spectrum).contiguous().requires_grad_(), shape, closeness)

    def pixels(self) -> Tensor:
        spectrum = torch.view_as_complex(self.param) * self.scale
        colors = torch.fft.irfft2(spectrum, s=self.shape[2:], norm="ortho")
        return torch.sigmoid(correlate_colors(colors))

    def blur(self, sigma: float) -> None:
        pass  # the 1/f scaling already favours low frequencies

    @torch.no_grad()
    def add_penalty_gradients(self) -> None:
        if self.origin is not None:  # X = θ·scale: d/dθ c·|X − X0|² = 2c·scale²·(θ − θ0)
            difference = (self.param - self.origin) * self.scale[..., None].square()
            self.param.grad.add_(difference, alpha=2 * self.closeness)


def natural_magnitude(channels: int, height: int, width: int) -> Tensor:
    """The packaged natural-image spectrum at height × width: 3 decorrelated colour channels,
    or for one channel their root mean square (the energy of a gray photo's channel)."""
    magnitude = magnitude_for(natural_quadrant(), height, width)
    if channels == 3:
        return magnitude
    if channels == 1:
        return magnitude.square().mean(0, keepdim=True).sqrt()
    raise CnnToolError(
        f"maco's natural spectrum has 1 or 3 channels, not {channels}; "
        "give --prior-data to compute one from your data"
    )


class MacoImage:
    """MACO: pixels = sigmoid(colour(irfft2(M · e^{iφ}))), only the phase φ learns.

    M is fixed: the spectrum given, with its mean (DC) term 0 and scaled so that the image
    before the colour transform has unit variance over all its pixels and channels (MACO
    standardizes the image; with M fixed, Parseval makes that variance a constant, so the
    scaling is done once here). The rfft's columns of horizontal frequency 0 and W/2 hold
    both +k and -k vertical frequencies: their phase is made odd (φ(-k) = -φ(k), 0 where
    k = -k) so that the spectrum is the FFT of a real image and keeps exactly the magnitude M.
    """

    def __init__(self, phase: Tensor, magnitude: Tensor, shape):
        self.param, self.shape = phase, shape
        h, w = shape[2:]
        self.edge_columns = [0] + ([w // 2] if w % 2 == 0 else [])
        self.mirror_rows = (-torch.arange(h, device=phase.device)) % h
        magnitude = magnitude.to(phase.device, phase.dtype).clone()
        magnitude[:, 0, 0] = 0.0
        plain = torch.fft.irfft2(
            torch.polar(magnitude, torch.zeros_like(magnitude)), s=(h, w), norm="ortho"
        )
        self.magnitude = magnitude / plain.square().mean().sqrt().clamp(min=1e-12)

    @classmethod
    def create(cls, shape, start, generator, device, magnitude: Tensor) -> MacoImage:
        n, c, h, w = shape
        if magnitude.shape != (c, h, w // 2 + 1):
            raise CnnToolError(
                f"the spectrum is {tuple(magnitude.shape)}, the image needs {(c, h, w // 2 + 1)}"
            )
        if start is not None:  # the photo's phase under the natural magnitude
            phase = torch.fft.rfft2(
                decorrelate_colors(_logits(start, shape, device)), norm="ortho"
            ).angle()
        else:
            phase = (torch.rand((n, c, h, w // 2 + 1), generator=generator) * 2 - 1) * math.pi
        return cls(phase.to(device).contiguous().requires_grad_(), magnitude, shape)

    def odd_phase(self) -> Tensor:
        """The phase with its edge columns made odd in the vertical frequency."""
        phase = self.param
        pieces = []
        start = 0
        for column in self.edge_columns:
            pieces.append(phase[..., start:column])
            edge = phase[..., column : column + 1]
            pieces.append((edge - edge[..., self.mirror_rows, :]) / 2)
            start = column + 1
        pieces.append(phase[..., start:])
        return torch.cat([p for p in pieces if p.shape[-1]], dim=-1)

    def spectrum(self) -> Tensor:
        """The complex spectrum M · e^{iφ} of the image before the colour transform."""
        return torch.polar(self.magnitude.expand_as(self.param), self.odd_phase())

    def decorrelated(self) -> Tensor:
        """The image before the colour transform and the sigmoid."""
        return torch.fft.irfft2(self.spectrum(), s=self.shape[2:], norm="ortho")

    def pixels(self) -> Tensor:
        return torch.sigmoid(correlate_colors(self.decorrelated()))

    def blur(self, sigma: float) -> None:
        pass

    def add_penalty_gradients(self) -> None:
        pass


class PcaImage:
    """pixels = clamp(mean + z @ components, 0, 1): z are coordinates in units of each
    principal component's standard deviation, and the Gaussian prior `prior` · |z|² (the
    data's log-density under a Gaussian model, up to a constant) keeps them plausible."""

    def __init__(self, param: Tensor, basis: PcaBasis, shape, prior: float):
        self.param, self.shape, self.prior = param, shape, prior
        self.mean = basis.mean.to(param.device)
        self.components = basis.components.to(param.device)

    @classmethod
    def create(cls, shape, start, generator, device, basis: PcaBasis, prior: float) -> PcaImage:
        if tuple(basis.shape) != tuple(shape[1:]):
            raise CnnToolError(
                f"the prior data's images are {tuple(basis.shape)} after "
                f"preprocessing; the model takes {tuple(shape[1:])}"
            )
        n, k = shape[0], len(basis.components)
        z = (
            basis.coordinates(start[None]).expand(n, k).clone()
            if start is not None
            else torch.randn((n, k), generator=generator) * 0.01
        )
        return cls(z.to(device).requires_grad_(), basis, shape, prior)

    def pixels(self) -> Tensor:
        flat = torch.addmm(self.mean, self.param, self.components)
        return flat.clamp(0, 1).view(self.shape)

    def blur(self, sigma: float) -> None:
        pass

    @torch.no_grad()
    def add_penalty_gradients(self) -> None:
        if self.prior:
            self.param.grad.add_(self.param, alpha=2 * self.prior)
