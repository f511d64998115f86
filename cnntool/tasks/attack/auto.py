"""An AutoAttack-style robustness evaluation (Croce & Hein 2020): APGD-CE, APGD-T and the
gradient-free Square attack, each image counted robust only if every attack fails on it.

As in AutoAttack's standard version, the attacks run in order, each on the images the ones
before it left standing (robust accuracy is the same as running all of them on every image, at
a fraction of the cost); with `independent` each runs on every correctly classified image, which
gives each attack's own robust accuracy. Only images the model classifies correctly are
attacked. Per image, the point kept is the worst case over the attacks: the lowest margin
z_y − max_{j≠y} z_j any of them reached (negative: it broke the image).

Square succeeding where both gradient attacks failed is the classic sign of gradient masking
(Athalye et al. 2018; Croce & Hein 2020 §5): `AutoTally.masked` counts those images.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import torch
from torch import Tensor, nn

from cnntool.core.loading.models import LoadedModel
from cnntool.errors import CnnToolError
from cnntool.tasks.attack.apgd import apgd, apgd_targeted, margins
from cnntool.tasks.attack.methods import check_eps, classify
from cnntool.tasks.attack.square import square

ATTACKS = ("apgd-ce", "apgd-t", "square")
TITLES = {"apgd-ce": "APGD-CE", "apgd-t": "APGD-T", "square": "Square"}
GRADIENT_FREE = frozenset({"square"})
# RobustBench's standard radii, in [0, 1] pixel units
STANDARD_EPS = {"linf": 8 / 255, "l2": 0.5}


@dataclass(frozen=True)
class AutoSettings:
    """Which attacks, in which order, and their settings (AutoAttack's standard by default)."""

    norm: str = "linf"
    attacks: tuple[str, ...] = ATTACKS
    steps: int = 100  # APGD iterations per run
    restarts: int = 1  # APGD runs from random starts (APGD-T: per target class)
    target_classes: int = 9  # APGD-T: the classes ranked 2nd, 3rd, … by the clean logits
    queries: int = 5000  # Square: forward passes per image
    p_init: float = 0.8  # Square: share of the pixels its first squares cover
    independent: bool = False  # every attack on every correctly classified image

    def __post_init__(self):
        unknown = [name for name in self.attacks if name not in ATTACKS]
        if unknown or not self.attacks or len(set(self.attacks)) != len(self.attacks):
            raise CnnToolError(
                f"attacks must be some of {', '.join(ATTACKS)}, each once, not "
                f"'{','.join(self.attacks)}'"
            )
        check_eps(0.0, self.norm)  # an unknown norm
        for name, value in (("steps", self.steps), ("restarts", self.restarts)):
            if value < 1:
                raise CnnToolError(f"APGD {name} must be at least 1, not {value}")
        if self.target_classes < 1 or self.queries < 1:
            raise CnnToolError("target classes and queries must be at least 1")
        if not 0 < self.p_init <= 1:
            raise CnnToolError(f"p_init must be in (0, 1], not {self.p_init:g}")

    def function(self, name: str) -> Callable[..., Tensor]:
        """Attack `name` with these settings, as attack(model, images, labels, eps, generator=…)."""
        if name == "apgd-ce":
            return functools.partial(
                apgd, norm=self.norm, steps=self.steps, restarts=self.restarts, loss="ce"
            )
        if name == "apgd-t":
            return functools.partial(
                apgd_targeted,
                norm=self.norm,
                steps=self.steps,
                restarts=self.restarts,
                target_classes=self.target_classes,
            )
        return functools.partial(square, norm=self.norm, queries=self.queries, p_init=self.p_init)

    def for_classes(self, classes: int) -> AutoSettings:
        """These settings for a model with `classes` outputs: APGD-T aims at most at the
        `classes` − 1 other classes. Raises CnnToolError if APGD-T cannot run at all."""
        if "apgd-t" not in self.attacks:
            return self
        if classes < 4:
            raise CnnToolError(
                f"apgd-t needs a model with at least 4 classes, not {classes}; "
                "leave it out with --attacks apgd-ce,square"
            )
        return replace(self, target_classes=min(self.target_classes, classes - 1))

    def describe(self) -> list[str]:
        """Each attack with its settings, as a summary says it."""
        parts = {
            "apgd-ce": f"APGD-CE ({self.steps} steps × {self.restarts} restart"
            f"{'s' if self.restarts > 1 else ''})",
            "apgd-t": f"APGD-T ({self.target_classes} target classes × {self.steps} steps"
            + (f" × {self.restarts} restarts" if self.restarts > 1 else "")
            + ")",
            "square": f"Square ({self.queries} queries, p_init {self.p_init:g})",
        }
        return [parts[name] for name in self.attacks]


class AutoBatch(NamedTuple):
    """One batch evaluated: the worst-case adversarial images and each image's record fields
    (robust, worst_attack, margin, fooled_by)."""

    adversarial: Tensor
    details: list[dict]


def auto_attack(
    model: LoadedModel | nn.Module,
    images: Tensor,
    labels: Tensor,
    eps: float,
    *,
    settings: AutoSettings = AutoSettings(),
    generator: torch.Generator | None = None,
    targeted: bool = False,
) -> AutoBatch:
    """Evaluate a batch of [0, 1] pixels at ε with every attack of `settings` (random draws from
    `generator`). Returns the worst case per image and its record fields."""
    if targeted:
        raise CnnToolError("the AutoAttack evaluation is untargeted")
    check_eps(eps, settings.norm)
    labels = labels.to(images.device)
    predicted, _, logits = classify(model, images)
    settings = settings.for_classes(logits.shape[1])
    correct = predicted == labels
    worst, worst_margin = images.detach().clone(), margins(logits, labels)
    worst_fooled = ~correct
    worst_attack: list[str | None] = [None] * len(images)
    fooled_by: list[list[str]] = [[] for _ in images]
    standing = correct.clone()
    for name in settings.attacks:
        rows = (correct if settings.independent else standing).nonzero().flatten()
        if not len(rows):
            continue
        found = settings.function(name)(model, images[rows], labels[rows], eps, generator=generator)
        found_pred, _, found_logits = classify(model, found)
        fooled = found_pred != labels[rows]
        margin = margins(found_logits, labels[rows])
        # the worst case: a fooled point before one that is not, then the lower margin
        worse = (fooled & ~worst_fooled[rows]) | (
            (fooled == worst_fooled[rows]) & (margin < worst_margin[rows])
        )
        worst[rows[worse]] = found[worse]
        worst_margin[rows[worse]], worst_fooled[rows[worse]] = margin[worse], fooled[worse]
        for row in rows[worse].tolist():
            worst_attack[row] = name
        for row in rows[fooled].tolist():
            fooled_by[row].append(name)
        standing[rows[fooled]] = False
    # the final word on every image from one pass over the whole batch, as the records' adv_pred
    final_pred, _, final_logits = classify(model, worst)
    final_margin = margins(final_logits, labels)
    details = [
        {
            "robust": bool(correct[row] and final_pred[row] == labels[row]),
            "worst_attack": worst_attack[row],
            "margin": round(float(final_margin[row]), 6),
            "fooled_by": fooled_by[row],
        }
        for row in range(len(images))
    ]
    return AutoBatch(worst, details)


@dataclass
class AutoTally:
    """Per-attack counts over the images, fed one image's record fields at a time."""

    attacks: Sequence[str]
    independent: bool = False
    images: int = 0
    clean_correct: int = 0
    robust: int = 0
    masked: int = 0  # broken by a gradient-free attack only, every gradient attack having failed
    fooled: dict = field(default_factory=dict)  # attack -> images it fooled
    standing: dict = field(default_factory=dict)  # attack -> correct images it did not fool
    # (independent) or that neither it nor any attack before it fooled (the cascade)

    def __post_init__(self):
        self.fooled = dict.fromkeys(self.attacks, 0)
        self.standing = dict.fromkeys(self.attacks, 0)

    def add(self, clean_correct: bool, details: dict) -> None:
        self.images += 1
        if not clean_correct:
            return
        self.clean_correct += 1
        self.robust += details["robust"]
        fooled = set(details["fooled_by"])
        gradient = [name for name in self.attacks if name not in GRADIENT_FREE]
        if fooled and not fooled & set(gradient) and gradient:
            self.masked += 1
        broken = False
        for name in self.attacks:
            self.fooled[name] += name in fooled
            broken = (name in fooled) if self.independent else broken or name in fooled
            self.standing[name] += not broken

    def merge(self, other: AutoTally) -> None:
        """Add another rank's counts (torchrun)."""
        for name in ("images", "clean_correct", "robust", "masked"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in self.attacks:
            self.fooled[name] += other.fooled[name]
            self.standing[name] += other.standing[name]

    def accuracy(self, count: int) -> float | None:
        return count / self.images if self.images else None

    def rows(self) -> list[dict]:
        """One row per attack (its robust accuracy: alone, or after those before it), then the
        worst case over all of them."""
        rows = [
            {
                "attack": name,
                "robust_accuracy": _rounded(self.accuracy(self.standing[name])),
                "fooled": self.fooled[name],
            }
            for name in self.attacks
        ]
        rows.append(
            {
                "attack": "worst case",
                "robust_accuracy": _rounded(self.accuracy(self.robust)),
                "fooled": self.clean_correct - self.robust,
            }
        )
        return rows


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
