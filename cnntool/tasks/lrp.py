"""Layer-wise relevance propagation as attribution methods (`visualize deconv --method lrp-…`,
`visualize check`), on the rules of `core.relevance`.

Three methods, named after the rule their convolutions get, as zennit's composites are:
- `lrp-zplus`: z+ on convolutions, ε on dense layers, flat on the first layer (zennit's
  EpsilonPlusFlat, the composite its tutorials start from);
- `lrp-alphabeta`: α-β on convolutions (α = 2, β = 1 by default: zennit's
  EpsilonAlpha2Beta1Flat), ε on dense layers, flat on the first layer;
- `lrp-epsilon`: ε on every convolution and dense layer (Bach et al. 2015's LRP-ε; captum's
  `LRP` puts ε on every layer too), flat on the first layer.
The first layer's rule is `LRP.first` (flat, zbox with the pixel bounds of the model's
normalization, or one of the three layer rules).

The relevance starts at the target's value (a class logit, or one unit's activation), so it
is conserved when the input's relevances sum to it (Bach et al.'s R^(L) = f(x)). zennit starts
from whatever `attr_output` it is given; the rules are linear in the relevance, so its map from
a one-hot start is ours divided by f(x). What does not reach the input was absorbed by the
biases (the ε rule's and the merged BatchNorms' shifts), by the stabilizer, or created or
destroyed by the α-β rule's two halves: `Conservation` reports how much.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from cnntool.core.relevance import FIRST_RULES, Composite, RelevanceReport, propagate_relevance
from cnntool.errors import CnnToolError

# method -> the rule of its convolutions
METHODS = {"lrp-epsilon": "epsilon", "lrp-zplus": "zplus", "lrp-alphabeta": "alphabeta"}


@dataclass(frozen=True)
class LRP:
    """The settings of the LRP methods: `first`, the first layer's rule (FIRST_RULES; zbox takes
    its bounds from the model's preprocessing: black and white pixels normalized); `epsilon`,
    the ε rule's ε (zennit's 1e-6); `alpha`, `beta`, the α-β rule's (α − β = 1)."""

    first: str = "flat"
    epsilon: float = 1e-6
    alpha: float = 2.0
    beta: float = 1.0

    def __post_init__(self):
        if self.first not in FIRST_RULES:
            raise CnnToolError(
                f"unknown first-layer LRP rule '{self.first}'; use one of {', '.join(FIRST_RULES)}"
            )
        Composite(epsilon=self.epsilon, alpha=self.alpha, beta=self.beta)  # checks them

    def composite(self, method: str, x: Tensor | None = None, preprocessing=None) -> Composite:
        """The rules of `method` for inputs like `x` (the zbox bounds need x's shape and the
        model's `preprocessing`)."""
        if method not in METHODS:
            raise CnnToolError(f"unknown LRP method '{method}'; use one of {', '.join(METHODS)}")
        low = high = None
        if self.first == "zbox":
            if preprocessing is None or x is None:
                raise CnnToolError(
                    "the zbox first-layer rule needs the model's preprocessing (the pixel "
                    "bounds black and white map to); pass preprocessing="
                )
            pixels = torch.zeros_like(x[:1])
            low, high = preprocessing.normalize(pixels), preprocessing.normalize(pixels + 1)
        return Composite(
            conv=METHODS[method],
            dense="epsilon",
            first=self.first,
            epsilon=self.epsilon,
            alpha=self.alpha,
            beta=self.beta,
            low=low,
            high=high,
        )


@dataclass(frozen=True)
class Conservation:
    """One map's relevance against where it started: Σ relevance of the input (float64) and the
    target's value f(x), with the rules used and what had none."""

    f_input: float
    total: float
    rules: str  # Composite.describe()
    title: str  # Composite.short()
    layers: dict  # "conv2d: z+" -> calls
    passed: dict  # smooth activations passed through without a rule of their own
    unruled: dict  # functions of the input with no rule: their gradient carried relevance

    @property
    def gap(self) -> float:
        return abs(self.total - self.f_input)

    @property
    def relative_gap(self) -> float:
        """gap / |f(x)| (inf when f(x) is 0 and the gap is not)."""
        if self.f_input == 0:
            return 0.0 if self.gap == 0 else math.inf
        return self.gap / abs(self.f_input)

    def to_record(self) -> dict:
        return {
            "rules": self.rules,
            "layers": self.layers,
            "passed": self.passed,
            "unruled": self.unruled,
            "f_input": self.f_input,
            "sum": self.total,
            "gap": self.gap,
            "relative_gap": self.relative_gap,
        }


def layer_counts(report: RelevanceReport) -> dict[str, int]:
    """'conv2d: z+' -> calls, in the order the forward met them."""
    return {f"{what}: {rule}": n for (what, rule), n in report.rules.items()}


def relevance_batch(
    model: nn.Module,
    x: Tensor,
    scores: Callable[[Tensor], Tensor],
    composite: Composite,
) -> tuple[Tensor, Tensor, list[Conservation], RelevanceReport]:
    """LRP of every image of the batch `x` (N×C×H×W, normalized model input): `scores(batch)`
    runs the model and returns each image's target (N). Returns the relevance (shape of x),
    the target values (N), each image's conservation and what the rules saw. One forward and
    one backward serve the batch: the images of a batch do not interact (eval mode)."""
    leaf = x.detach().requires_grad_()
    with propagate_relevance(model, composite) as report, torch.enable_grad():
        values = scores(leaf)
    (relevance,) = torch.autograd.grad(values, leaf, values.detach())
    totals = relevance.detach().double().flatten(1).sum(1).tolist()
    conservation = [
        Conservation(
            f_input=float(v),
            total=t,
            rules=composite.describe(),
            title=composite.short(),
            layers=layer_counts(report),
            passed=dict(report.passed),
            unruled=dict(report.unruled),
        )
        for v, t in zip(values.detach().double().tolist(), totals, strict=True)
    ]
    return relevance.detach(), values.detach(), conservation, report


def class_relevance(
    model: nn.Module,
    x: Tensor,
    targets: Tensor,
    method: str,
    settings: LRP = LRP(),
    preprocessing=None,
) -> Tensor:
    """The relevance (N×C×H×W) of each image's class `targets[i]` logit (`visualize check`)."""
    from cnntool.core.logits import main_output

    rows = torch.arange(len(x), device=x.device)
    wanted = targets.to(x.device)
    relevance, *_ = relevance_batch(
        model,
        x,
        lambda batch: main_output(model(batch))[rows, wanted],
        settings.composite(method, x, preprocessing),
    )
    return relevance
