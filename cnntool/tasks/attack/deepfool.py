"""DeepFool (Moosavi-Dezfooli et al. 2016): the smallest L2 step to the nearest decision
boundary of the model linearized at the current point, repeated until the class changes.

At each step, for every candidate class k other than the label y, the linearized boundary
between y and k lies d_k = |f_k − f_y| / ‖∇f_k − ∇f_y‖₂ away; the step r goes to the nearest one
(class l) along w = ∇f_l − ∇f_y. An image stops as soon as the model no longer predicts y, or
after `steps` steps. Two variants, which differ in how the steps add up:

- "paper" (the default): the authors' reference code and foolbox's L2DeepFoolAttack. Each step
  is r = (d_l + 10⁻⁴)·w/‖w‖₂, the steps add up to r_tot, and the image is
  clamp(x₀ + (1 + overshoot)·r_tot, 0, 1): the overshoot scales the whole perturbation.
- "torchattacks": its DeepFool. Each step is r = d_l·w/‖w‖₂ from the current point, itself
  overshot and clamped, x ← clamp(x + (1 + overshoot)·r, 0, 1). Near the boundary the steps
  and their overshoot shrink together, and clamping undoes part of each, so an image can end its
  50 steps just short of the boundary, still classified as y (on LeNet-5 it fooled 11 of 16
  digits where the paper's variant fooled all 16, at about the same median L2).

torchattacks attacks one image at a time and builds each Jacobian with one backward pass per
class that also computes every parameter's gradient; here a batch's still-correct images go
together, each candidate class's gradient for all of them in one backward pass over the input
only, and the classes are looked at one after another, keeping each image's nearest so far (a
Jacobian of 1,000 classes for a batch of 224-px photos would not fit in memory). Every class is
a candidate by default (torchattacks); `candidates` K keeps the K classes of highest clean logit
(the reference code and foolbox take 10): K + 1 backward passes per step instead of one per class
and one for the label.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cnntool.core.loading.models import LoadedModel
from cnntool.errors import CnnToolError
from cnntool.tasks.attack.methods import _input_gradient_only, _PixelForward

VARIANTS = ("paper", "torchattacks")
# the reference code and foolbox add this to each step's distance so that it crosses the boundary
_PAST_THE_BOUNDARY = 1e-4


def deepfool(
    model: LoadedModel | nn.Module,
    images: Tensor,
    labels: Tensor,
    eps: None = None,
    *,
    steps: int = 50,
    overshoot: float = 0.02,
    candidates: int | None = None,
    variant: str = "paper",
    targeted: bool = False,
) -> Tensor:
    """The adversarial batch in [0, 1]: each image after its DeepFool steps (the last iterate,
    still of the label's class where `steps` ran out). `images` are [0, 1] pixels (N, C, H, W),
    `labels` their classes. `eps` and `targeted` are there for the attack interface
    (outcomes.AttackFunction): DeepFool has no budget and no target."""
    check_deepfool(steps=steps, overshoot=overshoot, candidates=candidates, variant=variant)
    if eps is not None:
        raise CnnToolError("deepfool finds the smallest perturbation itself: it takes no ε")
    if targeted:
        raise CnnToolError("deepfool is untargeted: it steps to the nearest class, whichever")
    forward = _PixelForward.of(model)
    originals = images.detach()
    adversarial = originals.clone()
    total = torch.zeros_like(originals)  # the paper's r_tot
    labels = labels.to(images.device)
    going = torch.arange(len(images), device=images.device)  # images still classified as label
    classes = None  # each image's candidate classes (N, K), best first; None: all, in order
    with _input_gradient_only(forward.module), torch.enable_grad():
        for _ in range(steps):
            points = adversarial[going].requires_grad_(True)
            logits = forward(points)
            if classes is None and candidates is not None and candidates < logits.shape[1]:
                classes = logits.detach().topk(candidates, dim=1).indices
            still = logits.detach().argmax(dim=1) == labels[going]
            if not still.any():
                break
            chosen = logits if classes is None else logits.gather(1, classes[going])
            label_at = (  # the label's column of `chosen`
                labels[going]
                if classes is None
                else (classes[going] == labels[going].unsqueeze(1)).int().argmax(dim=1)
            )
            step, movable = nearest_boundary_step(chosen, points, label_at, variant)
            moving = still & movable  # the fooled stop here, and so do the unmovable
            going, points, step = going[moving], points.detach()[moving], step[moving]
            if variant == "paper":
                total[going] += step
                moved = originals[going] + (1 + overshoot) * total[going]
            else:
                moved = points + (1 + overshoot) * step
            adversarial[going] = torch.clamp(moved, min=0, max=1)
    return adversarial


def nearest_boundary_step(
    logits: Tensor, points: Tensor, labels: Tensor, variant: str = "paper"
) -> tuple[Tensor, Tensor]:
    """(r, movable) for each image: the step from `points` onto the nearest linearized boundary
    between its label (a column of `logits` (N, K), computed from `points`) and another column,
    in torchattacks' order of operations (so that the result is the same to the bit). movable is
    False where no boundary lies at a finite distance (the model is flat there); r is 0 there.

    One backward pass per column (plus one for the labels) gives that column's gradient for
    every image at once (images do not mix in eval mode); the columns are looked at one after
    another, keeping each image's nearest so far, so memory does not grow with the classes."""
    rows = torch.arange(len(labels), device=labels.device)
    values = logits.detach()
    label_values = values[rows, labels]
    (label_gradients,) = torch.autograd.grad(
        logits.gather(1, labels.unsqueeze(1)).sum(), points, retain_graph=True
    )
    nearest = torch.full_like(label_values, float("inf"))  # the distance to it
    nearest_f = torch.zeros_like(label_values)  # f_l − f_y
    nearest_w = torch.zeros_like(label_gradients)  # ∇f_l − ∇f_y
    columns = logits.shape[1]
    for k in range(columns):
        (gradients,) = torch.autograd.grad(logits[:, k].sum(), points, retain_graph=k + 1 < columns)
        f_prime = values[:, k] - label_values
        w_prime = gradients - label_gradients
        distance = f_prime.abs() / w_prime.flatten(1).norm(p=2, dim=1)
        # the label is no boundary of its own (0/0 there); nor is a class whose 0/0 says the same
        distance = torch.where((labels == k) | distance.isnan(), float("inf"), distance)
        closer = distance < nearest  # strictly: the first of equals, as torch.min in torchattacks
        nearest = torch.where(closer, distance, nearest)
        nearest_f = torch.where(closer, f_prime, nearest_f)
        nearest_w = torch.where(closer.view(-1, *[1] * (points.dim() - 1)), w_prime, nearest_w)
    movable = nearest.isfinite()
    steps = []
    for row, w in enumerate(nearest_w):
        if not movable[row]:
            steps.append(torch.zeros_like(w))
        elif variant == "paper":
            steps.append((nearest[row] + _PAST_THE_BOUNDARY) * w / torch.norm(w))
        else:
            steps.append(nearest_f[row].abs() * w / torch.norm(w, p=2) ** 2)
    return torch.stack(steps), movable


def check_deepfool(
    *, steps: int, overshoot: float, candidates: int | None = None, variant: str = "paper"
) -> None:
    """Raise CnnToolError unless the settings are ones DeepFool can run with."""
    if variant not in VARIANTS:
        raise CnnToolError(f"unknown deepfool variant '{variant}'; use {' or '.join(VARIANTS)}")
    if candidates is not None and candidates < 2:
        raise CnnToolError(
            f"candidates must be at least 2 (the label and one more), not {candidates}"
        )
    if steps < 1:
        raise CnnToolError(f"steps must be at least 1, not {steps}")
    if not overshoot >= 0 or overshoot == float("inf"):
        raise CnnToolError(f"overshoot {overshoot:g} must be a number ≥ 0")
