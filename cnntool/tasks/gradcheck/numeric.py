"""Directional-derivative checks by central differences, telling kinks and rounding noise apart
from wrong gradients.

One check costs two loss evaluations, whatever the tensor's size: autograd's directional
derivative <g, v> along a unit direction v is compared with (L(t + eps·v) − L(t − eps·v)) / 2eps.

A failing comparison is a wrong gradient only if the finite difference itself can be trusted.
It cannot when the step crosses a non-differentiable point (a ReLU at 0, a max-pool tie, abs,
clamp): then the one-sided differences (L(t+eps·v) − L(t)) / eps and (L(t) − L(t−eps·v)) / eps
disagree, and for a piecewise-linear loss their gap is at least twice the error that the kink
causes in the central difference. So a comparison whose error the gap can explain is
inconclusive and is re-drawn along a sparser direction (fewer elements moved, fewer kinks in
reach). Many kinks crossed at once can cancel in that gap, so a failing comparison is also
re-evaluated under `branches.record_branches`: if any ReLU, max-pool, clamp, … took another
branch at ±eps than at the point itself, it is inconclusive too. An error within float64
rounding noise of the loss difference (a few ulps / eps) is inconclusive as well: eps is too
small. A gradient bug touches none of this (only autograd's side) and fails; before a failure
is reported it is confirmed with the step eps/10, against kinks of ops no rule watches.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from cnntool.tasks.gradcheck.branches import record_branches, same_branches
from cnntool.tasks.gradcheck.results import FAIL, INCONCLUSIVE, PASS, Check, Tolerances

LossAt = Callable[[], float]  # the scalar loss at the tensors' current values (run without grad)

# An error up to this many float64 ulps of the loss (per unit step) can be rounding noise: the
# difference of two losses is only known to a few ulps (measured at eps 1e-6, all checks that
# passed: at most about 13 for LeNet-5, 1 for ResNet-18 and EfficientNet-Lite0). For a loss
# near 1 and eps 1e-6, 32 ulps are 7e-9, below the default atol: it matters for small eps.
_ROUNDING_ULPS = 32


@dataclass(frozen=True)
class CheckPlan:
    """How many checks per tensor. Each check that ends inconclusive is re-drawn up to
    `redraws` times, each time moving 1/`sparsity` of the elements the previous one moved."""

    directions: int = 3  # the first along autograd's own gradient, the others random
    coordinates: int = 2
    redraws: int = 4
    sparsity: int = 32


def tensor_generator(seed: int, path: str) -> torch.Generator:
    """A generator per tensor: a tensor's draws do not depend on which others are checked."""
    return torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(path.encode()))


def check_tensor(
    loss_at: LossAt,
    base_loss: float,
    tensor: Tensor,
    gradient: Tensor,
    tol: Tolerances,
    plan: CheckPlan,
    generator: torch.Generator,
) -> tuple[Check, ...]:
    """Compare `gradient` (autograd's dL/d`tensor`) with finite differences of `loss_at`.

    `tensor` is moved in place for each evaluation and always put back, also on an error.
    """
    if tensor.numel() == 0:
        return ()
    probe = _Probe(loss_at, base_loss, tensor, tol)
    checks = []
    for draw in _first_draws(gradient, plan, generator):
        for _ in range(plan.redraws + 1):
            check = probe.compare(draw, gradient)
            checks.append(check)
            if check.verdict != INCONCLUSIVE:
                break
            draw = draw.redrawn(tensor.numel(), plan.sparsity, generator)
    return tuple(checks)


