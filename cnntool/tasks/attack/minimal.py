"""Minimal-perturbation attacks: Carlini–Wagner L2 and DeepFool look for the smallest L2 change
that fools the model, instead of the most harmful one within a budget ε. What they measure is
the distance from each image to the model's decision boundary: the per-image perturbation norms
and their distribution over a dataset."""

from __future__ import annotations

import functools
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from cnntool.errors import CnnToolError
from cnntool.tasks.attack.cw import check_cw, cw
from cnntool.tasks.attack.deepfool import check_deepfool, deepfool
from cnntool.tasks.attack.outcomes import AttackedImage, AttackFunction

MINIMAL_METHODS = ("cw", "deepfool")
CW_DEFAULTS = {"c": 1.0, "kappa": 0.0, "steps": 50, "lr": 0.01}  # torchattacks' CW
# torchattacks' steps, overshoot and candidates (all); the paper's way of adding up the steps
DEEPFOOL_DEFAULTS = {"steps": 50, "overshoot": 0.02, "candidates": None, "variant": "paper"}


def minimal_attack(method: str, **settings) -> AttackFunction:
    """cw or deepfool with its settings (the defaults above for those not given), as
    `attack(model, images, labels, None, targeted=…)`. Raises CnnToolError for an unknown
    method, a setting it does not take and a value it cannot run with."""
    defaults = {"cw": CW_DEFAULTS, "deepfool": DEEPFOOL_DEFAULTS}.get(method)
    if defaults is None:
        raise CnnToolError(f"unknown attack '{method}'; use {' or '.join(MINIMAL_METHODS)}")
    unknown = sorted(set(settings) - set(defaults))
    if unknown:
        raise CnnToolError(f"{method} takes no {', '.join(unknown)}")
    settings = {**defaults, **settings}
    (check_cw if method == "cw" else check_deepfool)(**settings)
    return functools.partial(cw if method == "cw" else deepfool, **settings)


def method_name(method: str) -> str:
    """The attack as people write it: 'CW', 'DeepFool'."""
    return {"cw": "CW", "deepfool": "DeepFool"}[method]


def describe_settings(method: str, **settings) -> str:
    """'c = 1, κ = 0, 50 steps, lr 0.01': the settings as a summary names them."""
    s = {**(CW_DEFAULTS if method == "cw" else DEEPFOOL_DEFAULTS), **settings}
    if method == "cw":
        return f"c = {s['c']:g}, κ = {s['kappa']:g}, {s['steps']} steps, lr {s['lr']:g}"
    classes = "every class" if s["candidates"] is None else f"top {s['candidates']} classes"
    return f"{s['variant']}, {s['steps']} steps, overshoot {s['overshoot']:g}, {classes}"


@dataclass(frozen=True)
class ImageNorms:
    """What the norm statistics need of one attacked image."""

    attacked: bool  # its clean prediction was not a success already (and its logits finite)
    success: bool
    l2: float
    linf: float

    @classmethod
    def of(cls, outcome: AttackedImage) -> ImageNorms:
        already = outcome.succeeded(outcome.clean_pred)
        return cls(outcome.finite and not already, outcome.success, outcome.l2, outcome.linf)


@dataclass(frozen=True)
class PerturbationNorms:
    """The perturbation norms of the images the attack had to fool (those the model already got
    wrong, or already put in the target class, need no perturbation and are counted apart):
    L2 and L∞ of each success, in dataset order, and how many failed."""

    l2: list[float]
    linf: list[float]
    failures: int
    already: int  # success before the attack (or non-finite logits): not attacked

    @classmethod
    def of(cls, images: Iterable[ImageNorms]) -> PerturbationNorms:
        images = list(images)
        fooled = [i for i in images if i.attacked and i.success]
        return cls(
            l2=[i.l2 for i in fooled],
            linf=[i.linf for i in fooled],
            failures=sum(i.attacked and not i.success for i in images),
            already=sum(not i.attacked for i in images),
        )

    @property
    def successes(self) -> int:
        return len(self.l2)

    def summary(self) -> dict | None:
        """Median, mean, min and max of the successes' L2 and L∞ (None without a success)."""
        if not self.l2:
            return None
        return {
            f"{name}_{stat}": round(fn(values), 6)
            for name, values in (("l2", self.l2), ("linf", self.linf))
            for stat, fn in (
                ("median", statistics.median),
                ("mean", statistics.fmean),
                ("min", min),
                ("max", max),
            )
        }
