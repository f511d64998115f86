"""Which attribution map to trust on this model and data (#23): three tests of every method.

1. **Deletion and insertion** (Petsiuk, Das & Saenko 2018, RISE, §4.1). The pixels are ranked by
   the method's 2-D map, highest first (a stable sort: ties keep raster order). Deletion replaces
   the top-k with a baseline (zeros of the model input: the normalization's mean colour), for k
   = 0, s, 2s, … , H·W with s = ceil(H·W / steps); insertion starts from a blurred copy of the
   image (11×11 Gaussian, σ = 5 px, RISE's `gkern(11, 5)`) and puts the top-k original pixels
   back. The curve is the softmax probability of the target class (the clean image's top class);
   its area is `torch.trapezoid` over the fraction actually changed (k / H·W). These are
   torchcam's `DeletionInsertionMetric` conventions (steps, ranks, trapezoid over fractions);
   tests/test_check.py holds the numbers equal to it. Deletion: lower is better; insertion: higher.
2. **ROAD** (Rong, Leemann, Borisov, Kasneci & Kasneci 2022, "A consistent and efficient
   evaluation strategy for attribution methods"). A fraction p of the pixels is removed, the most
   relevant ones (MoRF) or the least (LeRF), and each removed pixel is *imputed*, not set to a
   constant: the removed values solve the sparse linear system "each removed pixel is the
   weighted mean of its 8 neighbours" (weights 1/6 for the 4 direct, 1/12 for the 4 diagonal
   ones, renormalized at the border; known neighbours go to the right-hand side), then Gaussian
   noise of σ = `road_noise` ([0, 1] pixel units) is added to them. Imputation in [0, 1] pixels
   then normalization equals imputation after it (the weights sum to 1). Reported: the target
   class's probability and whether the top class is still the target, per fraction.
3. **Cascading model-parameter randomization** (Adebayo et al. 2018, "Sanity checks for saliency
   maps", §3.1). On a deep copy of the model (the user's model is never changed), the
   parameterized modules, from the logits down (reverse registration order), are
   re-initialized (`reset_parameters()` under a fixed seed; normal(0, 0.01) for a module
   without it), cumulatively, in `stages` groups; after each stage every method's map is
   recomputed for the same target class. Similarity to the original map: Spearman's rank
   correlation of the absolute values (the paper's main variant) and SSIM (Wang et al. 2004:
   Gaussian window σ = 1.5, 11×11, on |map| / max |map|). A method *passes* when its rank
   correlation, averaged over the images and the cascade's stages, is at most `max_correlation`
   (0.5): its maps follow the weights as they are destroyed from the top. The mean over the
   stages, not the last stage alone: once the first convolution is random too, every method's
   map has changed (on efficientnet_lite0 guided backprop's falls to ~0.2 there as well), but
   guided backprop's stays ~0.9 while the top half of the network is random and saliency's
   falls below 0.5 at the first stage — the failure Adebayo et al. Fig. 2 shows.

The 2-D map of each method (what is ranked): saliency max_c |∂y/∂x| (Simonyan et al.);
gradient×input, integrated gradients, guided backprop and deconvnet the sum over channels
(signed: positive evidence first); SmoothGrad the saliency of the mean gradient; the CAM methods
their map after the ReLU, bilinearly upsampled to the input (half-pixel centres); the LRP
methods (tasks.lrp, default settings) the relevance summed over channels (signed).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnntool.core.hooks import (
    frozen_parameters,
    preserved_state,
    substitute_activation_backward,
)
from cnntool.core.logits import main_output
from cnntool.core.scan_options import ScanOptions
from cnntool.errors import CnnToolError

GRADIENT_METHODS = {"saliency": None, "gradxinput": None, "guided": "guided", "deconv": "deconv"}
CAM_METHODS = ("gradcam", "gradcam++", "layercam", "hirescam")
METHODS = (
    "saliency",
    "gradxinput",
    "guided",
    "ig",
    "gradcam",
    "deconv",
    "smoothgrad",
    *CAM_METHODS[1:],
    "lrp-epsilon",
    "lrp-zplus",
    "lrp-alphabeta",
)
DEFAULT_METHODS = ("saliency", "gradxinput", "guided", "ig", "gradcam")
CHECKS = ("deletion", "road", "sanity")
PAPERS = {
    "saliency": "Simonyan et al. 2014",
    "gradxinput": "Shrikumar et al. 2016",
    "guided": "Springenberg et al. 2015",
    "ig": "Sundararajan et al. 2017",
    "gradcam": "Selvaraju et al. 2017",
    "deconv": "Zeiler & Fergus 2014",
    "smoothgrad": "Smilkov et al. 2017",
    "gradcam++": "Chattopadhay et al. 2018",
    "layercam": "Jiang et al. 2021",
    "hirescam": "Draelos & Carin 2020",
    "lrp-epsilon": "Bach et al. 2015",
    "lrp-zplus": "Montavon et al. 2017",
    "lrp-alphabeta": "Bach et al. 2015",
}

# ROAD's neighbour weights (Rong et al. 2022): direct neighbours 1/6, diagonal ones 1/12
NEIGHBOURS = (
    (-1, -1, 1 / 12),
    (-1, 0, 1 / 6),
    (-1, 1, 1 / 12),
    (0, -1, 1 / 6),
    (0, 1, 1 / 6),
    (1, -1, 1 / 12),
    (1, 0, 1 / 6),
    (1, 1, 1 / 12),
)


@dataclass(frozen=True)
class CheckSettings:
    """How the check runs. `steps`: deletion/insertion intervals (20: 5 % of the pixels each);
    `road_fractions`: the removal fractions of ROAD (each in (0, 1)); `road_noise`: σ of the noise
    added to imputed pixels; `stages`: cascade groups (0: one per parameterized module);
    `max_correlation`: the pass rule's bound on the rank correlation averaged over the images
    and the cascade's stages; `checks`: which of CHECKS run;
    `ig_steps`, `ig_baseline`: integrated gradients'; `smooth_samples`: SmoothGrad's;
    `layer`: the CAM methods' layer (None: the last spatial one); `batch_size`: perturbed
    images per forward."""

    methods: tuple[str, ...] = DEFAULT_METHODS
    steps: int = 20
    road_fractions: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
    road_noise: float = 0.01
    stages: int = 5
    max_correlation: float = 0.5
    ig_steps: int = 16
    ig_baseline: str = "black"
    smooth_samples: int = 8
    layer: str | None = None
    batch_size: int = ScanOptions.batch_size
    seed: int = 0
    checks: tuple[str, ...] = CHECKS

    def __post_init__(self):
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise CnnToolError(f"unknown method '{unknown[0]}'; use some of {', '.join(METHODS)}")
        if not self.methods:
            raise CnnToolError("give at least one method")
        if len(set(self.methods)) != len(self.methods):
            raise CnnToolError("a method is named twice")
        if self.steps < 1:
            raise CnnToolError("deletion/insertion needs at least 1 step")
        if any(not 0 < f < 1 for f in self.road_fractions):
            raise CnnToolError("ROAD fractions must lie strictly between 0 and 1")
        if not self.checks or any(c not in CHECKS for c in self.checks):
            raise CnnToolError(f"checks are some of {', '.join(CHECKS)}")
        if self.road_noise < 0 or self.stages < 0:
            raise CnnToolError("ROAD noise and the number of stages cannot be negative")


# ---------------------------------------------------------------------------------------------
# the maps


def attribution_maps(
    model: nn.Module,
    x: Tensor,
    method: str,
    targets: Tensor,
    *,
    layer: str | None = None,
    preprocessing=None,
    settings: CheckSettings = CheckSettings(),
) -> Tensor:
    """The 2-D maps (N×H×W float32, x's device) of `method` for the batch `x` (normalized model
    input) and the classes `targets` (N), as the module docstring defines them."""
    if method in GRADIENT_METHODS:
        grad = _input_gradient(model, x, targets, GRADIENT_METHODS[method])
        if method == "saliency":
            return grad.abs().amax(1)
        return (grad * x).sum(1) if method == "gradxinput" else grad.sum(1)
    if method == "smoothgrad":
        from cnntool.tasks.projection import SmoothGrad

        # the whole batch per noisy copy: every image draws the noise it would draw alone
        smooth = SmoothGrad(samples=settings.smooth_samples, seed=settings.seed)
        grad = smooth(
            lambda noisy: _input_gradient(model, noisy, targets.repeat(len(noisy) // len(x)), None),
            x,
        )
        return grad.abs().amax(1)
    if method == "ig":
        from cnntool.tasks.integrated_gradients import (
            IntegratedGradients,
            baseline_input,
            integrate_batch,
        )

        # the batch at once, about batch_size rows per forward; no completeness (unused here)
        ig = IntegratedGradients(
            steps=settings.ig_steps,
            baseline=settings.ig_baseline,
            batch_size=max(1, settings.batch_size // len(x)),
            seed=settings.seed,
        )
        baseline = baseline_input(ig.baseline, x, preprocessing, ig.seed)
        wanted = targets.to(x.device)[:, None]
        with preserved_state(model), frozen_parameters(model):
            model.eval()
            attributions, _ = integrate_batch(
                lambda b: main_output(model(b)).gather(1, wanted.repeat(len(b) // len(x), 1))[:, 0],
                x,
                baseline,
                ig,
                completeness=False,
            )
        return attributions.sum(1).float()
    if method.startswith("lrp-"):
        from cnntool.tasks.lrp import class_relevance

        with preserved_state(model):
            model.eval()
            return class_relevance(model, x, targets, method, preprocessing=preprocessing).sum(1)
    if method in CAM_METHODS:
        from cnntool.tasks.cam import cam_layer, cam_maps
        from cnntool.tasks.projection import Target

        name = cam_layer(model, layer, tuple(x.shape[1:]))
        classes = [Target.logit(int(t)) for t in targets]
        cams = cam_maps(model, x, name, method, classes=classes)
        up = F.interpolate(
            torch.stack([cam.map for cam in cams])[:, None].double(),
            size=tuple(x.shape[2:]),
            mode="bilinear",
            align_corners=False,
        )[:, 0]
        return up.float().to(x.device)
    raise CnnToolError(f"unknown method '{method}'; use some of {', '.join(METHODS)}")


def _input_gradient(model: nn.Module, x: Tensor, targets: Tensor, rule: str | None) -> Tensor:
    """∂ logit[target] / ∂x for each image (images of a batch in eval mode do not interact), with
    the rectifiers' backward replaced by `rule` (None: the true gradient)."""
    x = x.detach().clone().requires_grad_()
    with preserved_state(model), frozen_parameters(model), torch.enable_grad():
        model.eval()
        if rule is None:
            logits = main_output(model(x))
        else:
            with substitute_activation_backward(model, rule):
                logits = main_output(model(x))
        score = logits.gather(1, targets.to(logits.device)[:, None]).sum()
        return torch.autograd.grad(score, x)[0].detach()


