"""Activation maximization: synthesize the inputs that most excite units or classes.

Gradient ascent on a parameterized image (Erhan et al. 2009; Simonyan et al. 2014), made to
look like something by the tricks of Yosinski et al. 2015 (L2 decay, total variation, blur
every few steps) and Olah et al. 2017 (Fourier-space parameterization with decorrelated colour,
random jitter / scale / rotation so that the image must work under all of them). Several units
are optimized together as one batch: image k maximizes unit k.

`MaximizeConfig.for_input(shape)` gives the documented defaults: `imagenet_defaults` for
224-px colour inputs (lite0) and `small_defaults` for MNIST-sized ones (LeNet-5, 28 px).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnntool.core.hooks import capture, preserved_state
from cnntool.core.layers import resolve_layer
from cnntool.core.preprocessing import Preprocessing
from cnntool.errors import CnnToolError

# Olah et al. 2017 (lucid): square root of ImageNet's colour covariance; mixing three
# decorrelated channels through it gives natural colour statistics.
_COLOR_CORRELATION = torch.tensor([[0.26, 0.09, 0.02],
                                   [0.27, 0.00, -0.05],
                                   [0.27, -0.09, 0.03]])
_COLOR_CORRELATION = _COLOR_CORRELATION / _COLOR_CORRELATION.norm(dim=0).max()


@dataclass(frozen=True)
class MaximizeConfig:
    """How to optimize. Pixel values live in [0, 1] before the model's normalization.

    - `param`: "fourier" (spectrum scaled by 1/frequency, decorrelated colour, sigmoid) or
      "pixel" (sigmoid of free pixels).
    - `steps`, `lr` (Adam).
    - `pad` (reflect, px), `jitter` (max shift, px), `scales` (random zoom range),
      `rotate` (max degrees): random per step, applied before the model.
    - `l2` (decay of pixels towards grey), `tv` (total variation weight),
      `blur_every` / `blur_sigma` (Gaussian blur of the pixel parameters; pixel param only).
    """

    param: str = "fourier"
    steps: int = 256
    lr: float = 0.05
    pad: int = 12
    jitter: int = 8
    scales: tuple[float, float] = (0.9, 1.1)
    rotate: float = 5.0
    l2: float = 0.0
    tv: float = 0.0
    blur_every: int = 0
    blur_sigma: float = 0.5

    @staticmethod
    def for_input(shape: Sequence[int]) -> "MaximizeConfig":
        """The documented defaults for an input of shape (C, H, W)."""
        return small_defaults() if min(shape[1:]) <= 64 else imagenet_defaults()


def imagenet_defaults() -> MaximizeConfig:
    """224-px colour models (lite0): Fourier + decorrelated colour, jitter 8 px, scale 0.9–1.1,
    rotation ±5°, 256 Adam steps at lr 0.05 (Olah et al. 2017's lucid recipe, half its steps)."""
    return MaximizeConfig()


def small_defaults() -> MaximizeConfig:
    """MNIST-sized inputs (LeNet-5, 28 px): pixels, 1-px jitter, no scale/rotation (a 28-px
    digit has no room for them), L2 decay, total variation and a blur every 4 steps
    (Yosinski et al. 2015), 128 Adam steps at lr 0.1."""
    return MaximizeConfig(param="pixel", steps=128, lr=0.1, pad=2, jitter=1, scales=(1.0, 1.0),
                          rotate=0.0, l2=1e-3, tv=1e-3, blur_every=4, blur_sigma=0.5)


@dataclass(frozen=True)
class Objective:
    """What image k maximizes: `layer`'s channel units[k] ("channel": mean over positions;
    "neuron": the one at `position`, default the centre), or class logit units[k]
    ("class", `layer` None)."""

    kind: str
    units: tuple[int, ...]
    layer: str | None = None
    position: tuple[int, int] | None = None


@dataclass(frozen=True)
class Synthesized:
    """One synthesized input: `pixels` C×H×W in [0, 1]; `value` the objective on the final
    image without transforms; `history` the objective (under transforms) every few steps."""

    unit: int
    pixels: Tensor
    value: float
    history: tuple[float, ...]

    def to_record(self, objective: Objective) -> dict:
        record = {"kind": objective.kind, "unit": self.unit, "value": round(self.value, 6)}
        if objective.layer is not None:
            record["layer"] = objective.layer
        if objective.position is not None:
            record["position"] = list(objective.position)
        return record


def objective(model: nn.Module, kind: str, units: Sequence[int], layer: str | None = None,
              position: tuple[int, int] | None = None) -> Objective:
    """Check and resolve an objective (layer aliases allowed)."""
    if kind not in ("channel", "neuron", "class"):
        raise CnnToolError(f"unknown objective '{kind}'; use channel, neuron or class")
    if not units:
        raise CnnToolError("give at least one unit to maximize")
    if kind == "class":
        return Objective("class", tuple(int(u) for u in units))
    if layer is None:
        raise CnnToolError(f"a {kind} objective needs a layer (--layer)")
    path, _ = resolve_layer(model, layer)
    return Objective(kind, tuple(int(u) for u in units), path, position)


def maximize(model: nn.Module, preprocessing: Preprocessing, goal: Objective,
             config: MaximizeConfig | None = None, *, start: Tensor | None = None,
             seed: int = 0, progress: Callable[[int], None] | None = None,
             ) -> list[Synthesized]:
    """Synthesize one input per unit of `goal`, all in one batch.

    `start`: C×H×W pixels in [0, 1] to begin from (default: seeded low-amplitude noise).
    `progress(k)` is called after every step (the CLI's progress bar).
    """
    config = config or MaximizeConfig.for_input(preprocessing.input_shape)
    if config.param not in ("fourier", "pixel"):
        raise CnnToolError(f"unknown parameterization '{config.param}'; use fourier or pixel")
    device = next(model.parameters()).device
    shape = (len(goal.units), *preprocessing.input_shape)
    generator = torch.Generator().manual_seed(seed)
    image = _Image.create(config.param, shape, start, generator, device)
    optimizer = torch.optim.Adam(image.parameters, lr=config.lr)
    score = _scorer(model, goal, shape)
    history: list[list[float]] = []
    with preserved_state(model):
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)  # only the image learns; skips weight gradients
        for step in range(config.steps):
            pixels = image.pixels()
            seen = _transform(pixels, config, generator)
            values = score(preprocessing.normalize(seen))
            loss = -values.sum() + _penalties(pixels, config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if config.blur_every and (step + 1) % config.blur_every == 0:
                image.blur(config.blur_sigma)
            if step % 16 == 0 or step == config.steps - 1:
                history.append(values.detach().tolist())
            if progress:
                progress(1)
        with torch.no_grad():
            final = image.pixels().detach()
            values = score(preprocessing.normalize(final)).tolist()
    return [Synthesized(unit=u, pixels=final[k].cpu(), value=float(values[k]),
                        history=tuple(h[k] for h in history))
            for k, u in enumerate(goal.units)]


def _scorer(model: nn.Module, goal: Objective, shape) -> Callable[[Tensor], Tensor]:
    """normalized batch -> objective value per image (image k scores unit k)."""
    units = torch.tensor(goal.units)
    rows = torch.arange(len(goal.units))

    def pick(output: Tensor) -> Tensor:
        if output.shape[1] <= int(units.max()):
            raise CnnToolError(f"unit {int(units.max())} is out of range; the target has "
                               f"{output.shape[1]} channels (0 to {output.shape[1] - 1})")
        return output[rows, units.to(output.device)]

    if goal.kind == "class":
        def score(x: Tensor) -> Tensor:
            logits = model(x)
            return pick(logits[0] if isinstance(logits, (tuple, list)) else logits)
        return score

    def score(x: Tensor) -> Tensor:
        with capture(model, [goal.layer], detach=False, stop_early=True) as cap:
            cap.run(x)
        maps = pick(cap.outputs[goal.layer])
        if maps.dim() == 1:  # a fully connected layer: the unit itself
            return maps
        if goal.kind == "channel":
            return maps.flatten(1).mean(1)
        row, col = goal.position or (maps.shape[1] // 2, maps.shape[2] // 2)
        if not (0 <= row < maps.shape[1] and 0 <= col < maps.shape[2]):
            raise CnnToolError(f"position ({row}, {col}) is outside layer '{goal.layer}', "
                               f"whose maps are {maps.shape[1]}×{maps.shape[2]}")
        return maps[:, row, col]
    return score


class _Image:
    """The learnable image: pixel or Fourier parameters -> N×C×H×W pixels in [0, 1]."""

    def __init__(self, kind: str, params: Tensor, shape, device):
        self.kind, self.param, self.shape = kind, params, shape
        if kind == "fourier":
            h, w = shape[2:]
            fy = torch.fft.fftfreq(h, device=device)[:, None]
            fx = torch.fft.rfftfreq(w, device=device)[None, :]
            freq = (fy ** 2 + fx ** 2).sqrt().clamp(min=1.0 / max(h, w))
            # 1/f scaling (as lucid): natural images' spectrum falls as 1/f, so a unit step in
            # each parameter moves the image like natural-image statistics would. With the
            # orthonormal FFT and lucid's /4 this is lucid's fft_image exactly.
            self.scale = (1.0 / freq) / 4.0

    @property
    def parameters(self) -> list[Tensor]:
        return [self.param]

    @classmethod
    def create(cls, kind, shape, start, generator, device) -> "_Image":
        n, c, h, w = shape
        if kind == "pixel":
            if start is not None:
                init = torch.logit(start.clamp(0.02, 0.98)).expand(shape).clone()
            else:
                init = torch.randn(shape, generator=generator) * 0.1
            return cls(kind, init.to(device).requires_grad_(), shape, device)
        spectrum = torch.randn((n, c, h, w // 2 + 1, 2), generator=generator) * 0.01
        image = cls(kind, spectrum.to(device), shape, device)
        if start is not None:  # invert the parameterization so the first image is `start`
            logits = torch.logit(start.clamp(0.02, 0.98)).to(device).expand(shape)
            colors = image._undo_color(logits)
            spec = torch.fft.rfft2(colors, norm="ortho") / image.scale
            image.param = torch.view_as_real(spec).contiguous()
        image.param.requires_grad_()
        return image

    def pixels(self) -> Tensor:
        if self.kind == "pixel":
            return torch.sigmoid(self.param)
        spectrum = torch.view_as_complex(self.param) * self.scale
        colors = torch.fft.irfft2(spectrum, s=self.shape[2:], norm="ortho")
        return torch.sigmoid(self._color(colors))

    def _color(self, x: Tensor) -> Tensor:
        if x.shape[1] != 3:
            return x
        matrix = _COLOR_CORRELATION.to(x)
        return torch.einsum("ij,njhw->nihw", matrix, x)

    def _undo_color(self, x: Tensor) -> Tensor:
        if x.shape[1] != 3:
            return x
        return torch.einsum("ij,njhw->nihw", torch.linalg.inv(_COLOR_CORRELATION).to(x), x)

    @torch.no_grad()
    def blur(self, sigma: float) -> None:
        """Gaussian blur of the pixel parameters (Yosinski et al.); Fourier needs none, as its
        1/f scaling already favours low frequencies."""
        if self.kind == "pixel":
            self.param.copy_(gaussian_blur(self.param, sigma))


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of N×C×H×W with reflect padding."""
    radius = max(1, int(math.ceil(2 * sigma)))
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1).contiguous(), groups=c)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1).contiguous(), groups=c)


def _transform(pixels: Tensor, config: MaximizeConfig, generator: torch.Generator) -> Tensor:
    """Pad, then one random affine warp per step (jitter, scale, rotation in a single
    grid_sample, so the transforms cost one resampling), back to the input size."""
    n, _, h, w = pixels.shape
    if config.pad:
        pixels = F.pad(pixels, (config.pad,) * 4, mode="reflect")
    big_h, big_w = pixels.shape[2:]
    low, high = config.scales
    scale = low + (high - low) * float(torch.rand((), generator=generator))
    angle = math.radians(config.rotate) * (2 * float(torch.rand((), generator=generator)) - 1)
    shift = (torch.randint(-config.jitter, config.jitter + 1, (2,), generator=generator)
             if config.jitter else torch.zeros(2))
    if scale == 1.0 and angle == 0.0 and (big_h, big_w) == (h, w):
        return torch.roll(pixels, shifts=(int(shift[0]), int(shift[1])), dims=(2, 3))
    # Output grid covers the central h×w of the padded image, zoomed by 1/scale and rotated.
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    sx, sy = w / big_w, h / big_h
    theta = torch.tensor([[cos * sx, -sin * sy, 2 * float(shift[1]) / big_w],
                          [sin * sx, cos * sy, 2 * float(shift[0]) / big_h]],
                         dtype=pixels.dtype, device=pixels.device)
    grid = F.affine_grid(theta.expand(n, 2, 3), (n, pixels.shape[1], h, w), align_corners=False)
    return F.grid_sample(pixels, grid, mode="bilinear", padding_mode="reflection",
                         align_corners=False)


def _penalties(pixels: Tensor, config: MaximizeConfig) -> Tensor:
    """L2 decay towards grey and total variation, summed over the batch (like the objective)."""
    total = pixels.new_zeros(())
    if config.l2:
        total = total + config.l2 * ((pixels - 0.5) ** 2).flatten(1).sum(1).sum()
    if config.tv:
        dy = (pixels[:, :, 1:] - pixels[:, :, :-1]).abs().flatten(1).sum(1)
        dx = (pixels[:, :, :, 1:] - pixels[:, :, :, :-1]).abs().flatten(1).sum(1)
        total = total + config.tv * (dy + dx).sum()
    return total


def with_overrides(config: MaximizeConfig, **changes) -> MaximizeConfig:
    """`config` with the given fields replaced (None values are ignored: CLI defaults)."""
    return replace(config, **{k: v for k, v in changes.items() if v is not None})
