"""What the model sees of the image each step, and the pixel regularizers.

Random views make the image work under small changes, so that it cannot rely on one exact
pixel pattern (Mordvintsev et al. 2015, Olah et al. 2017): a shift, zoom and rotation
(`random_view`) or, for MACO (Fel et al. 2023), a random crop zoomed to the full size
(`random_crop`), each with a little noise. `penalized` adds the L2 and total-variation
penalties of Yosinski et al. 2015 to the gradient; `gaussian_blur` is their blur.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from cnntool.tasks.maximize.config import MaximizeConfig


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


def random_view(pixels: Tensor, config: MaximizeConfig, generator: torch.Generator) -> Tensor:
    """One random view per step: a shift of up to `jitter` px, a zoom from `scales`, a rotation
    of up to `rotate` degrees (drawn from `generator`, so a seed gives the same run)."""
    if config.crop is not None:
        return random_crop(pixels, config, generator)
    low, high = config.scales
    scale = low + (high - low) * float(torch.rand((), generator=generator))
    angle = config.rotate * (2 * float(torch.rand((), generator=generator)) - 1)
    dy, dx = (
        (
            int(v)
            for v in torch.randint(-config.jitter, config.jitter + 1, (2,), generator=generator)
        )
        if config.jitter
        else (0, 0)
    )
    return _noisy(
        view(pixels, shift=(dy, dx), scale=scale, degrees=angle, pad=config.pad),
        config.noise,
        generator,
    )


def random_crop(pixels: Tensor, config: MaximizeConfig, generator: torch.Generator) -> Tensor:
    """A square crop whose side is a fraction of the image drawn from `config.crop`, at a random
    place inside it, zoomed back to the full size (one bilinear resampling), turned by up to
    `rotate` degrees, plus noise of std `noise` (MACO's crops, one per image and step)."""
    low, high = config.crop
    draws = torch.rand(4, generator=generator).tolist()
    fraction = low + (high - low) * draws[0]
    h, w = pixels.shape[2:]
    room = (1 - fraction) / 2  # how far the crop's centre may move, as a fraction of the side
    shift = ((2 * draws[1] - 1) * room * h, (2 * draws[2] - 1) * room * w)
    angle = config.rotate * (2 * draws[3] - 1)
    if fraction >= 1.0 and not angle:
        return _noisy(pixels, config.noise, generator)
    return _noisy(
        view(pixels, shift=shift, scale=1 / fraction, degrees=angle), config.noise, generator
    )


def _noisy(pixels: Tensor, std: float, generator: torch.Generator) -> Tensor:
    if not std:
        return pixels
    noise = torch.randn(pixels.shape, generator=generator).to(pixels)
    return pixels + std * noise


def view(
    pixels: Tensor,
    *,
    shift: tuple[float, float] = (0, 0),
    scale: float = 1.0,
    degrees: float = 0.0,
    pad: int = 0,
) -> Tensor:
    """`pixels` (N×C×H×W) moved by `shift` (rows, columns; positive = down, right), zoomed by
    `scale` and rotated by `degrees` about the centre; what comes into view is mirrored.

    A pure shift is a crop of the image reflect-padded by `pad` (no resampling; shifts are
    integers clipped to `pad`, and `pad` 0 wraps around instead). Otherwise one bilinear
    `grid_sample` does it all, reading the unpadded image with reflection at its border: the
    view padding would give, without copying and back-propagating through a padded image
    (which cost ~1 ms a step at 224 px on the CPU). A resampled view's shift is in the
    input's pixels and may be fractional.
    """
    n, c, h, w = pixels.shape
    dy, dx = shift
    if scale == 1.0 and degrees == 0.0:
        dy, dx = int(dy), int(dx)
        if not (dy or dx):
            return pixels
        if pad <= 0:
            return torch.roll(pixels, shifts=(dy, dx), dims=(2, 3))
        pad = min(pad, h - 1, w - 1)  # reflect padding can mirror at most size - 1 pixels
        dy, dx = max(-pad, min(pad, dy)), max(-pad, min(pad, dx))
        padded = F.pad(pixels, (pad,) * 4, mode="reflect")
        return padded[:, :, pad - dy : pad - dy + h, pad - dx : pad - dx + w]
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
    return F.grid_sample(
        pixels, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )


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