def _probabilities(
    model: nn.Module, inputs: Tensor, targets: Tensor, batch_size: int, top: bool = False
):
    """Softmax probability of each input's target class (float64, CPU); with `top`, also
    whether the top class is the target (bool, CPU)."""
    probs_out, kept_out = [], []
    with preserved_state(model), torch.no_grad():
        model.eval()
        for start in range(0, len(inputs), batch_size):
            logits = main_output(model(inputs[start : start + batch_size])).float()
            wanted = targets[start : start + batch_size].to(logits.device)
            probs = torch.softmax(logits, dim=1)
            probs_out.append(probs.gather(1, wanted[:, None])[:, 0])
            kept_out.append(logits.argmax(1) == wanted)
    probs = torch.cat(probs_out).double().cpu()
    return (probs, torch.cat(kept_out).cpu()) if top else probs


def _clean_pass(model: nn.Module, x: Tensor, batch_size: int) -> tuple[Tensor, Tensor]:
    """Each clean image's top class (x's device) and its softmax probability (float64, CPU):
    the targets of every check, and the clean point of every deletion and insertion curve."""
    classes, probs = [], []
    with preserved_state(model), torch.no_grad():
        model.eval()
        for start in range(0, len(x), batch_size):
            logits = main_output(model(x[start : start + batch_size])).float()
            top = logits.argmax(1)
            classes.append(top)
            probs.append(logits.softmax(1).gather(1, top[:, None])[:, 0].double().cpu())
    return torch.cat(classes), torch.cat(probs)


