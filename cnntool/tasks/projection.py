"""Project one unit (or a class logit) back to the input: deconvnet, guided backprop, saliency,
integrated gradients.

The first three are one backward pass from a scalar target to the input; they differ only in
how rectifiers backprop, which `core.hooks.substitute_activation_backward` decides for every
rectifier however it is called (module or functional, ReLU6, LeakyReLU...). Saliency and
gradient×input use the true gradient. SmoothGrad averages any of them over noisy copies.
Integrated gradients (`tasks.integrated_gradients`) integrates the true gradient along the
straight path from a baseline, and reports how far it is from complete. The LRP methods
(`tasks.lrp`) propagate the target's value back by a rule per layer (`core.relevance`), and
report how much of it reaches the input.

The maps returned are raw (C×H×W float32, in the model's normalized input space, not
normalized for display): `cnntool.io.overlays` turns them into images.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from cnntool.core.class_indices import class_index
from cnntool.core.hooks import capture, frozen_parameters, substitute_activation_backward
from cnntool.core.layers import resolve_layer
from cnntool.errors import CnnToolError
from cnntool.tasks.integrated_gradients import (
    Completeness,
    IntegratedGradients,
    baseline_input,
    integrate_batch,
)
from cnntool.tasks.lrp import LRP, Conservation, relevance_batch
from cnntool.tasks.lrp import METHODS as LRP_METHODS

# method -> the rectifier backward rule it needs; None: the true gradient, plain autograd with no
# torch function mode at all (saliency, gradient×input, integrated gradients, SmoothGrad of them)
METHODS = {"deconv": "deconv", "guided": "guided", "saliency": None, "ig": None}
# LRP (tasks.lrp) has a rule for every layer, not a rectifier rule: its own branch of project_batch
METHODS.update(dict.fromkeys(LRP_METHODS))

# SmoothGrad and saliency's |·|: of the mean gradient (ours), or of every sample's (captum's
# NoiseTunnel over Saliency)
SMOOTH_ABS = ("after-mean", "per-sample")


@dataclass(frozen=True)
class Target:
    """What is backpropagated: `layer`'s channel `unit` at `position` (row, col; None for a
    layer without spatial dimensions), or the pre-softmax logit of class `class_index`."""

    kind: str  # "unit" or "class"
    layer: str | None = None
    unit: int | None = None
    position: tuple[int, int] | None = None
    class_index: int | None = None
    class_name: str | None = None

    @classmethod
    def unit_of(
        cls, layer: str, unit: int | None = None, position: tuple[int, int] | None = None
    ) -> Target:
        """Channel `unit` of `layer` (default: its most active channel) at `position` (default:
        the channel's strongest position)."""
        return cls("unit", layer=layer, unit=unit, position=position)

    @classmethod
    def logit(cls, which: int | str | None = None) -> Target:
        """The pre-softmax logit of a class, by index or name (default: the predicted class)."""
        if isinstance(which, str) and not which.strip().isdigit():
            return cls("class", class_name=which)
        return cls("class", class_index=None if which is None else int(which))

    @classmethod
    def chosen(
        cls,
        layer: str | None,
        units: Sequence[int | None] = (),
        position: tuple[int, int] | None = None,
        class_: int | str | None = None,
    ) -> list[Target]:
        """What the command line asks to project: `units` of `layer` (none: its most active one)
        at `position`, or without a layer the logit of `class_` (default: the predicted class)."""
        if layer is None and (units or position):
            raise CnnToolError("--unit and --position need --layer")
        if layer is not None and class_ is not None:
            raise CnnToolError("give either --layer (a unit) or --class, not both")
        return (
            [cls.unit_of(layer, u, position) for u in units or (None,)]
            if layer
            else [cls.logit(class_)]
        )

    def to_record(self) -> dict:
        if self.kind == "class":
            return {"kind": "class", "class": self.class_index, "name": self.class_name}
        record = {"kind": "unit", "layer": self.layer, "unit": self.unit}
        if self.position is not None:
            record["position"] = list(self.position)
        return record


@dataclass(frozen=True)
class Projection:
    """One projection. `map` is the raw C×H×W float32 result (for saliency |∂y/∂x|, not yet
    reduced over channels); `value` is the target's value in the forward pass (with
    SmoothGrad, its mean over the noisy copies). `substituted` and `uncovered` count the
    rectifier calls that followed the rule and the smooth activations it did not cover (their
    gradient is the ordinary one)."""

    method: str
    target: Target
    value: float
    map: Tensor
    substituted: dict[str, int]
    uncovered: dict[str, int]
    times_input: bool = False
    smooth_samples: int = 0
    smooth_abs: str | None = None
    completeness: Completeness | None = None  # integrated gradients only
    relevance: Conservation | None = None  # LRP only

    def stats(self) -> dict:
        m = self.map.double()
        return {
            "min": float(m.min()),
            "max": float(m.max()),
            "mean": float(m.mean()),
            "abs_mean": float(m.abs().mean()),
            "l2": float(m.norm()),
        }

    def to_record(self) -> dict:
        record = {
            "method": self.method,
            "target": self.target.to_record(),
            "value": round(self.value, 6),
            "times_input": self.times_input,
            "smooth_samples": self.smooth_samples,
            "stats": self.stats(),
            "substituted": self.substituted,
            "uncovered": self.uncovered,
        }
        if self.smooth_abs is not None:
            record["smooth_abs"] = self.smooth_abs
        if self.completeness is not None:
            record["ig"] = self.completeness.to_record()
        if self.relevance is not None:
            record["lrp"] = self.relevance.to_record()
        return record


@dataclass(frozen=True)
class SmoothGrad:
    """SmoothGrad (Smilkov et al. 2017): the average of an attribution over `samples` copies of
    the input plus Gaussian noise of `noise` × (max − min of the input), seeded.

    `abs` says where saliency takes its magnitude: "after-mean" |mean of the gradients|
    (cnntool's default: noise that flips a gradient's sign cancels) or "per-sample" mean of
    |gradient| (captum's NoiseTunnel(Saliency), nt_type="smoothgrad"). Signed maps (guided,
    deconvnet, gradient×input) take no magnitude, so it only matters for saliency."""

    samples: int = 16
    noise: float = 0.15
    seed: int = 0
    abs: str = "after-mean"
    batch: int = 1  # noisy copies of each image per forward (a CPU may prefer larger batches)

    def __post_init__(self):
        if self.abs not in SMOOTH_ABS:
            raise CnnToolError(
                f"unknown SmoothGrad abs '{self.abs}'; use one of {', '.join(SMOOTH_ABS)}"
            )
        if self.batch < 1:
            raise CnnToolError("SmoothGrad needs at least 1 noisy copy per forward")

    def __call__(self, attribute: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
        """Smooth any attribution `attribute(x) -> map` (guided backprop, deconvnet, saliency,
        or one of your own) of `x` (N×… or one image). Every image of a batch gets the noise it
        would get alone (its own generator seeded `seed`, σ from its own range), so a batch
        gives the maps of its images one at a time."""
        images = x if x.dim() == 4 else x.unsqueeze(0)
        generators = [torch.Generator(device="cpu").manual_seed(self.seed) for _ in images]
        sigmas = [self.noise * float(image.max() - image.min()) for image in images]
        total = None
        scale = (
            torch.tensor(sigmas, dtype=x.dtype)
            .view(1, -1, *([1] * (images.dim() - 1)))
            .to(x.device)
        )
        for start in range(0, self.samples, self.batch):
            copies = min(self.batch, self.samples - start)  # sample-major: N images, N images…
            noisy = torch.empty((copies, *images.shape), dtype=x.dtype)
            for copy in noisy:
                for slot, g in zip(copy, generators, strict=True):
                    torch.randn(slot.shape, generator=g, out=slot)
            noisy = noisy.to(x.device).mul_(scale).add_(images)  # in place: no stacked copies
            value = attribute(noisy.view(-1, *x.shape[1:]) if x.dim() == 4 else noisy[0, 0])
            value = value.view(copies, *x.shape).sum(0)
            total = value if total is None else total + value
        return total / self.samples


def project(
    model: nn.Module,
    x: Tensor,
    method: str = "guided",
    target: Target | None = None,
    *,
    class_names: Sequence[str] | None = None,
    times_input: bool = False,
    smooth: SmoothGrad | None = None,
    layer: str | None = None,
    unit: int | None = None,
    position: tuple[int, int] | None = None,
    target_class: int | str | None = None,
    smooth_samples: int = 0,
    smooth_noise: float = 0.15,
    seed: int = 0,
    ig: IntegratedGradients | None = None,
    preprocessing=None,
    lrp: LRP | None = None,
) -> Projection:
    """Project `target` back to the input `x` (C×H×W or 1×C×H×W, normalized model input).

    `target`: `Target.unit_of(layer, unit, position)` (default unit: the channel with the
    strongest activation; default position: its strongest; channel-only layers need none) or
    `Target.logit(class index or name)` (default: the predicted class); None is the predicted
    class. The keywords `layer`, `unit`, `position`, `target_class` say the same thing.
    `times_input` multiplies the map by the input (gradient×input). `smooth` (or
    `smooth_samples` > 0 with `smooth_noise` and `seed`) averages the map over noisy copies of x
    (SmoothGrad); a target chosen on the image (the predicted class, a default unit or
    position) is fixed on the clean input first, by a forward pass alone.
    Method "ig" (integrated gradients) integrates from `ig.baseline` (default black, which
    needs the model's `preprocessing`; "0" or a tensor does not) and reports `completeness`;
    it takes neither `times_input` (it already multiplies by x − baseline) nor `smooth`.
    Methods "lrp-epsilon", "lrp-zplus", "lrp-alphabeta" (layer-wise relevance propagation,
    `lrp` the settings; zbox needs `preprocessing`) report their `relevance` conservation; they
    take neither `times_input` nor `smooth` either.
    A batch of images: `project_batch`.
    """
    x = x if x.dim() == 4 else x.unsqueeze(0)
    if x.shape[0] != 1:
        raise CnnToolError(
            f"project takes one image (got a batch of {x.shape[0]}); project_batch takes a batch"
        )
    return project_batch(
        model,
        x,
        method,
        target,
        class_names=class_names,
        times_input=times_input,
        smooth=smooth,
        layer=layer,
        unit=unit,
        position=position,
        target_class=target_class,
        smooth_samples=smooth_samples,
        smooth_noise=smooth_noise,
        seed=seed,
        ig=ig,
        preprocessing=preprocessing,
        lrp=lrp,
    )[0]


def project_batch(
    model: nn.Module,
    x: Tensor,
    method: str = "guided",
    target: Target | None = None,
    *,
    class_names: Sequence[str] | None = None,
    times_input: bool = False,
    smooth: SmoothGrad | None = None,
    layer: str | None = None,
    unit: int | None = None,
    position: tuple[int, int] | None = None,
    target_class: int | str | None = None,
    smooth_samples: int = 0,
    smooth_noise: float = 0.15,
    seed: int = 0,
    ig: IntegratedGradients | None = None,
    preprocessing=None,
    lrp: LRP | None = None,
) -> list[Projection]:
    """`project` for every image of the batch `x` (N×C×H×W): one Projection per image, each
    equal to what `project` gives that image alone (to a convolution's rounding, which on a CPU
    can depend on the batch size).

    The target is resolved per image: the default unit, position or class is each image's
    own. One forward and one backward serve the whole batch: the gradient of the sum of the
    images' scores is each image's own gradient, since the images of a batch do not interact
    (a model in eval mode: a BatchNorm in training mode would mix them).

    Guided backprop and deconvnet run under `core.hooks.substitute_activation_backward`;
    saliency, gradient×input, integrated gradients and SmoothGrad of them are plain autograd,
    with no torch function mode (their `substituted` and `uncovered` are empty).
    """
    if target is not None:
        if target.kind == "unit":
            layer, unit, position = target.layer, target.unit, target.position
        else:
            target_class = (
                target.class_index if target.class_index is not None else target.class_name
            )
    if smooth is None and smooth_samples > 0:
        smooth = SmoothGrad(smooth_samples, smooth_noise, seed)
    if method not in METHODS:
        raise CnnToolError(f"unknown method '{method}'; use one of {', '.join(METHODS)}")
    if problem := option_conflict(
        method, times_input, smooth is not None, smooth.abs if smooth else "after-mean"
    ):
        raise CnnToolError(problem)
    if x.dim() != 4:
        raise CnnToolError(f"project_batch takes an N×C×H×W batch (got {x.dim()} dimensions)")
    if layer is not None:
        layer, _ = resolve_layer(model, layer)
    wanted = (
        Target("unit", layer=layer, unit=unit, position=position)
        if layer is not None
        else Target(
            "class",
            class_index=target_class if isinstance(target_class, int) else None,
            class_name=target_class if isinstance(target_class, str) else None,
        )
    )
    with frozen_parameters(model):  # input gradients only: autograd records less
        if method == "ig":
            return _integrated(
                model, x, wanted, class_names, ig or IntegratedGradients(), preprocessing
            )
        if method in LRP_METHODS:
            return _relevance(model, x, method, wanted, class_names, lrp or LRP(), preprocessing)
        if smooth is None:
            targets, values, grad, report = _backprop(model, x, method, wanted, class_names, None)
        else:
            targets, values, grad, report = _smoothed(model, x, method, wanted, class_names, smooth)
    raw = grad * x if times_input else grad
    if method == "saliency" and not times_input:
        raw = raw.abs()  # Simonyan et al.: the magnitude; display takes the max over channels
    maps = raw.detach().float().contiguous(memory_format=torch.contiguous_format)
    smooth_abs = smooth.abs if smooth and method == "saliency" and not times_input else None
    return [
        Projection(
            method=method,
            target=t,
            value=v,
            map=m,
            substituted=dict(report.substituted),
            uncovered=dict(report.uncovered),
            times_input=times_input,
            smooth_samples=smooth.samples if smooth else 0,
            smooth_abs=smooth_abs,
        )
        for t, v, m in zip(targets, values, maps, strict=True)
    ]


def _smoothed(model, x, method, wanted: Target, class_names, smooth: SmoothGrad):
    """SmoothGrad of the batch `x`: (targets, values, map before |·| for "after-mean",
    substitution report). Each value is the target's mean over the noisy copies, the smoothed
    score whose gradient the map estimates.

    A target the caller fixed (a class; a unit at a given position) is read off the first
    noisy batch, so the forwards are exactly captum NoiseTunnel's (samples × N images). A
    target chosen on the image itself (the predicted class, a unit's default channel or
    position) needs the clean batch first: one forward of N images, no backward. Running it
    inside the first noisy batch would cost more: those rows would be backpropagated too."""
    n = len(x)
    targets = (
        None
        if _fixed_by_caller(wanted)
        else _backprop(model, x, method, wanted, class_names, None, gradient=False)[0]
    )
    totals = torch.zeros(n, dtype=torch.float64)
    reports = []
    per_sample = smooth.abs == "per-sample"

    def attribute(noisy):  # copies of the batch, sample-major
        nonlocal targets
        copies = len(noisy) // n
        fixed = None if targets is None else targets * copies
        chosen, values, grad, report = _backprop(model, noisy, method, wanted, class_names, fixed)
        if targets is None:
            targets = chosen[:n]
        reports.append(report)
        totals.add_(torch.tensor(values, dtype=torch.float64).view(copies, n).sum(0))
        return grad.abs() if per_sample else grad

    grad = smooth(attribute, x)
    return targets, (totals / smooth.samples).tolist(), grad, reports[0]


def _fixed_by_caller(wanted: Target) -> bool:
    """Whether the target is the same for every image whatever it shows (no clean pass
    needed to choose it)."""
    if wanted.kind == "class":
        return wanted.class_index is not None or wanted.class_name is not None
    return wanted.unit is not None and wanted.position is not None


def option_conflict(
    method: str, times_input: bool, smoothing: bool, smooth_abs: str = "after-mean"
) -> str | None:
    """The sentence that refuses a combination of options that means nothing (None: fine)."""
    if method == "ig" and times_input:
        return "integrated gradients already multiplies by (input − baseline); drop --times-input"
    if method == "ig" and smoothing:
        return "SmoothGrad (--smooth) is for guided, deconv and saliency, not integrated gradients"
    if method in LRP_METHODS and times_input:
        return "LRP's relevance already includes the input; drop --times-input"
    if method in LRP_METHODS and smoothing:
        return "SmoothGrad (--smooth) is for guided, deconv and saliency, not LRP"
    if smooth_abs != "after-mean" and (method != "saliency" or times_input):
        return (
            "--smooth-abs decides where saliency takes |gradient|; guided, deconv, ig and "
            "--times-input maps are signed"
        )
    return None


def _integrated(
    model, x, wanted: Target, class_names, settings: IntegratedGradients, preprocessing
) -> list[Projection]:
    """Integrated gradients of each image's target, fixed on the clean input; the plain
    gradient. F(x) comes from that pass, so the completeness costs one more forward (the
    baselines)."""
    with torch.no_grad():
        targets, values = _batch_scores(model, x, wanted, class_names, None)
    baseline = baseline_input(settings.baseline, x, preprocessing, settings.seed)
    attributions, completeness = integrate_batch(
        lambda batch: _batch_scores(
            model, batch, wanted, class_names, targets * (len(batch) // len(targets))
        )[1],
        x,
        baseline,
        settings,
        f_input=values,
    )
    return _unrouted("ig", targets, values, attributions, completeness=completeness)


def _relevance(
    model, x, method: str, wanted: Target, class_names, settings: LRP, preprocessing
) -> list[Projection]:
    """LRP of each image's target (chosen on its own output, as `wanted` says), started from
    the target's value: one forward under the rules and one backward for the batch."""
    chosen = []

    def scores(batch):
        targets, values = _batch_scores(model, batch, wanted, class_names, None)
        chosen.extend(targets)
        return values

    composite = settings.composite(method, x, preprocessing)
    relevance, values, conservation, _ = relevance_batch(model, x, scores, composite)
    return _unrouted(method, chosen, values, relevance, relevance=conservation)


def _unrouted(method: str, targets, values: Tensor, maps: Tensor, **report) -> list[Projection]:
    """One Projection per image for a method that routes no rectifier (IG, LRP), each with its
    image's entry of the one per-image report (`completeness=` or `relevance=`)."""
    ((field, per_image),) = report.items()
    maps = maps.detach().float().contiguous(memory_format=torch.contiguous_format)
    return [
        Projection(
            method=method,
            target=t,
            value=float(v),
            map=m,
            substituted={},
            uncovered={},
            **{field: r},
        )
        for t, v, m, r in zip(targets, values.tolist(), maps, per_image, strict=True)
    ]


def _scores(model, batch: Tensor, target: Target) -> Tensor:
    """The target's value for every image of `batch` (N), differentiable."""
    return _batch_scores(model, batch, target, None, [target] * len(batch))[1]


def _unit_scores(output: Tensor, target: Target) -> Tensor:
    scores = output[:, target.unit]
    return scores if target.position is None else scores[:, target.position[0], target.position[1]]


def _logits(model, x):
    logits = model(x)
    if isinstance(logits, (tuple, list)):  # aux heads: the main output comes first
        logits = logits[0]
    return logits


def _batch_scores(
    model, x: Tensor, wanted: Target, class_names, fixed: Sequence[Target] | None
) -> tuple[list[Target], Tensor]:
    """One forward of the batch `x`: each image's target (`fixed`, or chosen on its own
    output as `wanted` says) and its score (N, attached to the graph when gradients are on)."""
    rows = torch.arange(len(x), device=x.device)
    if wanted.kind == "class":
        logits = _logits(model, x)
        if fixed is not None:
            targets = list(fixed)
        elif wanted.class_index is None and wanted.class_name is None:
            predicted = logits.detach().argmax(1).tolist()
            targets = [
                _class_target(logits[i : i + 1], index, class_names)
                for i, index in enumerate(predicted)
            ]
        else:
            one = _class_target(
                logits[:1],
                wanted.class_index if wanted.class_index is not None else wanted.class_name,
                class_names,
            )
            targets = [one] * len(x)
        index = torch.tensor([t.class_index for t in targets], device=logits.device)
        return targets, logits[rows, index]
    with capture(model, [wanted.layer], detach=False, stop_early=True) as cap:
        cap.run(x)
    output = cap.outputs[wanted.layer]
    targets = (
        list(fixed)
        if fixed is not None
        else [
            _unit_target(wanted.layer, output[i : i + 1], wanted.unit, wanted.position)
            for i in range(len(x))
        ]
    )
    units = torch.tensor([t.unit for t in targets], device=output.device)
    if targets[0].position is None:
        return targets, output[rows, units]
    position = torch.tensor([t.position for t in targets], device=output.device)
    return targets, output[rows, units, position[:, 0], position[:, 1]]


class _NoRule:
    """What a method with no rectifier rule reports: nothing substituted, nothing uncovered."""

    substituted: dict = {}
    uncovered: dict = {}


def _backprop(
    model,
    x,
    method,
    wanted: Target,
    class_names,
    fixed: Sequence[Target] | None,
    gradient: bool = True,
):
    """One forward of the batch (under the method's rectifier rule, if it has one) and the
    gradient of each image's target w.r.t. its input (None without `gradient`: the forward
    alone, to fix the targets). Returns (targets, values, gradient, substitution report)."""
    x = x.detach().requires_grad_(gradient)  # a new leaf on the same storage: no copy
    rule = METHODS[method]
    routing = (
        substitute_activation_backward(model, rule) if rule else contextlib.nullcontext(_NoRule())
    )
    with routing as report:
        with torch.set_grad_enabled(gradient):
            targets, scores = _batch_scores(model, x, wanted, class_names, fixed)
        grad = torch.autograd.grad(scores.sum(), x)[0] if gradient else None
    return targets, scores.detach().double().tolist(), grad, report


def _class_target(logits: Tensor, wanted, class_names) -> Target:
    if wanted is None:
        index = int(logits[0].argmax())
    else:
        index = class_index(wanted, class_names, logits.shape[1])
    name = class_names[index] if class_names is not None and index < len(class_names) else None
    return Target("class", class_index=index, class_name=name)


def _unit_target(layer: str, output: Tensor, unit, position) -> Target:
    if output.dim() not in (2, 4):
        raise CnnToolError(
            f"layer '{layer}' gives a {output.dim()}-d output; pick a "
            "convolutional (N×C×H×W) or fully connected (N×C) layer"
        )
    channels = output.shape[1]
    detached = output[0].detach()
    if unit is None:  # the channel with the strongest single activation
        peaks = detached.flatten(1).amax(1) if detached.dim() == 3 else detached
        unit = int(peaks.argmax())
    if not 0 <= unit < channels:
        raise CnnToolError(
            f"unit {unit} is out of range; layer '{layer}' has {channels} "
            f"channels (0 to {channels - 1})"
        )
    if output.dim() == 2:
        if position is not None:
            raise CnnToolError(f"layer '{layer}' has no spatial positions; drop --position")
        return Target("unit", layer=layer, unit=unit)
    height, width = detached.shape[1:]
    if position is None:
        flat = int(detached[unit].flatten().argmax())
        position = (flat // width, flat % width)
    row, col = (int(p) for p in position)
    if not (0 <= row < height and 0 <= col < width):
        raise CnnToolError(
            f"position ({row}, {col}) is outside layer '{layer}', whose maps are {height}×{width}"
        )
    return Target("unit", layer=layer, unit=unit, position=(row, col))


def deconv(model: nn.Module, x: Tensor, target: Target | None = None, **options) -> Tensor:
    """Zeiler & Fergus deconvnet projection of `target` (see `project`): raw C×H×W map."""
    return project(model, x, "deconv", target, **options).map


def guided_backprop(model: nn.Module, x: Tensor, target: Target | None = None, **options) -> Tensor:
    """Springenberg et al. guided backpropagation of `target` (see `project`): raw C×H×W map."""
    return project(model, x, "guided", target, **options).map


def saliency(model: nn.Module, x: Tensor, target: Target | None = None, **options) -> Tensor:
    """Simonyan et al. saliency |∂target/∂x| (see `project`): raw C×H×W map."""
    return project(model, x, "saliency", target, **options).map


def receptive_boxes(
    model: nn.Module, input_shape, targets: Sequence[Target], *, fields: dict | None = None
) -> list:
    """Each target's receptive field in model-input pixels, (y0, x0, y1, x1): None for a class,
    a unit without a position, a fully connected layer, or a field that spans the whole input.
    `fields`: core.receptive_field.receptive_fields of the model, when the caller has them."""
    from cnntool.core.receptive_field import receptive_fields

    if all(t.position is None for t in targets):
        return [None] * len(targets)
    fields = receptive_fields(model, input_shape) if fields is None else fields
    boxes = []
    for target in targets:
        field = fields.get(target.layer) if target.position is not None else None
        boxes.append(None if field is None else field.input_box(*target.position))
    return boxes


def project_image(
    loaded,
    pixels: Tensor,
    method: str,
    targets: Sequence[Target],
    *,
    times_input: bool = False,
    smooth: SmoothGrad | None = None,
    ig: IntegratedGradients | None = None,
    lrp: LRP | None = None,
) -> list[Projection]:
    """Each target projected from one image of a LoadedModel (`pixels` C×H×W in [0, 1], fed as
    the model is)."""
    x = loaded.preprocessing.normalize(pixels).unsqueeze(0).to(loaded.device)
    return [
        p
        for per_image in project_pixels(
            loaded, x, method, targets, times_input=times_input, smooth=smooth, ig=ig, lrp=lrp
        )
        for p in per_image
    ]


def project_pixels(
    loaded,
    x: Tensor,
    method: str,
    targets: Sequence[Target],
    *,
    times_input: bool = False,
    smooth: SmoothGrad | None = None,
    ig: IntegratedGradients | None = None,
    lrp: LRP | None = None,
) -> list[list[Projection]]:
    """Per image of the normalized batch `x`, its projections of `targets` (one batched
    forward and backward per target). The maps' channels are the image's (RGB), also for a
    model that takes BGR: they are shown as colour images."""
    per_target = [
        project_batch(
            loaded.module,
            x,
            method,
            target,
            class_names=loaded.class_names,
            times_input=times_input,
            smooth=smooth,
            ig=ig,
            preprocessing=loaded.preprocessing,
            lrp=lrp,
        )
        for target in targets
    ]
    prep = loaded.preprocessing
    if prep.channel_order != "rgb":
        per_target = [
            [replace(p, map=prep.image_channels(p.map)) for p in row] for row in per_target
        ]
    return [list(row) for row in zip(*per_target, strict=True)]


def projection_batches(
    session,
    method: str,
    targets: Sequence[Target],
    *,
    times_input: bool = False,
    smooth: SmoothGrad | None = None,
    ig: IntegratedGradients | None = None,
    title: str | None = None,
    lrp: LRP | None = None,
) -> Iterator[tuple[list[int], Tensor, list[list[Projection]]]]:
    """The projections of every image of a scan session (core.session): per batch, the
    dataset indices, the [0, 1] pixels as fed (B×C×H×W, CPU) and per image its projections of
    `targets`. Progress and unreadable files are the session's."""
    loaded = session.model
    keep = [resolve_layer(session.module, t.layer)[0] for t in targets if t.kind == "unit"]
    with session.prepared(needs_grad=True, keep=keep) as prepared:
        for batch in session.batches(title or f"{method} {loaded.name}", normalize=False):
            with prepared.forward():
                x = loaded.preprocessing.normalize(prepared.inputs(batch.inputs))
                projections = project_pixels(
                    loaded,
                    x,
                    method,
                    targets,
                    times_input=times_input,
                    smooth=smooth,
                    ig=ig,
                    lrp=lrp,
                )
            yield batch.indices, batch.inputs.cpu(), projections


def integrated_gradients(
    model: nn.Module, x: Tensor, target: Target | None = None, **options
) -> Tensor:
    """Sundararajan et al. integrated gradients of `target` (see `project`; `ig=` the
    settings): raw C×H×W map. `project(..., "ig")` also gives its completeness."""
    return project(model, x, "ig", target, **options).map
