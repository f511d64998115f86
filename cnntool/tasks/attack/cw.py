"""Carlini–Wagner L2 (Carlini & Wagner 2017, "Towards Evaluating the Robustness of Neural
Networks"): the smallest L2 perturbation that Adam finds in tanh space.

The image is written as x' = ½(tanh w + 1), so x' stays in [0, 1] without clipping, and Adam
minimizes, per batch, Σ ‖x' − x‖²₂ + c · Σ f(x') with the paper's f6 margin loss

    untargeted  f(x') = max(Z(x')_y − max_{i≠y} Z(x')_i, −κ)
    targeted    f(x') = max(max_{i≠t} Z(x')_i − Z(x')_t, −κ)

on the logits Z. Each image keeps the adversarial iterate of smallest L2 seen so far (the clean
image while none has succeeded), and the batch stops early when its total cost rose since the
last of ten checks. That is torchattacks' `CW` (c, kappa, steps, lr with the same defaults; no
binary search over c), step for step, with one difference: torchattacks takes the largest
"other" logit as max((1 − onehot)·Z), which is 0 when every other logit is negative (and the
label's logit as max(onehot·Z), 0 when it is negative), so its loss stalls at 0 on such images
(torchattacks issue #184, open). Here the other logits are maxed with the label's left out, as
in Carlini's own code. Where every logit is positive the two are the same, bit for bit
(tests/test_attack_minimal.py runs both on models whose logits are shifted up).

As in torchattacks, pixels at exactly 0 or 1 map to w = ∓∞ and never move (tanh′ = 0 there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnntool.core.loading.models import LoadedModel
from cnntool.errors import CnnToolError
from cnntool.tasks.attack.methods import _input_gradient_only, _PixelForward

# a "no L2 yet" that any real squared distance beats (torchattacks' value)
_NO_DISTANCE = 1e10


def cw(
    model: LoadedModel | nn.Module,
    images: Tensor,
    labels: Tensor,
    eps: None = None,
    *,
    c: float = 1.0,
    kappa: float = 0.0,
    steps: int = 50,
    lr: float = 0.01,
    targeted: bool = False,
) -> Tensor:
    """The adversarial batch in [0, 1]: for each image the successful iterate closest to it in
    L2, or the image itself where no step succeeded. `images` are [0, 1] pixels (N, C, H, W);
    untargeted `labels` are the true classes, targeted they are the targets. `eps` is there for
    the attack interface (scan.AttackFunction) and must be None: CW has no budget, it looks
    for the smallest perturbation."""
    check_cw(c=c, kappa=kappa, steps=steps, lr=lr)
    if eps is not None:
        raise CnnToolError("cw finds the smallest perturbation itself: it takes no ε")
    forward = _PixelForward.of(model)
    images = images.detach()
    labels = labels.to(images.device)
    w = _to_tanh_space(images).requires_grad_(True)
    best = images.clone()
    best_l2 = torch.full((len(images),), _NO_DISTANCE, device=images.device)
    previous_cost = _NO_DISTANCE
    optimizer = torch.optim.Adam([w], lr=lr)
    check_every = max(steps // 10, 1)
    with _input_gradient_only(forward.module), torch.enable_grad():
        for step in range(steps):
            adversarial = _from_tanh_space(w)
            # squared L2 per image, summed the way torchattacks sums it (MSELoss, no reduction)
            l2 = F.mse_loss(adversarial.flatten(1), images.flatten(1), reduction="none").sum(dim=1)
            logits = forward(adversarial)
            cost = l2.sum() + c * margin_loss(logits, labels, kappa, targeted).sum()
            optimizer.zero_grad()
            cost.backward()
            optimizer.step()

            # keep each image's successful iterate of smallest L2 (the one just evaluated)
            predicted = logits.detach().argmax(dim=1)
            success = predicted == labels if targeted else predicted != labels
            closer = success & (best_l2 > l2.detach())
            best_l2 = torch.where(closer, l2.detach(), best_l2)
            best = torch.where(closer.view(-1, 1, 1, 1), adversarial.detach(), best)

            # Carlini's early abort: stop when the batch's cost went up since the last check
            if step % check_every == 0:
                if cost.item() > previous_cost:
                    break
                previous_cost = cost.item()
    return best


def margin_loss(logits: Tensor, labels: Tensor, kappa: float, targeted: bool) -> Tensor:
    """Carlini & Wagner's f6 per image: how far the label (untargeted) is still ahead of the
    best other class, or the target (targeted) behind it, floored at −κ."""
    label_logit = logits.gather(1, labels.view(-1, 1)).squeeze(1)
    others = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf"))
    best_other = others.max(dim=1).values
    margin = best_other - label_logit if targeted else label_logit - best_other
    return torch.clamp(margin, min=-kappa)


def check_cw(*, c: float, kappa: float, steps: int, lr: float) -> None:
    """Raise CnnToolError unless the settings are ones CW can run with."""
    for name, value in (("c", c), ("kappa", kappa)):
        if not value >= 0 or value == float("inf"):
            raise CnnToolError(f"{name} {value:g} must be a number ≥ 0")
    if not lr > 0 or lr == float("inf"):
        raise CnnToolError(f"learning rate {lr:g} must be a number > 0")
    if steps < 1:
        raise CnnToolError(f"steps must be at least 1, not {steps}")


def _to_tanh_space(pixels: Tensor) -> Tensor:
    """w with ½(tanh w + 1) = pixels: atanh(2x − 1), written as torchattacks writes it (so that
    the start is the same to the bit); 0 and 1 become ∓∞."""
    x = torch.clamp(pixels * 2 - 1, min=-1, max=1)
    return (0.5 * torch.log((1 + x) / (1 - x))).detach()


def _from_tanh_space(w: Tensor) -> Tensor:
    return 1 / 2 * (torch.tanh(w) + 1)
