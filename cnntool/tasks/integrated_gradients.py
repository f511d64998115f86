"""Integrated gradients (Sundararajan, Taly & Yan 2017, "Axiomatic attribution for deep networks").

    IG_i(x) = (x_i − b_i) · ∫₀¹ ∂F(b + α(x − b))/∂x_i dα

for a scalar F (a class logit or one unit), an input x and a baseline b, both in the model's
normalized input space. The integral is a quadrature over `steps` points α_k with weights w_k:
Gauss-Legendre by default (captum's default, so the two give the same numbers), or a Riemann
sum (left, right, middle, trapezoid). The points are run `batch_size` at a time: one forward
and one backward per chunk, the gradient of the chunk's summed scores, which is each point's
own gradient as long as the images of a batch do not interact (a model in eval mode).

Completeness (the paper's Proposition 1): Σ_i IG_i = F(x) − F(b) exactly for the true integral;
the quadrature misses by the *completeness gap*, which `Completeness` reports (the same number
as captum's `compute_convergence_delta`, unsigned). More steps shrink it.

The plain gradient throughout: no guided/deconvnet rectifier rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from cnntool.errors import CnnToolError

RULES = ("gausslegendre", "riemann_trapezoid", "riemann_middle", "riemann_left", "riemann_right")

# the baselines a name gives; "0" is captum's default (a zero model input: after (x − mean) / std,
# the normalization's mean colour, not black), "black" is black pixels through the normalization
BASELINES = ("black", "0", "mean", "blur", "noise")


def quadrature(steps: int, rule: str = "gausslegendre") -> tuple[list[float], list[float]]:
    """(weights, alphas) of a `steps`-point rule for ∫₀¹ f(α) dα ≈ Σ w_k f(α_k)."""
    if steps < 1:
        raise CnnToolError(f"integrated gradients needs at least 1 step (got {steps})")
    if rule == "gausslegendre":
        import numpy as np

        nodes, weights = np.polynomial.legendre.leggauss(steps)  # on [−1, 1]
        return (0.5 * weights).tolist(), (0.5 * (nodes + 1.0)).tolist()
    if rule == "riemann_trapezoid":
        if steps < 2:
            raise CnnToolError("the trapezoid rule needs at least 2 steps")
        h = 1.0 / (steps - 1)
        weights = [h] * steps
        weights[0] = weights[-1] = h / 2
        return weights, [k * h for k in range(steps)]
    offset = {"riemann_left": 0.0, "riemann_middle": 0.5, "riemann_right": 1.0}.get(rule)
    if offset is None:
        raise CnnToolError(f"unknown integration rule '{rule}'; use one of {', '.join(RULES)}")
    return [1.0 / steps] * steps, [(k + offset) / steps for k in range(steps)]


@dataclass(frozen=True)
class IntegratedGradients:
    """How to integrate: `steps` points of `rule`, `batch_size` points per forward, from
    `baseline` — a name in BASELINES, a number or a tensor (model-input space). `seed` draws
    the "noise" baseline."""

    steps: int = 50
    rule: str = "gausslegendre"
    baseline: str | float | Tensor = "black"
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self):
        quadrature(self.steps, self.rule)  # a bad rule or step count is one sentence, now
        if self.batch_size < 1:
            raise CnnToolError("the IG batch size must be at least 1")
        if isinstance(self.baseline, str) and self.baseline not in BASELINES:
            raise CnnToolError(
                f"unknown baseline '{self.baseline}'; use one of {', '.join(BASELINES)}"
            )

    @property
    def baseline_name(self) -> str:
        if isinstance(self.baseline, str):
            return self.baseline
        return "tensor" if isinstance(self.baseline, Tensor) else str(float(self.baseline))


@dataclass(frozen=True)
class Completeness:
    """Σ attributions against F(x) − F(baseline): the quadrature's error on one map."""

    f_input: float
    f_baseline: float
    total: float  # Σ of the attributions, in float64
    steps: int
    rule: str
    baseline: str

    @property
    def difference(self) -> float:
        return self.f_input - self.f_baseline

    @property
    def delta(self) -> float:
        """Signed, as captum's compute_convergence_delta: Σ attributions − (F(x) − F(b))."""
        return self.total - self.difference

    @property
    def gap(self) -> float:
        return abs(self.delta)

    @property
    def relative_gap(self) -> float:
        """gap / |F(x) − F(b)| (inf when the two outputs are equal and the gap is not 0)."""
        if self.difference == 0:
            return 0.0 if self.gap == 0 else math.inf
        return self.gap / abs(self.difference)

    def to_record(self) -> dict:
        return {
            "baseline": self.baseline,
            "steps": self.steps,
            "rule": self.rule,
            "f_input": self.f_input,
            "f_baseline": self.f_baseline,
            "sum": self.total,
            "gap": self.gap,
            "relative_gap": self.relative_gap,
        }


