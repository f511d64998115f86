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
    - `jitter` (max shift, px), `scales` (random zoom range), `rotate` (max degrees): random
      per step, applied before the model; what comes into view is mirrored. `pad` (px) bounds
      the mirrored border of a pure shift (0: wrap around); a zoom or rotation mirrors as far
      as it needs.
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
    optimizer = _Adam(image.param, config.lr)
    score = _scorer(model, goal, shape)
    history: list[list[float]] = []
    with preserved_state(model):
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)  # only the image learns; skips weight gradients
        for step in range(config.steps):
            pixels = penalized(image.pixels(), config)
            seen = _transform(pixels, config, generator)
            values = score(preprocessing.normalize(seen))
            loss = -values.sum()
            image.param.grad = None
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


class _Adam:
    """Adam (Kingma & Ba 2015, torch.optim.Adam's defaults: β 0.9/0.999, ε 1e-8) for the one
    image tensor, as five in-place ops. torch.optim.Adam's per-step bookkeeping costs ~0.2 ms
    on the CPU, 4% of a LeNet-5 forward + backward; the update itself is the same (tested)."""

    def __init__(self, param: Tensor, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.param, self.lr, self.betas, self.eps = param, lr, betas, eps
        self.average = torch.zeros_like(param)
        self.square_average = torch.zeros_like(param)
        self.steps = 0

    @torch.no_grad()
    def step(self) -> None:
        grad = self.param.grad
        beta1, beta2 = self.betas
        self.steps += 1
        self.average.lerp_(grad, 1 - beta1)
        self.square_average.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denominator = (self.square_average.sqrt() / math.sqrt(1 - beta2 ** self.steps)).add_(self.eps)
        self.param.addcdiv_(self.average, denominator, value=-self.lr / (1 - beta1 ** self.steps))


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
    """Separable Gaussian blur of N×C×H×W with reflect padding (radius 2σ).

    A weighted sum of shifted slices rather than a grouped convolution: the kernels are tiny
    (3 taps at σ 0.5) and oneDNN's grouped convolution costs ~4× as much on such inputs."""
    radius = max(1, int(math.ceil(2 * sigma)))
    radius = min(radius, x.shape[2] - 1, x.shape[3] - 1)  # reflect padding's limit
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    weights = (kernel / kernel.sum()).tolist()
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    for dim in (2, 3):
        size = x.shape[dim] - 2 * radius
        x = sum(w * x.narrow(dim, k, size) for k, w in enumerate(weights))
    return x


def _transform(pixels: Tensor, config: MaximizeConfig, generator: torch.Generator) -> Tensor:
    """One random view per step: a shift of up to `jitter` px, a zoom from `scales`, a rotation
    of up to `rotate` degrees (drawn from `generator`, so a seed gives the same run)."""
    low, high = config.scales
    scale = low + (high - low) * float(torch.rand((), generator=generator))
    angle = config.rotate * (2 * float(torch.rand((), generator=generator)) - 1)
    dy, dx = ((int(v) for v in torch.randint(-config.jitter, config.jitter + 1, (2,), generator=generator))
              if config.jitter else (0, 0))
    return view(pixels, shift=(dy, dx), scale=scale, degrees=angle, pad=config.pad)


def view(pixels: Tensor, *, shift: tuple[int, int] = (0, 0), scale: float = 1.0,
         degrees: float = 0.0, pad: int = 0) -> Tensor:
    """`pixels` (N×C×H×W) moved by `shift` (rows, columns; positive = down, right), zoomed by
    `scale` and rotated by `degrees` about the centre; what comes into view is mirrored.

    A pure shift is a crop of the image reflect-padded by `pad` (no resampling; shifts are
    clipped to `pad`, and `pad` 0 wraps around instead). Otherwise one bilinear `grid_sample`
    does it all, reading the unpadded image with reflection at its border: the view padding
    would give, without copying and back-propagating through a padded image (which cost
    ~1 ms a step at 224 px on the CPU).
    """
    n, c, h, w = pixels.shape
    dy, dx = shift
    if scale == 1.0 and degrees == 0.0:
        if not (dy or dx):
            return pixels
        if pad <= 0:
            return torch.roll(pixels, shifts=(dy, dx), dims=(2, 3))
        pad = min(pad, h - 1, w - 1)  # reflect padding can mirror at most size - 1 pixels
        dy, dx = max(-pad, min(pad, dy)), max(-pad, min(pad, dx))
        padded = F.pad(pixels, (pad,) * 4, mode="reflect")
        return padded[:, :, pad - dy: pad - dy + h, pad - dx: pad - dx + w]
    # Output pixel (u, v) samples the input at rotate(u, v) / scale - shift, in grid_sample's
    # normalized coordinates; built by broadcasting a row and a column (cheaper than
    # affine_grid's (H·W)×3 by 3×2 product).
    angle = math.radians(degrees)
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    u = (torch.arange(w, dtype=pixels.dtype, device=pixels.device) * 2 + 1) / w - 1
    v = (torch.arange(h, dtype=pixels.dtype, device=pixels.device) * 2 + 1) / h - 1
    x = cos * u + (-sin * h / w * v - 2 * dx / w)[:, None]
    y = sin * w / h * u + (cos * v - 2 * dy / h)[:, None]
    grid = torch.stack([x, y], dim=-1).expand(n, h, w, 2)
    return F.grid_sample(pixels, grid, mode="bilinear", padding_mode="reflection",
                         align_corners=False)


class _Penalized(torch.autograd.Function):
    """Identity on the pixels whose backward adds the gradient of the L2 decay towards grey,
    l2 * sum((p - 0.5)^2), and of the total variation, tv * sum(|neighbour differences|),
    both summed over the batch like the objective. Written out by hand because through
    autograd the two penalties cost more than LeNet-5's whole forward + backward; the
    subgradient of |d| is sign(d), as autograd's."""

    @staticmethod
    def forward(ctx, pixels: Tensor, l2: float, tv: float) -> Tensor:
        ctx.save_for_backward(pixels)
        ctx.l2, ctx.tv = l2, tv
        return pixels.view_as(pixels)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (pixels,) = ctx.saved_tensors
        # l2 * d/dp (p - 0.5)^2 = 2·l2·p − l2; out of place, so autograd's `grad` stays intact
        grad = grad.add(pixels, alpha=2 * ctx.l2).sub_(ctx.l2) if ctx.l2 else grad.clone()
        if ctx.tv:
            for dim in (2, 3):
                step = pixels.diff(dim=dim).sign_()
                grad.narrow(dim, 1, step.shape[dim]).add_(step, alpha=ctx.tv)
                grad.narrow(dim, 0, step.shape[dim]).sub_(step, alpha=ctx.tv)
        return grad, None, None


def penalized(pixels: Tensor, config: MaximizeConfig) -> Tensor:
    """`pixels`, with the L2 and total-variation penalties of `config` in their gradient."""
    if not (config.l2 or config.tv):
        return pixels
    return _Penalized.apply(pixels, config.l2, config.tv)


def with_overrides(config: MaximizeConfig, **changes) -> MaximizeConfig:
    """`config` with the given fields replaced (None values are ignored: CLI defaults)."""
    return replace(config, **{k: v for k, v in changes.items() if v is not None})
