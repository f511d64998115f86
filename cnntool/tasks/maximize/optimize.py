"""The optimization loop: gradient ascent on the parameterized image, one image per unit, all
in one batch, and the objective's value for data images."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from cnntool.core.hooks import capture, preserved_state, substitute_activation_backward
from cnntool.core.loading.exported import contains_exported, is_torchscript
from cnntool.core.preprocessing import Preprocessing
from cnntool.errors import CnnToolError
from cnntool.tasks.maximize.config import MaximizeConfig, Objective, Synthesized
from cnntool.tasks.maximize.judge import output_ceiling
from cnntool.tasks.maximize.parameterizations import ImagePrior, build_image
from cnntool.tasks.maximize.transforms import penalized, random_view


def maximize(
    model: nn.Module,
    preprocessing: Preprocessing,
    goal: Objective,
    config: MaximizeConfig | None = None,
    *,
    start: Tensor | None = None,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    prior: ImagePrior | None = None,
) -> list[Synthesized]:
    """Synthesize one input per unit of `goal`, all in one batch.

    `start`: C×H×W pixels in [0, 1] to begin from (default: seeded noise); with
    `config.closeness` > 0 the result is kept near it (feature accentuation).
    `prior`: what prior data gives the "maco" and "pca" parameterizations.
    `progress(k)` is called after every step (the CLI's progress bar).
    """
    config = config or MaximizeConfig.for_input(
        preprocessing.input_shape, prior_data=prior is not None
    )
    if config.closeness and (start is None or config.param != "fourier"):
        raise CnnToolError(
            "feature accentuation needs a start image and the fourier parameterization"
        )
    device = next(model.parameters()).device
    channels, height, width = preprocessing.input_shape
    if config.size is not None and (config.size, config.size) != (height, width):
        if start is not None:
            raise CnnToolError(
                f"a start image is the model's input size, {height}×{width}; "
                f"an image of side {config.size} cannot start from it"
            )
        height = width = config.size
    shape = (len(goal.units), channels, height, width)
    generator = torch.Generator().manual_seed(seed)
    image = build_image(config, shape, start, generator, device, prior)
    optimizer = _Adam(image.param, config.lr)
    score = _scorer(model, goal)
    importance = torch.zeros((shape[0], *shape[2:]), device=device) if config.importance else None
    history: list[list[float]] = []
    # The penalties (L2, TV, the PCA prior, closeness) are sums over pixels or coordinates; a
    # channel's objective is a mean over its positions, so its gradient on each pixel shrinks
    # with the map's size (1/784 on LeNet's relu1) and the penalties drowned it: every relu1
    # picture came out flat grey. The objective's gradient is taken as the sum over positions
    # (`weight`), the unit the penalties are in; without penalties Adam ignores the scale.
    weight = 1.0
    with preserved_state(model):
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)  # only the image learns; skips weight gradients
        for step in range(config.steps):
            pixels = image.pixels()
            if importance is not None:
                pixels.retain_grad()
            seen = random_view(penalized(pixels, config), config, generator)
            with _rectifiers(model, step < config.redirect):
                values = score(preprocessing.normalize(seen))
            if step == 0 and _penalized(config):
                weight = float(score.positions)
            image.param.grad = None
            (-values.sum() * weight).backward()
            image.add_penalty_gradients()
            optimizer.step()
            if importance is not None:
                importance.add_(pixels.grad.abs().sum(1))
            if config.blur_every and (step + 1) % config.blur_every == 0:
                image.blur(config.blur_sigma)
            if step % 16 == 0 or step == config.steps - 1:
                history.append(values.detach().tolist())
            if progress:
                progress(1)
        with torch.no_grad():
            final = image.pixels().detach()
            values = score(preprocessing.normalize(final)).tolist()
            peaks = score.peaks.tolist()
    ceiling = output_ceiling(model, goal.layer) if goal.kind != "class" else None
    return [
        Synthesized(
            unit=u,
            pixels=final[k].cpu(),
            value=float(values[k]),
            peak=float(peaks[k]),
            history=tuple(h[k] for h in history),
            importance=None if importance is None else importance[k].cpu(),
            ceiling=ceiling,
            positions=score.positions,
        )
        for k, u in enumerate(goal.units)
    ]


def _rectifiers(model: nn.Module, redirected: bool):
    """The backward of the model's rectifiers for one step: Lucid's redirected rule (the
    config's first `redirect` steps) or the true gradient. A TorchScript archive or an exported
    program makes no Python calls to reroute: it keeps the true gradient."""
    if not redirected or is_torchscript(model) or contains_exported(model):
        return contextlib.nullcontext()
    return substitute_activation_backward(model, "redirected")


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
        denominator = (self.square_average.sqrt() / math.sqrt(1 - beta2**self.steps)).add_(self.eps)
        self.param.addcdiv_(self.average, denominator, value=-self.lr / (1 - beta1**self.steps))


def _target_output(model: nn.Module, goal: Objective, x: Tensor) -> Tensor:
    """The output that holds `goal`'s units: the logits, or `goal.layer`'s activations."""
    if goal.kind == "class":
        logits = model(x)
        return logits[0] if isinstance(logits, (tuple, list)) else logits
    with capture(model, [goal.layer], detach=False, stop_early=True) as cap:
        cap.run(x)
    return cap.outputs[goal.layer]


def _check_units(output: Tensor, goal: Objective) -> None:
    largest = max(goal.units)
    if output.shape[1] <= largest:
        raise CnnToolError(
            f"unit {largest} is out of range; the target has "
            f"{output.shape[1]} channels (0 to {output.shape[1] - 1})"
        )


def _reduce(maps: Tensor, goal: Objective) -> Tensor:
    """Unit maps (..., H, W) -> the objective (...): the mean over positions ("channel") or the
    value at the position ("neuron")."""
    if goal.kind == "channel":
        return maps.flatten(-2).mean(-1)
    row, col = goal.position or (maps.shape[-2] // 2, maps.shape[-1] // 2)
    if not (0 <= row < maps.shape[-2] and 0 <= col < maps.shape[-1]):
        raise CnnToolError(
            f"position ({row}, {col}) is outside layer '{goal.layer}', "
            f"whose maps are {maps.shape[-2]}×{maps.shape[-1]}"
        )
    return maps[..., row, col]


def _penalized(config: MaximizeConfig) -> bool:
    """Whether the config has a penalty summed over pixels or coordinates."""
    return bool(
        config.l2 or config.tv or config.closeness or (config.param == "pca" and config.prior)
    )


def _scorer(model: nn.Module, goal: Objective) -> Callable[[Tensor], Tensor]:
    """normalized batch -> objective value per image (image k scores unit k). After a call,
    `score.positions` is the number of positions a channel's value is the mean of (1 for
    logits, fc units, neurons) and `score.peaks` the largest value of image k's unit at any
    position (detached; its value where there is one)."""
    units = torch.tensor(goal.units)

    def score(x: Tensor) -> Tensor:
        output = _target_output(model, goal, x)
        _check_units(output, goal)
        picked = output[torch.arange(len(x), device=output.device), units.to(output.device)]
        if output.dim() == 2:  # logits, fc units
            score.positions, score.peaks = 1, picked.detach()
            return picked
        score.positions = picked[0].numel() if goal.kind == "channel" else 1
        score.peaks = picked.detach().flatten(1).amax(1)
        return _reduce(picked, goal)

    score.positions, score.peaks = 1, None
    return score


@torch.no_grad()
def objective_values(model: nn.Module, goal: Objective, batches: Iterable[Tensor]) -> Tensor:
    """Every unit of `goal` on every image of the normalized `batches`: images × units."""
    units = torch.tensor(goal.units)
    rows: list[Tensor] = []
    device = next(model.parameters()).device
    with preserved_state(model):
        model.eval()
        for batch in batches:
            output = _target_output(model, goal, batch.to(device))
            _check_units(output, goal)
            picked = output[:, units.to(output.device)]
            rows.append((picked if output.dim() == 2 else _reduce(picked, goal)).float().cpu())
    if not rows:
        raise CnnToolError("no readable images to measure the units on")
    return torch.cat(rows)
