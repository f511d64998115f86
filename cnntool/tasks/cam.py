"""Class activation maps of one layer: Grad-CAM and its relatives, batched.

Every method weighs the K feature maps A_k (h×w) of a layer and sums them; they differ in the
weights. With g = ∂score/∂A (the score: a class's pre-softmax logit, or a unit's mean
activation):

- gradcam (Selvaraju et al. 2017): w_k = mean over positions of g_k.
- gradcam++ (Chattopadhay et al. 2018, Eq. 19): per position α = g² / (2g² + Σ_ab A_ab · g³)
  (0 where g = 0), w_k = Σ_ab α · ReLU(g). The paper's closed form for exp(score), whose
  factor exp(score) the normalization removes.
- scorecam (Wang et al. 2020, Algorithm 1): no gradient. Each A_k is upsampled to the input,
  min-max scaled to [0, 1] and multiplied into the (normalized) model input; the score of that
  masked input, softmaxed over k, is w_k. One forward pass per channel.
- layercam (Jiang et al. 2021): per position, ReLU(g) · A, summed over channels (no pooling).
- hirescam (Draelos & Carin 2020): per position, g · A, summed over channels: the map sums to
  the score's first-order change, which Grad-CAM's averaging of g loses.
- eigencam (Muhammad & Yeasin 2020): no gradient and no target. The projection of the
  positions (rows) × channels (columns) activation matrix, centred per channel, on its first
  right singular vector.

Conventions, as in pytorch-grad-cam (jacobgil), so that its maps and ours agree:
- `CamMap.raw` is the weighted sum BEFORE the ReLU (h×w, float32, the layer's resolution); the
  ReLU that every paper applies is `CamMap.map`.
- For display (`CamMap.upsampled`), the map is bilinearly upsampled to the model input (half-pixel
  centres, as cv2.resize and F.interpolate(align_corners=False)) and min-max scaled to [0, 1]
  per image. A flat map (all zero after the ReLU) stays zero: `CamMap.flat` says so.
- Score-CAM upsamples its masks with align_corners=True (pytorch-grad-cam's
  UpsamplingBilinear2d), divides by (max − min + 1e-8), and masks the normalized input (so a
  masked-out pixel is the normalization mean).
- Grad-CAM++ adds 1e-6 to α's denominator only when `plusplus_eps` says so (pytorch-grad-cam
  does); by default it follows the paper (no ε; α = 0 where the denominator is 0).

Intended differences from pytorch-grad-cam:
- Eigen-CAM's sign. An SVD's singular vector is defined up to its sign, and pytorch-grad-cam
  takes whichever LAPACK returns, so after the ReLU its map is sometimes the complement of the
  object. We orient the singular vector so that its components sum to ≥ 0: the projection then
  correlates positively with the channels' total activation.
- Gradients never touch the model's parameters (`torch.autograd.grad` to the input, not
  `.backward()`, so no `.grad` accumulates on the user's weights), and the model's train/eval
  mode and requires_grad flags are restored.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnntool.core.class_indices import class_index
from cnntool.core.hooks import capture
from cnntool.core.layers import resolve_layer
from cnntool.core.loading.exported import refuse_layers
from cnntool.core.logits import main_output
from cnntool.core.trace import ForwardObserver, trace_forward
from cnntool.errors import CnnToolError
from cnntool.tasks.projection import Target

METHODS = ("gradcam", "gradcam++", "scorecam", "layercam", "eigencam", "hirescam")
GRADIENT_METHODS = frozenset({"gradcam", "gradcam++", "layercam", "hirescam"})
PAPERS = {
    "gradcam": "Selvaraju et al. 2017",
    "gradcam++": "Chattopadhay et al. 2018",
    "scorecam": "Wang et al. 2020",
    "layercam": "Jiang et al. 2021",
    "eigencam": "Muhammad & Yeasin 2020",
    "hirescam": "Draelos & Carin 2020",
}


@dataclass(frozen=True)
class CamMap:
    """One image's class activation map.

    `raw`: the weighted sum of the layer's maps before the ReLU (h×w float32, CPU); `score`: the
    target's value on the unmasked image (a logit or a unit's mean activation; None for
    eigencam, which has no target); `target`: the class (index and name resolved) or unit."""

    method: str
    layer: str
    target: Target | None
    score: float | None
    raw: Tensor

    @property
    def map(self) -> Tensor:
        """The map after the ReLU, at the layer's resolution (h×w)."""
        return self.raw.clamp(min=0)

    @property
    def flat(self) -> bool:
        """Whether nothing is left after the ReLU (or the map is constant): no location to show."""
        m = self.map
        return bool(m.max() <= m.min())

    def upsampled(self, size: Sequence[int]) -> Tensor:
        """The map after the ReLU, bilinearly upsampled to `size` (H, W) and min-max scaled to
        [0, 1]; zeros for a flat map."""
        return upsample_normalized(self.map, size)

    def to_record(self) -> dict:
        record = {
            "method": self.method,
            "layer": self.layer,
            "map_shape": list(self.raw.shape),
            "flat": self.flat,
        }
        if self.target is not None:
            record["target"] = self.target.to_record()
        if self.score is not None:
            record["score"] = round(self.score, 6)
        return record