# ---------------------------------------------------------------------------------------------
# deletion and insertion


def rise_blur(x: Tensor) -> Tensor:
    """RISE's insertion canvas: `x` (N×C×H×W) under an 11×11 Gaussian of σ = 5 px (normalized,
    reflected borders, so a flat image stays flat)."""
    offsets = torch.arange(-5, 6, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / 5.0) ** 2)
    kernel = (kernel / kernel.sum()).to(x)
    c = x.shape[1]
    pad = min(5, min(x.shape[-2:]) - 1)
    kernel = kernel[5 - pad : 6 + pad] / kernel[5 - pad : 6 + pad].sum()
    out = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def pixel_ranks(maps: Tensor) -> Tensor:
    """Each pixel's rank (0: the highest value) in its map (N×H×W -> N×HW), ties in raster order."""
    order = torch.argsort(maps.flatten(1), dim=1, descending=True, stable=True)
    return torch.argsort(order, dim=1)


def step_counts(pixels: int, steps: int) -> list[int]:
    """Pixels changed at each point of the curve: 0, s, 2s, …, then all (s = ceil(pixels /
    steps))."""
    size = (pixels + steps - 1) // steps
    return [*range(0, pixels, size), pixels]


@dataclass(frozen=True)
class Curves:
    """Deletion and insertion curves of a batch: `fractions` (K), `deletion`, `insertion` (N×K,
    the target's probability) and their areas (N)."""

    fractions: Tensor
    deletion: Tensor
    insertion: Tensor

    @property
    def deletion_auc(self) -> Tensor:
        return torch.trapezoid(self.deletion, self.fractions, dim=1)

    @property
    def insertion_auc(self) -> Tensor:
        return torch.trapezoid(self.insertion, self.fractions, dim=1)


