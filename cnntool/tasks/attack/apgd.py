"""APGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks"): PGD with momentum whose step size tunes itself, on the
cross-entropy (APGD-CE) or, towards each of the 9 classes the clean image ranks next, on the
targeted difference-of-logits-ratio loss (APGD-T).

The step size starts at 2ε and is halved, per image, at the checkpoints `step_checkpoints` (for
100 iterations after 22, 41, 57, 70, 80, 87, 93 and 99 of them) when since the last one the loss
rose on at most ρ = 0.75 of the steps, or when neither the step size nor the best loss changed;
the iterate then goes back to the best point so far. Each step is
x ← P(x + α(z − x) + (1 − α)(x − x_prev)) with z = P(x + η·sign ∇) (L∞; L2: ∇/‖∇‖) and momentum
α = 0.75 (1 on the first step), P the projection onto the ε-ball and [0, 1].

Written after the authors' code (fra31/auto-attack, which torchattacks' APGD copies), and like
it, at the first checkpoint the count of rising steps compares the first step's loss with 0, not
with the loss at the random start as the paper's formula would (for the DLR losses, negative
while the image is classified correctly, that step never counts as a rise): so that the images
it fools are the reference's, image for image (tests/test_attack_auto.py). One difference
changes no outcome: an image leaves the batch as soon as one iterate is misclassified. Its later
iterates could only decide which adversarial point is returned, never whether there is one, and
every image's iterates depend on its own gradient alone (the loss is summed over the batch).

Every function returns, per image, the iterate with the lowest margin z_y − max_{j≠y} z_j seen
(for a fooled image: the first misclassified one), so that an ensemble can keep the worst case.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnntool.core.loading.models import LoadedModel
from cnntool.errors import CnnToolError
from cnntool.tasks.attack.methods import _input_gradient_only, _PixelForward, check_eps

MOMENTUM = 0.75  # α of the paper, on every step after the first
RHO = 0.75  # ρ: halve the step when the loss rose on at most this share of the steps
_GUARD = 1e-12  # the reference's guard against dividing by zero (norms, DLR denominators)

# per-image loss of (logits, rows of the run's batch still attacked): what APGD maximizes
Objective = Callable[[Tensor, Tensor], Tensor]


def step_checkpoints(steps: int) -> list[int]:
    """The iterations after which APGD checks its step size: the first after 22% of `steps`,
    each interval 3% of them shorter than the one before but at least 6% (the paper's
    p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06), p_1 = 0.22), in the reference code's whole
    numbers of iterations: for 100 steps 22, 41, 57, 70, 80, 87, 93, 99."""
    interval, shrink, shortest = (max(int(share * steps), 1) for share in (0.22, 0.03, 0.06))
    points, at = [], interval
    while at <= steps:
        points.append(at)
        interval = max(interval - shrink, shortest)
        at += interval
    return points


def dlr_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """The difference of logits ratio per image, −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3), with
    z_π1 ≥ z_π2 ≥ … the sorted logits: the margin made invariant to shifting and scaling the
    logits (Croce & Hein 2020, eq. 5). Needs at least 3 classes."""
    ordered, order = logits.sort(dim=1)
    true = logits.gather(1, labels[:, None]).squeeze(1)
    best_other = torch.where(order[:, -1] == labels, ordered[:, -2], ordered[:, -1])
    return -(true - best_other) / (ordered[:, -1] - ordered[:, -3] + _GUARD)


def targeted_dlr_loss(logits: Tensor, labels: Tensor, targets: Tensor) -> Tensor:
    """The targeted DLR loss per image, −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2) (Croce & Hein
    2020, eq. 6): rises as the target's logit overtakes the label's. Needs at least 4 classes."""
    ordered = logits.sort(dim=1).values
    true = logits.gather(1, labels[:, None]).squeeze(1)
    target = logits.gather(1, targets[:, None]).squeeze(1)
    return -(true - target) / (ordered[:, -1] - 0.5 * (ordered[:, -3] + ordered[:, -4]) + _GUARD)


def margins(logits: Tensor, labels: Tensor) -> Tensor:
    """z_y − max_{j≠y} z_j per image: negative when the image is misclassified."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], -math.inf)
    return true - others.amax(dim=1)


def apgd(
    model: LoadedModel | nn.Module,
    images: Tensor,
    labels: Tensor,
    eps: float,
    *,
    norm: str = "linf",
    steps: int = 100,
    restarts: int = 1,
    loss: str = "ce",
    rho: float = RHO,
    generator: torch.Generator | None = None,
    targeted: bool = False,
) -> Tensor:
    """APGD on the cross-entropy (`loss` "ce", APGD-CE) or the DLR loss ("dlr"), untargeted:
    `restarts` runs of `steps` iterations, each from a random point of the ε-ball (drawn from
    `generator`) and on the images no earlier run fooled. Returns the adversarial batch in
    [0, 1]: per image the lowest-margin iterate."""
    if targeted:
        raise CnnToolError("APGD-CE is untargeted; APGD-T aims at the next classes itself")
    if loss not in ("ce", "dlr"):
        raise CnnToolError(f"unknown APGD loss '{loss}'; use ce or dlr")
    _check(eps, norm, steps, restarts)
    forward = _PixelForward.of(model)
    labels = labels.to(images.device)

    def objective(rows: Tensor) -> Objective:  # for the images `rows` of the batch
        theirs = labels[rows]
        if loss == "ce":
            return lambda logits, at: F.cross_entropy(logits, theirs[at], reduction="none")
        return lambda logits, at: dlr_loss(logits, theirs[at])

    with _input_gradient_only(forward.module):
        return _runs(
            forward, images, labels, eps, [objective] * restarts, norm, steps, rho, generator
        )