def upsample_normalized(heat: Tensor, size: Sequence[int]) -> Tensor:
    """h×w -> H×W (bilinear, half-pixel centres), then min-max to [0, 1] (zeros when constant)."""
    up = F.interpolate(
        heat[None, None].double(), size=tuple(size), mode="bilinear", align_corners=False
    )[0, 0]
    low, high = up.min(), up.max()
    if high <= low:
        return torch.zeros_like(up, dtype=torch.float32)
    return ((up - low) / (high - low)).float()


# ---------------------------------------------------------------------------------------------
# the layer


class _SpatialOutputs(ForwardObserver):
    """A core.trace observer: module paths whose output is N×C×H×W with H, W > 1, in exit order."""

    sees_ops = False  # module outputs only: the trace runs without the aten op tap

    def __init__(self):
        self.names: list[str] = []

    def module_exited(self, name, module, output):
        if name and isinstance(output, Tensor) and output.dim() == 4 and min(output.shape[2:]) > 1:
            self.names.append(name)


def default_layer(model: nn.Module, input_shape: Sequence[int]) -> str:
    """The last layer with a spatial output (H, W > 1): the last before global pooling. A
    container (ResNet's `layer4`) is preferred to its last child, which gives the same tensor."""
    refuse_layers(model)  # a TorchScript model's layers cannot be seen: say so, not "none"
    (seen,), _ = trace_forward(model, lambda: [_SpatialOutputs()], tuple(input_shape))
    if not seen.names:
        raise CnnToolError(
            "the model has no layer with a spatial output (height and width > 1) "
            "at its input size; give --layer"
        )
    return seen.names[-1]


def cam_layer(model: nn.Module, layer: str | None, input_shape: Sequence[int]) -> str:
    """`layer` resolved to a module path (aliases too), or the default layer."""
    return resolve_layer(model, layer)[0] if layer else default_layer(model, input_shape)


# ---------------------------------------------------------------------------------------------
# targets and scores


def unit_target(spec: str) -> Target:
    """'LAYER:UNIT' (e.g. 'layer4:17') -> the unit target (its mean activation is the score)."""
    layer, sep, unit = spec.rpartition(":")
    if not sep or not layer or not unit.strip().isdigit():
        raise CnnToolError(f"'{spec}' is not a unit like layer4:17 (LAYER:CHANNEL)")
    return Target.unit_of(layer.strip(), int(unit))


def resolve_target(model: nn.Module, target: Target | None) -> Target:
    """A unit target's layer as a module path (aliases resolved); None is the top class."""
    if target is None:
        return Target.logit()
    if target.kind == "unit":
        return Target.unit_of(resolve_layer(model, target.layer)[0], target.unit)
    return target


def class_target(wanted: Target, logits: Tensor, row: int, class_names) -> Target:
    if wanted.class_index is not None:
        index = class_index(wanted.class_index, class_names, logits.shape[1])
    elif wanted.class_name is not None:
        index = class_index(wanted.class_name, class_names, logits.shape[1])
    else:
        index = int(logits[row].argmax())
    name = class_names[index] if class_names is not None and index < len(class_names) else None
    return Target("class", class_index=index, class_name=name)