def deletion_insertion(
    model: nn.Module,
    x: Tensor,
    maps: Tensor,
    targets: Tensor,
    *,
    steps: int = 20,
    deletion_baseline: Tensor | None = None,
    insertion_baseline: Tensor | None = None,
    batch_size: int = ScanOptions.batch_size,
    ends: Tensor | None = None,
) -> Curves:
    """Deletion and insertion curves of `maps` (N×H×W) on `x` (N×C×H×W, normalized) for `targets`
    (N). Baselines: zeros (deletion) and `rise_blur(x)` (insertion) unless given.

    Three points of each image's curves do not depend on the map: the clean image, the image all
    deleted and the image all blurred. `ends` (N×3, in that order): their probabilities, when the
    caller has them (`curve_ends`; check_batch computes them once for every method). The other
    points run `batch_size` perturbed images per forward, across the images of the batch."""
    n, _, h, w = x.shape
    deletion_baseline = (
        torch.zeros_like(x) if deletion_baseline is None else deletion_baseline.expand_as(x)
    )
    insertion_baseline = (
        rise_blur(x) if insertion_baseline is None else insertion_baseline.expand_as(x)
    )
    if ends is None:
        ends = curve_ends(model, x, targets, deletion_baseline, insertion_baseline, batch_size)
    ranks = pixel_ranks(maps.to(x.device)).view(n, 1, h, w)
    counts = step_counts(h * w, steps)
    inner = counts[1:-1]  # the points that depend on the map
    jobs = [(i, deleting, k) for i in range(n) for deleting in (True, False) for k in inner]
    probs = torch.empty(len(jobs), dtype=torch.float64)
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        images = torch.stack(
            [
                torch.where(ranks[i] < k, deletion_baseline[i], x[i])
                if deleting
                else torch.where(ranks[i] < k, x[i], insertion_baseline[i])
                for i, deleting, k in chunk
            ]
        )
        rows = torch.tensor([i for i, _, _ in chunk], device=targets.device)
        probs[start : start + len(chunk)] = _probabilities(model, images, targets[rows], batch_size)
    probs = probs.view(n, 2, len(inner))
    ends = ends.double().cpu()
    clean, deleted, blurred = ends[:, 0:1], ends[:, 1:2], ends[:, 2:3]
    deletion = torch.cat([clean, probs[:, 0], deleted], 1)
    insertion = torch.cat([blurred, probs[:, 1], clean], 1)
    fractions = torch.tensor(counts, dtype=torch.float64) / (h * w)
    return Curves(fractions, deletion, insertion)


def curve_ends(
    model: nn.Module,
    x: Tensor,
    targets: Tensor,
    deletion_baseline: Tensor,
    insertion_baseline: Tensor,
    batch_size: int = ScanOptions.batch_size,
    clean: Tensor | None = None,
) -> Tensor:
    """The probabilities (N×3, float64, CPU) of each image's target on the clean image (`clean`
    when the caller has them), the deletion baseline and the insertion baseline: the points
    that every method's curves share."""
    if clean is None:
        clean = _probabilities(model, x, targets, batch_size)
    others = _probabilities(
        model,
        torch.cat([deletion_baseline, insertion_baseline]),
        targets.repeat(2),
        batch_size,
    ).view(2, len(x))
    return torch.stack([clean.double().cpu(), others[0], others[1]], 1)


# ---------------------------------------------------------------------------------------------
# ROAD