def baseline_input(
    spec: str | float | Tensor, x: Tensor, preprocessing=None, seed: int = 0
) -> Tensor:
    """The baseline for `x` (N×C×H×W, normalized model input) in model-input space.

    black: black pixels (0) through the model's normalization (needs `preprocessing`);
    0: a zero model input (captum's default; the normalization's mean colour);
    mean: the image's own mean colour, per channel; blur: the image under a Gaussian blur of
    σ = 1/16 of its larger side (Sturmfels et al. 2020); noise: uniform [0, 1] pixels drawn with
    `seed`, normalized (needs `preprocessing`); a number or tensor: that model input.
    Normalization is affine per channel, so mean and blur are the same taken before or after it.
    """
    if isinstance(spec, Tensor):
        return spec.to(x).expand_as(x).clone()
    if not isinstance(spec, str):
        return torch.full_like(x, float(spec))
    if spec == "0":
        return torch.zeros_like(x)
    if spec == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()
    if spec == "blur":
        return gaussian_blur(x, max(x.shape[-2:]) / 16)
    if spec in ("black", "noise"):
        if preprocessing is None:
            raise CnnToolError(
                f"the '{spec}' baseline needs the model's preprocessing "
                "(its mean and std); pass preprocessing= or a baseline tensor"
            )
        if spec == "black":
            pixels = torch.zeros_like(x)
        else:  # each image its own draw, as it would get alone
            pixels = torch.stack(
                [
                    torch.rand(
                        image.shape, generator=torch.Generator(device="cpu").manual_seed(seed)
                    )
                    for image in x
                ]
            ).to(x)
        return preprocessing.normalize(pixels)
    raise CnnToolError(f"unknown baseline '{spec}'; use one of {', '.join(BASELINES)}")


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """`x` (N×C×H×W) blurred by a separable Gaussian of `sigma` pixels (reflected borders,
    so a flat image stays flat)."""
    radius = max(1, min(int(math.ceil(3 * sigma)), min(x.shape[-2:]) - 1))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(x)
    channels = x.shape[1]
    out = torch.nn.functional.pad(x, (radius, radius, radius, radius), mode="reflect")
    out = torch.nn.functional.conv2d(
        out, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels
    )
    return torch.nn.functional.conv2d(
        out, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels
    )


def integrate(
    scores: Callable[[Tensor], Tensor],
    x: Tensor,
    baseline: Tensor,
    settings: IntegratedGradients = IntegratedGradients(),
) -> tuple[Tensor, Completeness]:
    """Integrated gradients of `scores` (a batch N×… -> its N scalar outputs) at `x` (1×…)
    from `baseline` (same shape): the attribution map (shape of x) and its completeness."""
    attributions, (completeness,) = integrate_batch(scores, x, baseline, settings)
    return attributions, completeness


def integrate_batch(
    scores: Callable[[Tensor], Tensor],
    x: Tensor,
    baseline: Tensor,
    settings: IntegratedGradients = IntegratedGradients(),
    *,
    f_input: Tensor | None = None,
    completeness: bool = True,
) -> tuple[Tensor, list[Completeness]]:
    """Integrated gradients of every image of the batch `x` (N×…) from `baseline` (same shape):
    the attributions (shape of x) and each image's completeness.

    Each forward takes `settings.batch_size` points of the path for every image, alpha-major
    (the N images at α_k, then the N at α_k+1…: captum's order, so captum with
    internal_batch_size = batch_size × N runs the very same batches); `scores` gets such a
    stack and returns one value per row. `f_input`: the N values F(x) when the caller has
    them already (then the completeness costs one forward of the N baselines, not 2N).
    `completeness=False`: the attributions alone, and no completeness (no forward at all)."""
    weights, alphas = quadrature(settings.steps, settings.rule)
    x, baseline = x.detach(), baseline.detach()
    n = len(x)
    step = x - baseline
    total_grad = torch.zeros_like(x)
    for start in range(0, len(alphas), settings.batch_size):
        chunk = alphas[start : start + settings.batch_size]
        points = torch.cat([baseline + alpha * step for alpha in chunk]).requires_grad_()
        with torch.enable_grad():
            out = scores(points)
            grads = torch.autograd.grad(out.sum(), points)[0]
        w = torch.tensor(weights[start : start + len(chunk)], dtype=grads.dtype, device=x.device)
        total_grad += (grads.view(len(chunk), *x.shape) * w.view(-1, *([1] * x.dim()))).sum(0)
    attributions = total_grad * step
    if not completeness:
        return attributions, []
    with torch.no_grad():
        if f_input is None:
            ends = scores(torch.cat([x, baseline]))
            f_input, f_baseline = ends[:n], ends[n:]
        else:
            f_baseline = scores(baseline)
    totals = attributions.double().flatten(1).sum(1).tolist()
    report = [
        Completeness(
            f_input=float(fx),
            f_baseline=float(fb),
            total=total,
            steps=settings.steps,
            rule=settings.rule,
            baseline=settings.baseline_name,
        )
        for fx, fb, total in zip(f_input.tolist(), f_baseline.tolist(), totals, strict=True)
    ]
    return attributions, report
