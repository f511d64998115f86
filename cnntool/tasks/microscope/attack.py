"""The microscope's optional attack page: FGSM accuracy against ε over DATA (tasks.attack), and
the first few images the largest ε fools (of different labels, where it can), for triptychs.

A scan consumer over [0, 1] pixels (run the session with `normalize=False`): FGSM takes its own
forward and backward per batch and ε. Labels are the dataset's where they map onto the model's
classes, else the model's clean prediction (tasks.attack's rule). Counts merge across ranks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from cnntool.core.session import Consumer
from cnntool.tasks.attack import AttackTally, attack_batch, fgsm
from cnntool.tasks.predict import label_mapper

TRIPTYCHS = 3


@dataclass(frozen=True)
class Fooled:
    """One image the largest ε fools: [0, 1] pixels (C, H, W) before and after."""

    index: int
    eps: float
    label: int
    adversarial_class: int
    clean: torch.Tensor
    adversarial: torch.Tensor


@dataclass(frozen=True)
class AttackView:
    """Accuracy at each ε (on every image attacked) and the first fooled images."""

    method: str
    eps: tuple[float, ...]
    accuracy: tuple[float, ...]
    images: int
    labels_from_dataset: int
    fooled: tuple[Fooled, ...]
    clean_accuracy: float | None = None  # on the same images, the accuracy at ε = 0


class FgsmSweep(Consumer):
    """FGSM at each ε on every batch (no shared forward: it needs input gradients)."""

    def __init__(self, model, dataset, eps: Sequence[float], triptychs: int = TRIPTYCHS):
        self.model, self.dataset, self.eps = model, dataset, tuple(eps)
        self.tally = AttackTally(self.eps)
        self.triptychs = triptychs
        self.fooled: list[Fooled] = []
        self._to_class = label_mapper(dataset, model.class_names)

    def end(self, batch, output) -> None:
        outcomes = attack_batch(
            self.model, self.dataset, batch, fgsm, self.eps, None, self._to_class
        )
        for per_eps in outcomes:
            for outcome in per_eps:
                self.tally.add(outcome)
        labels = {f.label for f in self.fooled}
        for outcome in outcomes[-1]:  # the largest ε comes last (sorted by the caller)
            if (
                outcome.success
                and len(self.fooled) < self.triptychs
                and outcome.label not in labels
            ):
                labels.add(outcome.label)
                self.fooled.append(
                    Fooled(
                        outcome.index,
                        outcome.eps,
                        outcome.label,
                        outcome.adv_pred,
                        outcome.clean.detach().cpu(),
                        outcome.adversarial.detach().cpu(),
                    )
                )

    def part(self) -> tuple:
        """What this rank contributes (gather it; `merged` takes every rank's)."""
        return self.tally, self.fooled


def merged(parts: Sequence[tuple], eps: Sequence[float], triptychs: int = TRIPTYCHS) -> AttackView:
    """The ranks' tallies added up; the fooled images with the lowest dataset indices, one per
    label (each rank offers its first fooled image of up to `triptychs` labels)."""
    tally = AttackTally(eps)
    for part in parts:
        tally.merge(part[0])
    summaries = tally.summaries()
    fooled, labels = [], set()
    for candidate in sorted((f for part in parts for f in part[1]), key=lambda f: f.index):
        if candidate.label not in labels and len(fooled) < triptychs:
            labels.add(candidate.label)
            fooled.append(candidate)
    return AttackView(
        method="FGSM",
        eps=tuple(s.eps for s in summaries),
        accuracy=tuple(s.adv_accuracy or 0.0 for s in summaries),
        images=summaries[0].images if summaries else 0,
        labels_from_dataset=summaries[0].labels_from_dataset if summaries else 0,
        fooled=tuple(fooled),
        clean_accuracy=summaries[0].clean_accuracy if summaries else None,
    )