def _unit_scores(output: Tensor, target: Target) -> Tensor:
    """A unit's mean activation per image (N) from its layer's output (N×C[×H×W])."""
    if output.dim() not in (2, 4):
        raise CnnToolError(
            f"layer '{target.layer}' gives a {output.dim()}-d output; pick a "
            "convolutional (N×C×H×W) or fully connected (N×C) layer"
        )
    if not 0 <= target.unit < output.shape[1]:
        raise CnnToolError(
            f"unit {target.unit} is out of range; layer '{target.layer}' has "
            f"{output.shape[1]} channels (0 to {output.shape[1] - 1})"
        )
    unit = output[:, target.unit]
    return unit.flatten(1).mean(1) if unit.dim() > 1 else unit


@dataclass
class _Scorer:
    """Runs the model on a batch and gives each image's target score (graph-attached when run
    with gradients) and its resolved target. A unit's layer is captured along the way."""

    model: nn.Module
    target: Target
    class_names: Sequence[str] | None

    def layers(self) -> list[str]:
        return [self.target.layer] if self.target.kind == "unit" else []

    def scores(
        self, cap, output, fixed: Sequence[Target] | None = None
    ) -> tuple[Tensor, list[Target]]:
        if self.target.kind == "unit":
            values = _unit_scores(cap.outputs[self.target.layer], self.target)
            return values, [self.target] * len(values)
        logits = main_output(output)
        if logits is None or logits.dim() != 2:
            raise CnnToolError("the model's output is not N×classes logits; give --unit LAYER:UNIT")
        chosen = (
            list(fixed)
            if fixed is not None
            else [
                class_target(self.target, logits, row, self.class_names)
                for row in range(len(logits))
            ]
        )
        index = torch.tensor([t.class_index for t in chosen], device=logits.device)
        return logits.gather(1, index[:, None])[:, 0], chosen


# ---------------------------------------------------------------------------------------------
# the maps


def cam_maps(
    model: nn.Module,
    x: Tensor,
    layer: str,
    method: str = "gradcam",
    target: Target | None = None,
    *,
    class_names: Sequence[str] | None = None,
    score_batch: int = 32,
    plusplus_eps: float = 0.0,
    classes: Sequence[Target] | None = None,
) -> list[CamMap]:
    """The `method` map of `layer` for each image of the batch `x` (N×C×H×W, normalized model
    input; C×H×W for one image).

    `target`: `Target.logit(index or name)` (None or `Target.logit()`: each image's top class) or
    `Target.unit_of(layer, unit)` (its mean activation; `unit_target('layer4:17')`).
    `classes`: instead, each image's own class target (resolved `Target.logit(index)`s).
    `score_batch`: masked copies per forward pass (Score-CAM). `plusplus_eps`: added to
    Grad-CAM++'s denominator (pytorch-grad-cam uses 1e-6; the paper none).
    Runs the model in eval mode; its mode, flags and hooks are as before afterwards."""
    if method not in METHODS:
        raise CnnToolError(f"unknown method '{method}'; use one of {', '.join(METHODS)}")
    x = x if x.dim() == 4 else x[None]
    layer = resolve_layer(model, layer)[0]
    scorer = _Scorer(model, resolve_target(model, target), class_names)
    needs_grad = method in GRADIENT_METHODS
    names = list(dict.fromkeys([layer, *scorer.layers()]))
    with capture(model, names, gradients=needs_grad, detach=scorer.target.kind != "unit") as cap:
        model.eval()
        inputs = x.detach().requires_grad_(needs_grad)
        with torch.set_grad_enabled(needs_grad):
            output = model(inputs)
            if layer not in cap.activations:
                raise CnnToolError(f"layer '{layer}' did not run in the forward pass")
            activations = cap.activations[layer]
            _check_maps(layer, activations)
            scores, targets = (
                (None, [None] * len(x))
                if method == "eigencam"
                else scorer.scores(cap, output, classes)
            )
            if needs_grad:
                torch.autograd.grad(scores.sum(), inputs, allow_unused=True)
                grads = cap.gradients.get(layer)
                if grads is None:
                    raise CnnToolError(
                        f"the score does not depend on layer '{layer}' (does "
                        f"'{scorer.target.layer}' run before it?)"
                    )
    A = activations.detach().double()
    if method == "eigencam":
        raw = _eigen(A)
    elif method == "scorecam":
        weights = _score_weights(model, x, A, scorer, targets, score_batch)
        raw = (weights[:, :, None, None] * A).sum(1)
    else:
        raw = _gradient_map(method, A, grads.double(), plusplus_eps)
    values = [None] * len(x) if scores is None else scores.detach().double().cpu().tolist()
    return [
        CamMap(method, layer, t, v, r.float().cpu())
        for t, v, r in zip(targets, values, raw, strict=True)
    ]