def impute(
    pixels: Tensor, removed: Tensor, noise: float = 0.0, generator: torch.Generator | None = None
) -> Tensor:
    """ROAD's noisy linear imputation: `pixels` (C×H×W) with the pixels where `removed` (H×W bool)
    replaced by the solution of "each removed pixel = the weighted mean of its in-image 8
    neighbours" (1/6 direct, 1/12 diagonal, renormalized), plus N(0, noise²) on each of them."""
    import scipy.sparse as sparse
    from scipy.sparse.linalg import splu

    c, h, w = pixels.shape
    mask = removed.detach().cpu().numpy().astype(bool)
    values = pixels.detach().cpu().double().numpy().reshape(c, h * w)
    index = np.full(h * w, -1, dtype=np.int64)
    flat = np.flatnonzero(mask.ravel())
    if not len(flat):
        return pixels.clone()
    if len(flat) == h * w:
        raise CnnToolError("ROAD cannot impute an image with every pixel removed")
    index[flat] = np.arange(len(flat))
    rows_y, rows_x = np.divmod(flat, w)
    total = np.zeros(len(flat))
    for dy, dx, weight in NEIGHBOURS:
        inside = (rows_y + dy >= 0) & (rows_y + dy < h) & (rows_x + dx >= 0) & (rows_x + dx < w)
        total += weight * inside
    rows, cols, data = [np.arange(len(flat))], [np.arange(len(flat))], [np.ones(len(flat))]
    rhs = np.zeros((len(flat), c))
    for dy, dx, weight in NEIGHBOURS:
        ny, nx = rows_y + dy, rows_x + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        neighbour = np.where(inside, ny * w + nx, 0)
        share = np.where(inside, weight / total, 0.0)
        unknown = inside & mask.ravel()[neighbour]
        rows.append(np.flatnonzero(unknown))
        cols.append(index[neighbour[unknown]])
        data.append(-share[unknown])
        known = inside & ~unknown
        rhs[known] += share[known, None] * values[:, neighbour[known]].T
    matrix = sparse.csc_matrix(
        (np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))),
        shape=(len(flat), len(flat)),
    )
    # The system is diagonally dominant and its pattern symmetric: no pivoting, and an ordering
    # of A + Aᵀ (about 15 % faster than the default at 224×224, the same solution to rounding).
    factors = splu(
        matrix,
        permc_spec="MMD_AT_PLUS_A",
        diag_pivot_thresh=0.0,
        options={"SymmetricMode": True},
    )
    solved = factors.solve(rhs)  # (removed, C)
    out = values.copy()
    out[:, flat] = solved.T
    result = torch.from_numpy(out.reshape(c, h, w)).to(pixels)
    if noise > 0:
        jitter = torch.randn((c, len(flat)), generator=generator, dtype=torch.float64) * noise
        result.view(c, -1)[:, torch.from_numpy(flat)] += jitter.to(pixels)
    return result


@dataclass(frozen=True)
class Road:
    """ROAD of a batch at `fractions` (F): `morf`/`lerf` the target's probability (N×F) with the
    most/least relevant pixels imputed, `morf_kept`/`lerf_kept` whether the top class is still
    the target (N×F bool)."""

    fractions: tuple[float, ...]
    morf: Tensor
    lerf: Tensor
    morf_kept: Tensor
    lerf_kept: Tensor


def road(
    model: nn.Module,
    pixels: Tensor,
    maps: Tensor,
    targets: Tensor,
    normalize,
    *,
    fractions: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9),
    noise: float = 0.01,
    seed: int = 0,
    batch_size: int = ScanOptions.batch_size,
) -> Road:
    """ROAD on `pixels` (N×C×H×W in [0, 1]) ranked by `maps` (N×H×W); `normalize` turns pixels
    into model input."""
    n, _, h, w = pixels.shape
    ranks = pixel_ranks(maps).view(n, h, w).cpu()
    generator = torch.Generator().manual_seed(seed)
    images, labels = [], []
    for i in range(n):
        for order in ("morf", "lerf"):
            for fraction in fractions:
                k = int(round(fraction * h * w))
                removed = ranks[i] < k if order == "morf" else ranks[i] >= h * w - k
                images.append(impute(pixels[i].cpu(), removed, noise, generator))
                labels.append(targets[i])
    inputs = normalize(torch.stack(images).to(pixels.device))
    labels = torch.stack(labels)
    probs, kept = _probabilities(model, inputs, labels, batch_size, top=True)
    probs, kept = probs.view(n, 2, len(fractions)), kept.view(n, 2, len(fractions))
    return Road(tuple(fractions), probs[:, 0], probs[:, 1], kept[:, 0], kept[:, 1])


# ---------------------------------------------------------------------------------------------
# cascading randomization


def parameterized_modules(model: nn.Module) -> list[str]:
    """The module paths with parameters of their own, from the output down (reverse
    registration)."""
    names = [
        name
        for name, module in model.named_modules()
        if any(True for _ in module.parameters(recurse=False))
    ]
    return names[::-1]


def cascade_stages(model: nn.Module, stages: int = 5) -> list[list[str]]:
    """The parameterized modules, top first, in `stages` contiguous groups (0: one per module)."""
    names = parameterized_modules(model)
    if not names:
        raise CnnToolError("the model has no parameters to randomize")
    if stages == 0 or stages >= len(names):
        return [[name] for name in names]
    return [list(part) for part in np.array_split(np.array(names, dtype=object), stages)]