def apgd_targeted(
    model: LoadedModel | nn.Module,
    images: Tensor,
    labels: Tensor,
    eps: float,
    *,
    norm: str = "linf",
    steps: int = 100,
    restarts: int = 1,
    target_classes: int = 9,
    rho: float = RHO,
    generator: torch.Generator | None = None,
    targeted: bool = False,
) -> Tensor:
    """APGD-T: for each of the `target_classes` classes the clean image ranks next after its
    top one (2nd, 3rd, …; at most all the others), `restarts` runs of APGD on the targeted DLR
    loss towards it, on the images not fooled yet. Success is still misclassification, towards
    any class. Returns the adversarial batch in [0, 1]: per image the lowest-margin iterate."""
    if targeted:
        raise CnnToolError("APGD-T is an untargeted evaluation: it picks its targets itself")
    _check(eps, norm, steps, restarts)
    forward = _PixelForward.of(model)
    labels = labels.to(images.device)
    with _input_gradient_only(forward.module), torch.no_grad():
        clean = forward(images).float()
    classes = clean.shape[1]
    if classes < 4:
        raise CnnToolError(
            f"APGD-T needs a model with at least 4 classes (its loss divides by "
            f"z_π1 − (z_π3 + z_π4)/2), not {classes}"
        )
    if target_classes < 1:
        raise CnnToolError(f"APGD-T needs at least 1 target class, not {target_classes}")
    target_classes = min(target_classes, classes - 1)
    ranked = clean.argsort(dim=1, descending=True)

    def towards(rank: int) -> Callable[[Tensor], Objective]:
        def objective(rows: Tensor) -> Objective:  # for the images `rows` of the batch
            theirs, targets = labels[rows], ranked[rows, rank]
            return lambda logits, at: targeted_dlr_loss(logits, theirs[at], targets[at])

        return objective

    plan = [towards(rank) for rank in range(1, target_classes + 1) for _ in range(restarts)]
    with _input_gradient_only(forward.module):
        return _runs(forward, images, labels, eps, plan, norm, steps, rho, generator)


# ---------------------------------------------------------------------------------------------


def _check(eps: float, norm: str, steps: int, restarts: int) -> None:
    check_eps(eps, norm)
    if steps < 1 or restarts < 1:
        raise CnnToolError(f"APGD needs at least 1 step and 1 restart, not {steps} and {restarts}")


def _runs(forward, images, labels, eps, plan, norm, steps, rho, generator) -> Tensor:
    """One APGD run per objective of `plan` (each made for the rows it attacks), each on the
    images no earlier run fooled; per image the lowest-margin point of all."""
    best = images.detach().clone()
    if eps == 0:  # the ball is a point (and the L2 projection would divide 0 by 0)
        return best
    best_margin = torch.full((len(images),), math.inf, device=images.device)
    standing = torch.arange(len(images), device=images.device)
    for make_objective in plan:
        if not len(standing):
            break
        points, found, fooled = _run(
            forward,
            images[standing].detach(),
            labels[standing],
            eps,
            make_objective(standing),
            norm,
            steps,
            rho,
            generator,
        )
        lower = found < best_margin[standing]
        best[standing[lower]] = points[lower]
        best_margin[standing[lower]] = found[lower]
        standing = standing[~fooled]
    return best


class _State:
    """The per-image tensors of one run, for the rows still attacked (dropped together)."""

    def __init__(self, **tensors: Tensor):
        self.__dict__.update(tensors)

    def keep(self, mask: Tensor) -> None:
        for name, value in self.__dict__.items():
            setattr(self, name, value[mask])