def _check_maps(layer: str, activations: Tensor) -> None:
    if activations.dim() != 4:
        raise CnnToolError(
            f"layer '{layer}' gives a {activations.dim()}-d output, not feature "
            "maps (N×C×H×W); pick a convolutional layer"
        )


def _gradient_map(method: str, A: Tensor, g: Tensor, plusplus_eps: float) -> Tensor:
    if method == "gradcam":
        return (g.mean((2, 3), keepdim=True) * A).sum(1)
    if method == "layercam":
        return (g.clamp(min=0) * A).sum(1)
    if method == "hirescam":
        return (g * A).sum(1)
    # gradcam++, Eq. 19 of Chattopadhay et al.
    g2 = g * g
    denominator = 2 * g2 + A.sum((2, 3), keepdim=True) * g2 * g + plusplus_eps
    alpha = torch.where((g != 0) & (denominator != 0), g2 / denominator, torch.zeros_like(g))
    weights = (alpha * g.clamp(min=0)).sum((2, 3), keepdim=True)
    return (weights * A).sum(1)


def _eigen(A: Tensor) -> Tensor:
    """Per image: positions × channels, centred per channel, projected on the first right
    singular vector, oriented so that the vector's components sum to ≥ 0."""
    n, k, h, w = A.shape
    rows = A.nan_to_num(0.0).flatten(2).transpose(1, 2)  # N × hw × K
    rows = rows - rows.mean(1, keepdim=True)
    _, _, vh = torch.linalg.svd(rows, full_matrices=False)
    first = vh[:, 0, :]  # N × K
    first = first * torch.where(first.sum(1, keepdim=True) < 0, -1.0, 1.0).to(first)
    return (rows @ first[:, :, None])[..., 0].reshape(n, h, w)


def _score_weights(model, x, A, scorer: _Scorer, targets: list[Target], batch: int) -> Tensor:
    """Score-CAM's channel weights: softmax over channels of the target's score on the input
    masked by each upsampled, min-max scaled map."""
    n, k = A.shape[:2]
    masks = F.interpolate(A.float(), size=x.shape[2:], mode="bilinear", align_corners=True)
    low = masks.flatten(2).min(2).values[:, :, None, None]
    high = masks.flatten(2).max(2).values[:, :, None, None]
    masks = (masks - low) / (high - low + 1e-8)
    weights = torch.empty(n, k, dtype=torch.float64)
    with torch.no_grad(), capture(model, scorer.layers()) as cap:
        for image in range(n):
            for start in range(0, k, batch):
                chunk = masks[image, start : start + batch].to(x)
                masked = x[image][None] * chunk[:, None]
                output = model(masked)
                values, _ = scorer.scores(_Detached(cap), output, [targets[image]] * len(masked))
                weights[image, start : start + len(masked)] = values.double().cpu()
    return torch.softmax(weights, dim=1).to(A)


class _Detached:
    """A Capture's detached activations seen as its `outputs` (Score-CAM needs no graph)."""

    def __init__(self, cap):
        self.outputs = cap.activations


# ---------------------------------------------------------------------------------------------
# a dataset


def cam_batches(
    session,
    layer: str,
    method: str,
    target: Target | None = None,
    *,
    title: str | None = None,
    plusplus_eps: float = 0.0,
) -> Iterator[tuple[list[int], Tensor, list[CamMap]]]:
    """The maps of every image of a scan session (core.session): per batch, the dataset indices,
    the [0, 1] pixels as fed (B×C×H×W, CPU) and the maps. Progress and unreadable files are
    the session's."""
    loaded = session.model
    with session.prepared(needs_grad=method in GRADIENT_METHODS, keep=[layer]) as prepared:
        for batch in session.batches(title or f"{method} {loaded.name}", normalize=False):
            with prepared.forward():
                x = loaded.preprocessing.normalize(prepared.inputs(batch.inputs))
                maps = cam_maps(
                    loaded.module,
                    x,
                    layer,
                    method,
                    target,
                    class_names=loaded.class_names,
                    score_batch=session.batch_size,
                    plusplus_eps=plusplus_eps,
                )
            yield batch.indices, batch.inputs.cpu(), maps