def randomize(module: nn.Module, seed: int) -> None:
    """Re-initialize `module`'s own parameters (and buffers, where reset_parameters does) with
    `seed`, leaving the global random state as it was."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
        else:
            for param in module.parameters(recurse=False):
                param.normal_(0.0, 0.01)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of the flattened `values`, ties sharing their average rank (scipy's
    rankdata(method="average"), without its per-call overhead: the cascade ranks thousands of
    small maps)."""
    flat = np.asarray(values).ravel()
    order = np.argsort(flat, kind="mergesort")
    ordered = flat[order]
    starts = np.r_[True, ordered[1:] != ordered[:-1]]
    group = np.cumsum(starts) - 1  # each sorted position's tie group
    last = np.cumsum(np.bincount(group))  # 1-based rank of each group's last member
    first = last - np.bincount(group) + 1
    ranks = np.empty(len(flat), dtype=np.float64)
    ranks[order] = ((first + last) / 2.0)[group]
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two maps (average ranks for ties; 0 when one is constant)."""
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / denominator) if denominator > 0 else 0.0


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0, sigma: float = 1.5) -> float:
    """The mean structural similarity of two 2-D images (Wang et al. 2004): Gaussian window
    σ = 1.5 truncated at 3.5 σ (11×11), population covariances, K1 = 0.01, K2 = 0.03, reflected
    borders, the mean over the positions whose window lies inside (as skimage's
    structural_similarity with gaussian_weights=True, use_sample_covariance=False)."""
    from scipy.ndimage import gaussian_filter

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)

    def blur(img):
        return gaussian_filter(img, sigma=sigma, truncate=3.5, mode="reflect")

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a * mu_a
    var_b = blur(b * b) - mu_b * mu_b
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    pad = int(3.5 * sigma + 0.5)
    return float(s[pad:-pad, pad:-pad].mean())


def unit_scaled(m: np.ndarray) -> np.ndarray:
    """|m| / max |m| (zeros when the map is zero)."""
    m = np.abs(np.asarray(m, dtype=np.float64))
    top = m.max()
    return m / top if top > 0 else m


# ---------------------------------------------------------------------------------------------
# one batch, then the verdict


@dataclass(frozen=True)
class ImageResult:
    """One image's numbers for one method (plain lists: small, picklable for the gather)."""

    index: int
    target: int
    deletion: list[float]
    insertion: list[float]
    road_morf: list[float]
    road_lerf: list[float]
    road_morf_kept: list[bool]
    road_lerf_kept: list[bool]
    rank_correlation: list[float]  # per cascade stage
    ssim: list[float]


@dataclass(frozen=True)
class BatchCheck:
    """A batch's results: per method, one ImageResult per image; `fractions` of the curves;
    `cascade` the stage labels; `maps[method]` the first image's |maps| (original, then each
    stage), for the figure."""

    fractions: list[float]
    cascade: list[str]
    results: dict[str, list[ImageResult]]
    maps: dict[str, list[np.ndarray]] = field(default_factory=dict)


