"""FGSM (Goodfellow et al. 2015) and its iterative relatives BIM (Kurakin et al. 2016) and PGD
(Madry et al. 2018), on batches of images.

Every attack works on [0, 1] pixels: the model is called as `module(normalize(x))`, so ε is in
pixel units (ε = 1/255 is one step of an 8-bit image) and the result is clamped to [0, 1].
Attacking normalized tensors instead is the bug users of the anchors hit most (torchattacks #1,
#75). The module runs in eval mode (train-mode BatchNorm would mix the batch's statistics into
the attack, foolbox#74) and its parameters stop requiring grad while the attack runs, so only
the input gradient is ever computed; both are restored afterwards.

The update rules are written exactly as torchattacks writes them (cross-entropy averaged over
the batch, `x + ε·sign(∇)`, then clamp), so the results are bit-identical to its FGSM and to its
PGD without random start; tests/test_attack.py checks that.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnntool.core.hooks import preserved_state
from cnntool.core.loading.models import LoadedModel
from cnntool.errors import CnnToolError

NORMS = ("linf", "l2")
# torchattacks' PGDL2 adds this to gradient norms so a zero gradient does not divide by zero
_L2_DIVISION_GUARD = 1e-10


def check_eps(eps: float, norm: str = "linf") -> None:
    """Raise CnnToolError unless ε is a valid radius for `norm` in [0, 1] pixel units."""
    if norm not in NORMS:
        raise CnnToolError(f"unknown norm '{norm}'; use one of {', '.join(NORMS)}")
    if not math.isfinite(eps) or eps < 0 or (norm == "linf" and eps > 1):
        bound = (
            "[0, 1] (pixel units: 8/255 is 8 steps of an 8-bit image)" if norm == "linf" else "≥ 0"
        )
        raise CnnToolError(f"eps {eps:g} is outside {bound}")


def eps_in_model_units(preprocessing, eps_values, norm: str = "linf") -> str | None:
    """How ε (in [0, 1] pixels) reads in a model's own input units, for a model that does not
    take [0, 1] RGB: 'ε 8/255 is 8 of the model's 0–255 input levels (before its BGR order,
    mean and std)'; None for a [0, 1] RGB model, where pixel units are its own."""
    if preprocessing.input_range == 1 and preprocessing.channel_order == "rgb":
        return None
    feed = preprocessing.feed_words()
    levels = ", ".join(f"{eps * preprocessing.input_range:.6g}" for eps in eps_values)
    return (
        f"ε is in [0, 1] pixel units, applied before the model's feed ({feed}, mean, std) and "
        f"clamped to the image's [0, 1]: ε = {levels} of the model's 0–"
        f"{preprocessing.input_range} input {'levels' if norm == 'linf' else '(L2)'}"
    )


def fgsm(
    model: LoadedModel | nn.Module,
    images: Tensor,
    labels: Tensor,
    eps: float,
    *,
    targeted: bool = False,
) -> Tensor:
    """One step of size ε along the sign of the loss gradient: the adversarial batch in [0, 1].

    `images` are [0, 1] pixels (N, C, H, W). A LoadedModel is normalized with its own
    preprocessing; a bare nn.Module must take [0, 1] pixels itself. Untargeted, `labels` are the
    true classes and the loss goes up; targeted, they are the targets and their loss goes down.
    """
    check_eps(eps)
    forward = _PixelForward.of(model)
    with _input_gradient_only(forward.module):
        gradient = _loss_gradient(forward, images, labels, targeted)
    return torch.clamp(images + eps * gradient.sign(), min=0, max=1).detach()


