"""The Square attack (Andriushchenko, Croce, Flammarion & Hein 2020, "Square Attack: a
query-efficient black-box adversarial attack via random search"): random search that asks the
model only for its logits, never for a gradient, so a model whose gradients are masked (flat,
noisy or broken by a rounding step) cannot hide from it.

Each query proposes a change inside one random square of side s and keeps it when the margin
z_y − max_{j≠y} z_j goes down; an image stops as soon as it is misclassified. s shrinks with
the schedule `square_fraction` (the share p of the pixels a square covers starts at `p_init`
and halves after 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 of 10,000 queries, rescaled
to `queries`).

- L∞: the start is vertical stripes of ±ε; each square gets one random ±ε per channel, redrawn
  while it would leave the image unchanged.
- L2: the start is a 5×5 grid of ±"pseudo-Gaussian" bumps scaled to length ε; each query moves
  the perturbation's mass from a second random square into the first, reshaped as a new bump,
  and rescales the whole to length ε.

Written after the authors' code (max-andr/square-attack): per-image squares for L∞, one square
pair per query for the batch in L2, `queries` counting the start as the first query.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from cnntool.core.loading.models import LoadedModel
from cnntool.errors import CnnToolError
from cnntool.tasks.attack.apgd import margins
from cnntool.tasks.attack.methods import _input_gradient_only, _PixelForward, check_eps

_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64))
_SCHEDULE += ((6000, 128), (8000, 256))
_UNCHANGED = 1e-7  # a proposal that moves no pixel of its square by more is drawn again
_GUARD = 1e-12


def square_fraction(p_init: float, query: int, queries: int) -> float:
    """p, the share of the image's pixels the square of query number `query` (0-based) covers:
    `p_init` until 10 of 10,000 queries, then halved at each step of the authors' schedule,
    the schedule stretched or squeezed to `queries`."""
    at = int(query / queries * 10000)
    for end, divisor in _SCHEDULE:
        if at <= end:
            return p_init / divisor
    return p_init / 512


def square(
    model: LoadedModel | nn.Module,
    images: Tensor,
    labels: Tensor,
    eps: float,
    *,
    norm: str = "linf",
    queries: int = 5000,
    p_init: float = 0.8,
    generator: torch.Generator | None = None,
    targeted: bool = False,
) -> Tensor:
    """The Square attack, untargeted, with at most `queries` forward passes per image (random
    draws from `generator`). Returns the adversarial batch in [0, 1], inside the ε-ball: per
    image the lowest-margin point found (the first misclassified one, if any)."""
    if targeted:
        raise CnnToolError("this Square attack is untargeted")
    check_eps(eps, norm)
    if queries < 1:
        raise CnnToolError(f"Square needs at least 1 query, not {queries}")
    if not 0 < p_init <= 1:
        raise CnnToolError(f"p_init must be in (0, 1], not {p_init:g}")
    originals = images.detach()
    if eps == 0 or originals.dim() != 4:
        return originals.clone()
    forward = _PixelForward.of(model)
    labels = labels.to(originals.device)
    search = _LinfSearch if norm == "linf" else _L2Search
    with _input_gradient_only(forward.module), torch.no_grad():
        return search(forward, originals, labels, eps, p_init, queries, generator).run()


class _Search:
    """The random search shared by both norms: the best point and margin of every image, and
    the images still correctly classified (`active`, indices into the batch)."""

    def __init__(self, forward, originals, labels, eps, p_init, queries, generator):
        self.forward, self.originals, self.labels = forward, originals, labels
        self.eps, self.p_init, self.queries, self.generator = eps, p_init, queries, generator
        self.channels, self.height, self.width = originals.shape[1:]
        self.best = self.start()
        self.margin = self.margins(self.best, labels)

    def margins(self, x: Tensor, labels: Tensor) -> Tensor:
        return margins(self.forward(x).float(), labels)

    def run(self) -> Tensor:
        for query in range(1, self.queries):  # the start was the first query
            active = (self.margin > 0).nonzero().flatten()
            if not len(active):
                break
            side = self.side(square_fraction(self.p_init, query - 1, self.queries))
            proposal = self.propose(active, side)
            margin = self.margins(proposal, self.labels[active])
            better = margin < self.margin[active]
            self.best[active[better]] = proposal[better]
            self.margin[active[better]] = margin[better]
        return self.best

    def side(self, p: float) -> int:
        raise NotImplementedError

    def start(self) -> Tensor:
        raise NotImplementedError

    def propose(self, active: Tensor, side: int) -> Tensor:
        raise NotImplementedError

    def signs(self, *shape: int) -> Tensor:
        """±1 at random."""
        drawn = torch.randint(0, 2, shape, generator=self.generator, device=self.originals.device)
        return drawn.to(self.originals.dtype) * 2 - 1

    def corners(self, count: int, side: int) -> tuple[Tensor, Tensor]:
        """Top-left corners of `count` squares of `side` inside the image."""
        device = self.originals.device
        top = torch.randint(
            0, self.height - side, (count,), generator=self.generator, device=device
        )
        left = torch.randint(
            0, self.width - side, (count,), generator=self.generator, device=device
        )
        return top, left

    def window(self, top: Tensor, left: Tensor, side: int) -> Tensor:
        """(N, 1, H, W) masks of the squares at `top`, `left`."""
        device = self.originals.device
        rows = torch.arange(self.height, device=device).view(1, -1, 1)
        columns = torch.arange(self.width, device=device).view(1, 1, -1)
        inside = (rows >= top.view(-1, 1, 1)) & (rows < top.view(-1, 1, 1) + side)
        inside = inside & (columns >= left.view(-1, 1, 1)) & (columns < left.view(-1, 1, 1) + side)
        return inside.unsqueeze(1)


class _LinfSearch(_Search):
    def side(self, p: float) -> int:
        features = self.channels * self.height * self.width
        side = int(round(math.sqrt(p * features / self.channels)))
        return min(max(side, 1), self.height - 1, self.width - 1)

    def start(self) -> Tensor:
        count = len(self.originals)
        stripes = self.signs(count, self.channels, 1, self.width)
        return torch.clamp(self.originals + self.eps * stripes, 0.0, 1.0)

    def propose(self, active: Tensor, side: int) -> Tensor:
        originals, best = self.originals[active], self.best[active]
        mask = self.window(*self.corners(len(active), side), side)
        proposal = best.clone()
        redraw = torch.ones(len(active), dtype=torch.bool, device=best.device)
        for _ in range(100):  # a square that would stay as it is gets new signs (rarely twice)
            if not redraw.any():
                break
            which = redraw.nonzero().flatten()
            colours = self.eps * self.signs(len(which), self.channels, 1, 1)
            moved = torch.clamp(originals[which] + colours, 0.0, 1.0)
            proposal[which] = torch.where(mask[which], moved, best[which])
            change = (proposal[which] - best[which]).abs().flatten(1).amax(dim=1)
            redraw[which] = change < _UNCHANGED
        return proposal


class _L2Search(_Search):
    def side(self, p: float) -> int:
        features = self.channels * self.height * self.width
        side = max(int(round(math.sqrt(p * features / self.channels))), 3)
        side += side % 2 == 0  # odd, as the authors' bump is built for
        limit = min(self.height, self.width) - 1
        return side if side <= limit else limit - (limit % 2 == 0)

    def start(self) -> Tensor:
        count, (height, width) = len(self.originals), (self.height, self.width)
        side = height // 5
        delta = torch.zeros_like(self.originals)
        if side >= 1:
            first = (height - side * 5) // 2
            for top in range(first, first + side * (height // side), side):
                for left in range(first, first + side * (width // side), side):
                    if top + side > height or left + side > width:
                        continue
                    bump = self.bump(side).view(1, 1, side, side)
                    delta[:, :, top : top + side, left : left + side] += bump * self.signs(
                        count, self.channels, 1, 1
                    )
        return torch.clamp(self.originals + delta / _norms(delta) * self.eps, 0.0, 1.0)

    def propose(self, active: Tensor, side: int) -> Tensor:
        originals = self.originals[active]
        delta = self.best[active] - originals
        (top,), (left,) = self.corners(1, side)
        (top2,), (left2,) = self.corners(1, side)
        first = (slice(None), slice(None), slice(top, top + side), slice(left, left + side))
        second = (slice(None), slice(None), slice(top2, top2 + side), slice(left2, left2 + side))
        both = torch.zeros_like(delta[:1, :1])
        both[first], both[second] = 1.0, 1.0
        mass_first = delta[first].flatten(2).norm(dim=2).view(len(active), -1, 1, 1)
        mass_both = (delta * both).flatten(2).norm(dim=2).view(len(active), -1, 1, 1)
        length = _norms(delta)
        bump = self.bump(side).view(1, 1, side, side) * self.signs(len(active), self.channels, 1, 1)
        bump = bump + delta[first] / (mass_first + _GUARD)
        budget = torch.clamp(self.eps**2 - length**2, min=0) / self.channels + mass_both**2
        bump = bump / bump.flatten(2).norm(dim=2).view(len(active), -1, 1, 1) * budget.sqrt()
        delta[second] = 0.0
        delta[first] = bump
        return torch.clamp(originals + delta / _norms(delta) * self.eps, 0.0, 1.0)

    def bump(self, side: int) -> Tensor:
        """The authors' "meta pseudo-Gaussian" square: two opposite halves, each nested
        rectangles weighted 1/k², of length 1, turned by 90° half of the time."""
        device = self.originals.device
        half = side // 2
        shape = torch.cat(
            [_rectangles(half, side, device), -_rectangles(side - half, side, device)]
        )
        shape = shape / shape.norm()
        if torch.rand(1, generator=self.generator, device=device).item() > 0.5:
            shape = shape.t()
        return shape.to(self.originals.dtype)


def _rectangles(rows: int, columns: int, device) -> Tensor:
    """Nested rectangles round the centre, the k-th weighted 1/k² (summed where they overlap),
    of length 1."""
    shape = torch.zeros(rows, columns, device=device)
    centre_row, centre_column = rows // 2, columns // 2
    for k in range(max(centre_row + 1, centre_column + 1)):
        top, left = centre_row - k, centre_column - k
        shape[
            max(top, 0) : min(top + 2 * k + 1, rows), max(left, 0) : min(left + 2 * k + 1, columns)
        ] += 1.0 / (k + 1) ** 2
    return shape / shape.norm() if rows else shape


def _norms(t: Tensor) -> Tensor:
    """‖t‖₂ per image (+ the guard), shaped to divide `t`."""
    return t.flatten(1).norm(p=2, dim=1).view(-1, 1, 1, 1) + _GUARD