def check_batch(
    model: nn.Module,
    pixels: Tensor,
    indices: Sequence[int],
    settings: CheckSettings,
    preprocessing,
    *,
    keep_maps: bool = False,
    cascade_model: nn.Module | None = None,
) -> BatchCheck:
    """The checks of `settings.checks` for every method on one batch: `pixels` (N×C×H×W in
    [0, 1], the model's device), `indices` the images' dataset indices. The targets are the
    model's top classes on the clean images. `model` is left as it was (the cascade runs on a
    deep copy of `cascade_model`, default `model`: the command passes the model as loaded when
    `model` runs with its BatchNorms folded, so that the cascade re-initializes them as modules
    of their own). `keep_maps`: keep the first image's maps for the cascade figure."""
    road_check, sanity_check = "road" in settings.checks, "sanity" in settings.checks
    x = preprocessing.normalize(pixels)
    targets, clean = _clean_pass(model, x, settings.batch_size)
    layer = settings.layer
    if any(m in CAM_METHODS for m in settings.methods):  # resolved once, not per map
        from cnntool.tasks.cam import cam_layer

        layer = cam_layer(model, layer, tuple(x.shape[1:]))

    def maps_of(net):
        return {
            m: attribution_maps(
                net, x, m, targets, layer=layer, preprocessing=preprocessing, settings=settings
            )
            for m in settings.methods
        }

    maps = maps_of(model)
    ends = (
        curve_ends(model, x, targets, torch.zeros_like(x), rise_blur(x), settings.batch_size, clean)
        if "deletion" in settings.checks
        else None
    )
    curves = {
        m: deletion_insertion(
            model,
            x,
            maps[m],
            targets,
            steps=settings.steps,
            batch_size=settings.batch_size,
            ends=ends,
        )
        if ends is not None
        else None
        for m in settings.methods
    }
    roads = {
        m: road(
            model,
            pixels,
            maps[m],
            targets,
            preprocessing.normalize,
            fractions=settings.road_fractions,
            noise=settings.road_noise,
            seed=settings.seed,
            batch_size=settings.batch_size,
        )
        if road_check
        else None
        for m in settings.methods
    }
    source = model if cascade_model is None else cascade_model
    groups = cascade_stages(source, settings.stages) if sanity_check else []
    correlation = {m: [[] for _ in x] for m in settings.methods}
    similarity = {m: [[] for _ in x] for m in settings.methods}
    kept = (
        {m: [unit_scaled(maps[m][0].cpu().numpy())] for m in settings.methods} if keep_maps else {}
    )
    original = {
        m: [unit_scaled(maps[m][i].cpu().numpy()) for i in range(len(x))] for m in settings.methods
    }
    if groups:
        copied = copy.deepcopy(source)
        modules = dict(copied.named_modules())
        for stage, group in enumerate(groups):
            for offset, name in enumerate(group):
                randomize(modules[name], settings.seed * 100_003 + stage * 1_009 + offset)
            for m, randomized in maps_of(copied).items():
                for i in range(len(x)):
                    after = unit_scaled(randomized[i].cpu().numpy())
                    correlation[m][i].append(spearman(original[m][i], after))
                    similarity[m][i].append(ssim(original[m][i], after))
                    if keep_maps and i == 0:
                        kept[m].append(after)
        del copied
    results = {}
    for m in settings.methods:
        c, r = curves[m], roads[m]
        results[m] = [
            ImageResult(
                index=int(indices[i]),
                target=int(targets[i]),
                deletion=c.deletion[i].tolist() if c else [],
                insertion=c.insertion[i].tolist() if c else [],
                road_morf=r.morf[i].tolist() if r else [],
                road_lerf=r.lerf[i].tolist() if r else [],
                road_morf_kept=r.morf_kept[i].tolist() if r else [],
                road_lerf_kept=r.lerf_kept[i].tolist() if r else [],
                rank_correlation=correlation[m][i],
                ssim=similarity[m][i],
            )
            for i in range(len(x))
        ]
    fractions = step_counts(x.shape[2] * x.shape[3], settings.steps)
    fractions = [k / (x.shape[2] * x.shape[3]) for k in fractions]
    labels = [f"{g[-1]}" for g in groups]
    return BatchCheck(fractions, labels, results, kept)


def check_batches(
    session, settings: CheckSettings, *, figure: bool = False
) -> Iterator[tuple[Tensor, BatchCheck]]:
    """Every batch of a scan session (core.session) checked: per batch, its [0, 1] pixels as
    fed (CPU) and its BatchCheck; with `figure`, the first batch keeps its first image's maps.

    The model runs as the session prepares every scan (--precision, --fold-bn, channels-last
    where it pays, parameters frozen), the CAM methods' layer left unfolded. The cascade
    randomizes a copy of the model as loaded: a folded BatchNorm computes nothing of its own, so
    re-initializing it would change nothing. stderr says both."""
    loaded = session.model
    keep = []  # the CAM methods read their layer's own output: it stays unfolded
    if any(m in CAM_METHODS for m in settings.methods):
        from cnntool.tasks.cam import cam_layer

        settings = replace(
            settings, layer=cam_layer(session.module, settings.layer, loaded.input_shape)
        )
        keep = [settings.layer]
    as_loaded = copy.deepcopy(session.module) if "sanity" in settings.checks else None
    with session.prepared(needs_grad=True, keep=keep) as prepared:
        if as_loaded is not None:
            as_loaded.to(prepared.device)
            if prepared.folded:
                session.announce(
                    "sanity check: the cascade re-initializes a copy of the model as loaded "
                    f"(its {len(prepared.folded)} BatchNorms not folded)",
                    False,
                )
        for batch in session.batches(f"check {loaded.name}", normalize=False):
            with prepared.forward():
                part = check_batch(
                    session.module,
                    prepared.inputs(batch.inputs),
                    batch.indices,
                    settings,
                    loaded.preprocessing,
                    keep_maps=figure,
                    cascade_model=as_loaded,
                )
            figure = False
            yield batch.inputs.cpu(), part


RANKING = (
    "methods that pass the sanity check first, then by insertion AUC − deletion AUC (highest first)"
)