def pgd(
    model: LoadedModel | nn.Module,
    images: Tensor,
    labels: Tensor,
    eps: float,
    *,
    steps: int = 10,
    step_size: float | None = None,
    norm: str = "linf",
    random_start: bool = True,
    targeted: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Projected gradient descent: `steps` steps of `step_size` (default 2.5·ε/steps, Madry et
    al.), each projected back onto the ε-ball around `images` (L∞ or L2) and into [0, 1].
    With `random_start` it begins at a random point of the ball (drawn from
    `generator`, so a seeded generator gives the same result every run)."""
    check_eps(eps, norm)
    if steps < 1:
        raise CnnToolError(f"steps must be at least 1, not {steps}")
    step_size = 2.5 * eps / steps if step_size is None else step_size
    if not math.isfinite(step_size) or step_size < 0:
        raise CnnToolError(f"step size {step_size:g} must be a number ≥ 0")
    originals = images.detach()
    if eps == 0:  # the ball is a point (and an L2 projection would divide 0 by 0)
        return originals.clone()
    adversarial = (
        _random_start(originals, eps, norm, generator) if random_start else originals.clone()
    )
    forward = _PixelForward.of(model)
    with _input_gradient_only(forward.module):
        for _ in range(steps):
            gradient = _loss_gradient(forward, adversarial, labels, targeted)
            adversarial = _project(
                originals, _ascend(adversarial, gradient, step_size, norm), eps, norm
            )
    return adversarial


def bim(
    model: LoadedModel | nn.Module,
    images: Tensor,
    labels: Tensor,
    eps: float,
    *,
    steps: int = 10,
    step_size: float | None = None,
    norm: str = "linf",
    targeted: bool = False,
) -> Tensor:
    """The basic iterative method (Kurakin et al.): FGSM repeated with small steps, clipped to
    the ε-ball and [0, 1] after each; that is PGD starting at the image itself."""
    return pgd(
        model,
        images,
        labels,
        eps,
        steps=steps,
        step_size=step_size,
        norm=norm,
        random_start=False,
        targeted=targeted,
    )


@torch.no_grad()
def classify(model: LoadedModel | nn.Module, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(predicted class, its softmax probability, logits) for a batch of [0, 1] pixels."""
    forward = _PixelForward.of(model)
    with _input_gradient_only(forward.module):
        logits = forward(images).float()
    confidence, predicted = torch.softmax(logits, dim=1).max(dim=1)
    return predicted, confidence, logits


# ---------------------------------------------------------------------------------------------


class _PixelForward:
    """[0, 1] pixels -> logits: the model's normalization, then the model."""

    def __init__(self, module: nn.Module, normalize: Callable[[Tensor], Tensor] | None):
        self.module, self.normalize = module, normalize

    @classmethod
    def of(cls, model: LoadedModel | nn.Module) -> _PixelForward:
        if isinstance(model, LoadedModel):
            return cls(model.module, model.preprocessing.normalize)
        return cls(model, None)

    def __call__(self, pixels: Tensor) -> Tensor:
        logits = self.module(self.normalize(pixels) if self.normalize else pixels)
        if isinstance(logits, (tuple, list)):  # e.g. aux heads: the main output comes first
            logits = logits[0]
        return logits


class PixelModel(nn.Module):
    """A loaded model as an nn.Module of [0, 1] pixels (its normalization, then the model):
    what pixel-space attack libraries (torchattacks, foolbox) expect, for comparisons.

    (torchattacks' `set_normalization_used` is not this: it means the *inputs* are normalized,
    and it de-normalizes them, attacks, and normalizes the result again.)"""

    def __init__(self, model: LoadedModel):
        super().__init__()
        self.module = model.module
        self._forward = _PixelForward.of(model)
        # torchattacks puts the model back in the mode it found it in, and a new module is in
        # training mode: without this it would leave the shared model training after a call
        self.eval()

    def forward(self, pixels: Tensor) -> Tensor:
        return self._forward(pixels)


@contextlib.contextmanager
def _input_gradient_only(module: nn.Module) -> Iterator[None]:
    """Eval mode and frozen parameters for the block; both put back as they were afterwards."""
    with preserved_state(module):
        for submodule in module.modules():
            if submodule.training:
                submodule.training = False
        for parameter in module.parameters():
            if parameter.requires_grad:
                parameter.requires_grad_(False)
        yield


def _loss_gradient(
    forward: _PixelForward, images: Tensor, labels: Tensor, targeted: bool
) -> Tensor:
    """∇ₓ of the batch-mean cross-entropy (negated when targeted: the target's loss goes down)."""
    with torch.enable_grad():
        images = images.detach().requires_grad_(True)
        loss = F.cross_entropy(forward(images), labels.to(images.device))
        (gradient,) = torch.autograd.grad(-loss if targeted else loss, images)
    return gradient


def _ascend(images: Tensor, gradient: Tensor, step_size: float, norm: str) -> Tensor:
    if norm == "linf":
        return images + step_size * gradient.sign()
    norms = gradient.flatten(1).norm(p=2, dim=1) + _L2_DIVISION_GUARD
    return images + step_size * (gradient / norms.view(-1, 1, 1, 1))


def _project(originals: Tensor, images: Tensor, eps: float, norm: str) -> Tensor:
    """Back onto the ε-ball around the originals, then into [0, 1]."""
    delta = images - originals
    if norm == "linf":
        delta = torch.clamp(delta, min=-eps, max=eps)
    else:
        norms = delta.flatten(1).norm(p=2, dim=1)
        delta = delta * torch.clamp(eps / norms, max=1.0).view(-1, 1, 1, 1)
    return torch.clamp(originals + delta, min=0, max=1).detach()


def _random_start(
    originals: Tensor, eps: float, norm: str, generator: torch.Generator | None
) -> Tensor:
    if norm == "linf":
        noise = torch.empty_like(originals).uniform_(-eps, eps, generator=generator)
    else:  # a uniformly random direction, at a uniformly random fraction of the radius
        direction = torch.empty_like(originals).normal_(generator=generator)
        radius = torch.empty(len(originals), device=originals.device).uniform_(
            0, 1, generator=generator
        )
        norms = direction.flatten(1).norm(p=2, dim=1)
        noise = direction * (radius * eps / norms).view(-1, 1, 1, 1)
    return torch.clamp(originals + noise, min=0, max=1)