@dataclass(frozen=True)
class _Draw:
    """A unit direction: dense (`direction`, the tensor's shape) or one element (`index` into
    the flattened tensor), moving `support` of the tensor's elements."""

    kind: str
    support: int
    direction: Tensor | None = None
    index: int | None = None

    def redrawn(self, numel: int, sparsity: int, generator: torch.Generator) -> _Draw:
        """A fresh draw after an inconclusive check: another element, or a sparser direction."""
        if self.direction is None:
            return _coordinate(numel, generator)
        return _sparse(self.direction, max(1, self.support // sparsity), generator)


def _first_draws(gradient: Tensor, plan: CheckPlan, generator: torch.Generator) -> Iterator[_Draw]:
    norm = gradient.norm()
    for i in range(plan.directions):
        if i == 0 and norm > 0:
            yield _Draw("gradient", gradient.numel(), direction=gradient / norm)
        else:
            yield _dense(gradient, generator)
    for _ in range(min(plan.coordinates, gradient.numel())):
        yield _coordinate(gradient.numel(), generator)


def _dense(like: Tensor, generator: torch.Generator) -> _Draw:
    # Drawn on the CPU, so that a seed gives the same directions on every device; in float32,
    # 2.5x faster than float64 draws (which a random direction does not need).
    values = torch.randn(like.shape, generator=generator).to(like.dtype)
    return _Draw("random", like.numel(), direction=(values / values.norm()).to(like.device))


def _sparse(like: Tensor, support: int, generator: torch.Generator) -> _Draw:
    flat = torch.zeros(like.numel(), dtype=like.dtype)
    chosen = torch.randint(like.numel(), (support,), generator=generator)
    flat[chosen] = torch.randn(support, generator=generator, dtype=like.dtype)
    flat[chosen[0]] += 1e-3  # never all zero, however unlucky the draw
    direction = (flat / flat.norm()).view(like.shape).to(like.device)
    return _Draw("sparse", support, direction=direction)


def _coordinate(numel: int, generator: torch.Generator) -> _Draw:
    return _Draw("coordinate", 1, index=int(torch.randint(numel, (1,), generator=generator)))


@dataclass(frozen=True)
class _Differences:
    """The finite differences of one draw at one step."""

    central: float
    one_sided_gap: float  # |forward − backward difference|: a kink's footprint
    rounding: float  # how large float64 rounding noise in `central` can be


class _Probe:
    """Moves one tensor along draws, evaluates the loss there and judges autograd's side."""

    def __init__(self, loss_at: LossAt, base_loss: float, tensor: Tensor, tol: Tolerances):
        self._loss_at, self._base, self._tensor, self._tol = loss_at, base_loss, tensor, tol
        self._original = tensor.detach().clone()
        self._base_branches: list[Tensor] | None = None

    def compare(self, draw: _Draw, gradient: Tensor) -> Check:
        if draw.direction is None:
            analytic = float(gradient.reshape(-1)[draw.index])
        else:
            analytic = float(torch.dot(gradient.reshape(-1), draw.direction.reshape(-1)))
        first = self._differences(draw, self._tol.eps)
        verdict, reason = self._judge(analytic, first)
        if verdict == FAIL and self._crosses_kink(draw, self._tol.eps):
            verdict, reason = INCONCLUSIVE, "kink"
        if verdict == FAIL:  # confirm with a smaller step, against kinks of unwatched ops
            verdict, reason = self._judge(analytic, self._differences(draw, self._tol.eps / 10))
            if verdict == PASS:
                verdict, reason = INCONCLUSIVE, "kink"
        return Check(draw.kind, analytic, first.central, verdict, reason, draw.index)

    def _judge(self, analytic: float, diff: _Differences) -> tuple[str, str]:
        error = abs(analytic - diff.central)
        if error <= self._tol.allowed(analytic, diff.central):
            return PASS, ""
        if error <= diff.rounding:
            return INCONCLUSIVE, "rounding"
        if diff.one_sided_gap >= error:
            return INCONCLUSIVE, "kink"
        return FAIL, ""

    def _crosses_kink(self, draw: _Draw, eps: float) -> bool:
        """Did a ±eps step change the branch of any ReLU, max-pool, clamp, … (see branches.py)?
        Recorded only for failing checks: it costs three more loss evaluations."""
        if self._base_branches is None:
            self._base_branches = record_branches(self._loss_at)
        return not all(
            same_branches(
                self._base_branches, record_branches(lambda s=step: self._loss_moved(draw, s))
            )
            for step in (eps, -eps)
        )

    def _differences(self, draw: _Draw, eps: float) -> _Differences:
        plus, minus = self._loss_moved(draw, eps), self._loss_moved(draw, -eps)
        base = self._base
        ulp = math.ulp(max(abs(plus), abs(minus), abs(base)))
        return _Differences(
            central=(plus - minus) / (2 * eps),
            one_sided_gap=abs((plus - base) - (base - minus)) / eps,
            rounding=_ROUNDING_ULPS * ulp / eps,
        )

    @torch.no_grad()
    def _loss_moved(self, draw: _Draw, step: float) -> float:
        tensor, original = self._tensor, self._original
        if draw.direction is None:
            where = torch.unravel_index(torch.tensor(draw.index), tensor.shape)
            tensor[where] = original[where] + step
        else:
            where = ...
            tensor.copy_(original).add_(draw.direction, alpha=step)
        try:
            return self._loss_at()
        finally:
            tensor[where] = original[where]