@dataclass(frozen=True)
class MethodVerdict:
    """One method's numbers over the images, and its place: `rank` 1 is the most trustworthy
    (passing methods first, then by insertion AUC − deletion AUC, highest first: RANKING)."""

    method: str
    images: int
    deletion_auc: float | None
    insertion_auc: float | None
    deletion_curve: list[float]
    insertion_curve: list[float]
    fractions: list[float]
    road_fractions: list[float]
    road_morf: list[float]  # mean probability per fraction
    road_lerf: list[float]
    road_morf_accuracy: list[float]
    road_lerf_accuracy: list[float]
    cascade: list[str]
    rank_correlation: list[float]  # mean per stage
    ssim: list[float]
    max_correlation: float
    rank: int = 0

    @property
    def last_correlation(self) -> float | None:
        return self.rank_correlation[-1] if self.rank_correlation else None

    @property
    def mean_correlation(self) -> float | None:
        """The rank correlation averaged over the images and the cascade's stages."""
        return float(np.mean(self.rank_correlation)) if self.rank_correlation else None

    @property
    def passed(self) -> bool | None:
        """The sanity check: mean_correlation ≤ max_correlation (None: not run)."""
        mean = self.mean_correlation
        return None if mean is None else mean <= self.max_correlation

    @property
    def road_gap(self) -> float | None:
        """Mean over fractions of (LeRF − MoRF) probability: higher is better."""
        if not self.road_morf:
            return None
        return float(np.mean(self.road_lerf) - np.mean(self.road_morf))

    @property
    def faithfulness(self) -> float | None:
        """Insertion AUC − deletion AUC (higher: the map finds what the model uses)."""
        if self.deletion_auc is None:
            return None
        return self.insertion_auc - self.deletion_auc

    def to_record(self) -> dict:
        return {
            "method": self.method,
            "paper": PAPERS[self.method],
            "rank": self.rank,
            "verdict": {None: "not checked", True: "pass", False: "fail"}[self.passed],
            "images": self.images,
            "deletion_auc": self.deletion_auc,
            "insertion_auc": self.insertion_auc,
            "curves": {
                "fraction": self.fractions,
                "deletion": self.deletion_curve,
                "insertion": self.insertion_curve,
            },
            "road": {
                "fraction": self.road_fractions,
                "morf": self.road_morf,
                "lerf": self.road_lerf,
                "morf_accuracy": self.road_morf_accuracy,
                "lerf_accuracy": self.road_lerf_accuracy,
                "gap": self.road_gap,
            },
            "sanity": {
                "stages": self.cascade,
                "rank_correlation": self.rank_correlation,
                "ssim": self.ssim,
                "last_rank_correlation": self.last_correlation,
                "mean_rank_correlation": self.mean_correlation,
                "rule": pass_rule(self.max_correlation),
            },
        }


def pass_rule(bound: float) -> str:
    return (
        f"pass: Spearman correlation of |map| with the original, averaged over the images and "
        f"the cascade's stages, <= {bound:g}"
    )


def verdicts(parts: Sequence[BatchCheck], settings: CheckSettings) -> list[MethodVerdict]:
    """Every batch's results merged (in dataset order) into one verdict per method, ranked."""
    parts = [p for p in parts if p is not None and p.results]
    if not parts:
        return []
    fractions, cascade = parts[0].fractions, parts[0].cascade
    out = []
    for m in settings.methods:
        rows = sorted((r for p in parts for r in p.results[m]), key=lambda r: r.index)

        def mean(key, rows=rows):
            values = [getattr(r, key) for r in rows]
            return (
                np.asarray(values, dtype=np.float64).mean(0).tolist()
                if values and len(values[0])
                else []
            )

        deletion = np.asarray([r.deletion for r in rows]).reshape(len(rows), -1)
        insertion = np.asarray([r.insertion for r in rows]).reshape(len(rows), -1)

        def auc(curves):
            return float(np.trapezoid(curves, fractions, axis=1).mean()) if curves.size else None

        out.append(
            MethodVerdict(
                method=m,
                images=len(rows),
                deletion_auc=auc(deletion),
                insertion_auc=auc(insertion),
                deletion_curve=deletion.mean(0).tolist() if deletion.size else [],
                insertion_curve=insertion.mean(0).tolist() if insertion.size else [],
                fractions=list(fractions) if deletion.size else [],
                road_fractions=list(settings.road_fractions) if rows[0].road_morf else [],
                road_morf=mean("road_morf"),
                road_lerf=mean("road_lerf"),
                road_morf_accuracy=mean("road_morf_kept"),
                road_lerf_accuracy=mean("road_lerf_kept"),
                cascade=list(cascade),
                rank_correlation=mean("rank_correlation"),
                ssim=mean("ssim"),
                max_correlation=settings.max_correlation,
            )
        )
    ordered = sorted(out, key=lambda v: (v.passed is False, -(v.faithfulness or 0.0)))
    return [
        MethodVerdict(**{**v.__dict__, "rank": place}) for place, v in enumerate(ordered, start=1)
    ]