def _run(forward, originals, labels, eps, objective, norm, steps, rho, generator):
    """One APGD run from a random start: (per image the lowest-margin point, its margin, whether
    it is misclassified)."""
    count, device = len(originals), originals.device
    lowest = originals.clone()
    lowest_margin = torch.full((count,), math.inf, device=device)
    fooled = torch.zeros(count, dtype=torch.bool, device=device)
    x = _random_start(originals, eps, norm, generator)
    rows = torch.arange(count, device=device)
    loss, grad, logits = _loss_and_gradient(forward, x, objective, rows)
    state = _State(
        rows=rows,
        originals=originals,
        labels=labels,
        x=x,
        previous=x,
        grad=grad,
        step=torch.full((count,), 2.0 * eps, device=device),
        loss=torch.zeros_like(loss),  # the reference's first comparison is with 0 (see above)
        best_loss=loss,
        best_x=x,
        best_grad=grad,
        rises=torch.zeros(count, device=device),
        checked_loss=loss,
        reduced=torch.ones(count, dtype=torch.bool, device=device),
    )
    checkpoints, last_check = set(step_checkpoints(steps)), 0
    for step in range(steps + 1):
        if step:  # step 0 is the random start, evaluated above
            with torch.no_grad():
                _step(state, eps, norm, 1.0 if step == 1 else MOMENTUM)
            loss, state.grad, logits = _loss_and_gradient(forward, state.x, objective, state.rows)
        with torch.no_grad():
            margin = margins(logits, state.labels)
            lower = margin < lowest_margin[state.rows]
            lowest[state.rows[lower]] = state.x[lower]
            lowest_margin[state.rows[lower]] = margin[lower]
            if step:
                state.rises += loss > state.loss
                state.loss = loss
                improved = loss > state.best_loss
                state.best_loss = torch.where(improved, loss, state.best_loss)
                state.best_x = _where(improved, state.x, state.best_x)
                state.best_grad = _where(improved, state.grad, state.best_grad)
                if step in checkpoints:
                    _check_step_size(state, rho * (step - last_check))
                    last_check = step
            wrong = logits.argmax(dim=1) != state.labels
            if wrong.any():
                fooled[state.rows[wrong]] = True
                state.keep(~wrong)
                if not len(state.rows):
                    break
    return lowest, lowest_margin, fooled


def _step(state: _State, eps: float, norm: str, momentum: float) -> None:
    """x ← P(x + α(z − x) + (1 − α)(x − x_prev)), z = P(x + η·direction(∇))."""
    x, originals = state.x, state.originals
    step = state.step.view(-1, *[1] * (x.dim() - 1))
    if norm == "linf":
        z = _project(originals, x + step * state.grad.sign(), eps, norm)
    else:
        z = _project(originals, x + step * state.grad / _l2(state.grad), eps, norm)
    moved = _project(
        originals, x + momentum * (z - x) + (1 - momentum) * (x - state.previous), eps, norm
    )
    state.previous, state.x = x, moved


def _check_step_size(state: _State, threshold: float) -> None:
    """At a checkpoint: halve the step of the images whose loss rose on at most ρ of the steps
    since the last one, or whose step and best loss both stayed as they were, and send them
    back to their best point (with its gradient)."""
    halve = (state.rises <= threshold) | (~state.reduced & (state.checked_loss >= state.best_loss))
    state.reduced, state.checked_loss = halve, state.best_loss
    state.rises = torch.zeros_like(state.rises)
    state.step = torch.where(halve, state.step / 2, state.step)
    state.x = _where(halve, state.best_x, state.x)
    state.grad = _where(halve, state.best_grad, state.grad)


def _loss_and_gradient(forward, x: Tensor, objective: Objective, rows: Tensor):
    """(per-image loss, ∇ₓ of their sum, logits) at `x`."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        logits = forward(x).float()
        loss = objective(logits, rows)
        (gradient,) = torch.autograd.grad(loss.sum(), x)
    return loss.detach(), gradient.detach(), logits.detach()


def _where(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    return torch.where(mask.view(-1, *[1] * (a.dim() - 1)), a, b)


def _l2(t: Tensor) -> Tensor:
    """‖t‖₂ per image (+ the guard), shaped to divide `t`; summed as the reference sums it."""
    return t.pow(2).flatten(1).sum(dim=1).sqrt().view(-1, *[1] * (t.dim() - 1)) + _GUARD


def _project(originals: Tensor, x: Tensor, eps: float, norm: str) -> Tensor:
    """Onto the ε-ball around `originals`, then into [0, 1] (which only moves x closer)."""
    if norm == "linf":
        return torch.clamp(torch.clamp(x, originals - eps, originals + eps), 0.0, 1.0)
    delta = x - originals
    lengths = delta.pow(2).flatten(1).sum(dim=1).sqrt().view(-1, *[1] * (x.dim() - 1))
    return torch.clamp(
        originals + delta / (lengths + _GUARD) * torch.clamp(lengths, max=eps), 0.0, 1.0
    )


def _random_start(originals: Tensor, eps: float, norm: str, generator) -> Tensor:
    """A random point of the ε-ball as the reference draws it: L∞ uniform noise scaled so that
    its largest pixel is ±ε; L2 Gaussian noise scaled to length ε."""
    shape = (-1, *[1] * (originals.dim() - 1))
    if norm == "linf":
        noise = 2 * torch.rand(originals.shape, generator=generator, device=originals.device) - 1
        scale = noise.flatten(1).abs().amax(dim=1).view(shape)
    else:
        noise = torch.randn(originals.shape, generator=generator, device=originals.device)
        scale = _l2(noise)
    return torch.clamp(originals + eps * noise / scale, 0.0, 1.0)
