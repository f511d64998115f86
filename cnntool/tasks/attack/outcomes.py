"""Attack every image of a dataset at one or more ε: per-image outcomes and per-ε summaries.

Labels come from the dataset when they map onto the model's classes, else from the model's own
clean prediction (so a true label never leaks where there is none, as cleverhans advises); every
outcome says which (`label_source`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms.functional import pil_to_tensor

from cnntool.core.data import Batch, BatchStream, DataSet
from cnntool.core.loading.models import LoadedModel
from cnntool.tasks.attack.methods import classify
from cnntool.tasks.attack.targets import Target, target_classes
from cnntool.tasks.predict import label_mapper

# attack(model, images, labels, eps, targeted=...) -> adversarial images, e.g. fgsm or a
# functools.partial of pgd with its steps and step size; or -> (adversarial images, one dict of
# more record fields per image), e.g. auto.auto_attack
AttackFunction = Callable[..., Tensor]


@dataclass(frozen=True)
class AttackedImage:
    """One image attacked at one ε. `clean` and `adversarial` are [0, 1] pixels (C, H, W)."""

    index: int
    path: str
    eps: float | None  # None: a minimal-perturbation attack (cw, deepfool) has no budget
    label: int
    label_source: str  # "dataset" or "prediction"
    target: int | None
    clean_pred: int
    clean_conf: float
    adv_pred: int
    adv_conf: float
    linf: float
    l2: float
    original_size: tuple[int, int]
    upscaled: bool  # the original was smaller than the model's input and was enlarged
    clean_name: str | None
    adv_name: str | None
    clean: Tensor = field(repr=False)
    adversarial: Tensor = field(repr=False)
    finite: bool = True  # False: the clean or the adversarial logits held NaN or inf
    details: dict | None = field(default=None, repr=False)  # more record fields from the attack

    @property
    def success(self) -> bool:
        return succeeded(self.adv_pred, self.label, self.target)

    def succeeded(self, prediction: int) -> bool:
        """Whether a prediction of this image (e.g. of its saved file) is still a success."""
        return succeeded(prediction, self.label, self.target)

    def to_record(self) -> dict:
        record = {"path": self.path}
        if self.eps is not None:
            record["eps"] = self.eps
        record.update(label=self.label, label_source=self.label_source)
        if self.target is not None:
            record["target"] = self.target
        record.update(
            clean_pred=self.clean_pred,
            clean_name=self.clean_name,
            clean_conf=round(self.clean_conf, 6),
            adv_pred=self.adv_pred,
            adv_name=self.adv_name,
            adv_conf=round(self.adv_conf, 6),
            success=self.success,
            linf=round(self.linf, 6),
            l2=round(self.l2, 6),
        )
        record.update(self.details or {})
        if self.upscaled:
            record["upscaled_from"] = list(self.original_size)
        if not self.finite:
            record["nonfinite_logits"] = True
        return record


def succeeded(prediction: int, label: int, target: int | None) -> bool:
    """Targeted: the prediction is the target. Untargeted: it is no longer the label."""
    return prediction == target if target is not None else prediction != label


def attack_batch(
    model: LoadedModel,
    dataset: DataSet,
    batch: Batch,
    attack: AttackFunction,
    eps_values: Sequence[float],
    target: Target | None,
    to_class: Callable[[int], int | None],
    prepared=None,
) -> list[list[AttackedImage]]:
    """One batch of [0, 1] pixels attacked at each ε: a list of the batch's outcomes per ε.
    `prepared` (core.runtime, needs_grad=True) runs it in the scan's layout and precision."""
    if prepared is None:
        return _attack_batch(
            model,
            dataset,
            batch,
            attack,
            eps_values,
            target,
            to_class,
            batch.inputs.to(model.device),
        )
    with prepared.forward():
        return _attack_batch(
            model,
            dataset,
            batch,
            attack,
            eps_values,
            target,
            to_class,
            prepared.inputs(batch.inputs),
        )


def _attack_batch(model, dataset, batch, attack, eps_values, target, to_class, images):
    crop = model.preprocessing.crop
    clean_pred, clean_conf, clean_logits = classify(model, images)
    mapped = [to_class(i) for i in batch.indices]
    labels = torch.tensor(
        [clean_pred[row].item() if label is None else label for row, label in enumerate(mapped)],
        device=images.device,
    )
    targets = target_classes(target, clean_logits) if target is not None else None
    outcomes = []
    for eps in eps_values:
        adversarial = attack(
            model, images, labels if targets is None else targets, eps, targeted=targets is not None
        )
        details = None if isinstance(adversarial, Tensor) else adversarial[1]
        adversarial = adversarial if details is None else adversarial[0]
        adv_pred, adv_conf, adv_logits = classify(model, adversarial)
        finite = (
            torch.isfinite(clean_logits).all(dim=1) & torch.isfinite(adv_logits).all(dim=1)
        ).tolist()
        delta = (adversarial - images).flatten(1)
        linf, l2 = delta.abs().amax(dim=1).tolist(), delta.norm(p=2, dim=1).tolist()
        outcomes.append(
            [
                AttackedImage(
                    index=item,
                    path=dataset.paths[item],
                    eps=eps,
                    label=int(labels[row]),
                    label_source="prediction" if mapped[row] is None else "dataset",
                    target=None if targets is None else int(targets[row]),
                    clean_pred=int(clean_pred[row]),
                    clean_conf=float(clean_conf[row]),
                    adv_pred=int(adv_pred[row]),
                    adv_conf=float(adv_conf[row]),
                    linf=linf[row],
                    l2=l2[row],
                    original_size=tuple(batch.sizes[row]),
                    upscaled=batch.sizes[row][0] < crop[1] or batch.sizes[row][1] < crop[0],
                    clean_name=model.class_name(int(clean_pred[row])),
                    adv_name=model.class_name(int(adv_pred[row])),
                    clean=images[row],
                    adversarial=adversarial[row],
                    finite=finite[row],
                    details=None if details is None else details[row],
                )
                for row, item in enumerate(batch.indices)
            ]
        )
    return outcomes


def attack_dataset(
    model: LoadedModel,
    stream: BatchStream,
    attack: AttackFunction,
    eps_values: Sequence[float],
    target: Target | None = None,
) -> Iterator[list[AttackedImage]]:
    """For each batch of `stream` (which must give [0, 1] pixels: `normalize=False`) and each ε,
    the batch's attacked images. Unreadable images are skipped (see `stream.skipped`)."""
    if stream.normalize:
        raise ValueError("attack_dataset needs a BatchStream of [0, 1] pixels (normalize=False)")
    to_class = label_mapper(stream.dataset, model.class_names)
    for batch in stream:
        yield from attack_batch(model, stream.dataset, batch, attack, eps_values, target, to_class)


def classify_images(
    model: LoadedModel, images: Sequence[Image.Image], *, preprocess: bool = True
) -> list[int]:
    """The model's predictions for PIL images: through its whole preprocessing (resize and crop:
    full-size photos), or with `preprocess=False` as they are (adversarial images read back
    from 8-bit files, which already have the model's input size)."""
    if preprocess:
        pixels = torch.stack([model.preprocessing.to_pixels(image) for image in images])
    else:
        pixels = torch.stack(
            [pil_to_tensor(model.preprocessing.convert(image)).float().div(255) for image in images]
        )
    predicted, _, _ = classify(model, pixels.to(model.device))
    return predicted.tolist()


@dataclass(frozen=True)
class AttackSummary:
    """How the attack fared on all images at one ε."""

    eps: float
    images: int
    labels_from_dataset: int
    clean_correct: int
    adv_correct: int
    successes: int
    saved: int = 0
    successes_after_save: int = 0
    nonfinite: int = 0  # images whose clean or adversarial logits held NaN/inf (counted wrong)

    @property
    def clean_accuracy(self) -> float | None:
        return self.clean_correct / self.images if self.images else None

    @property
    def adv_accuracy(self) -> float | None:
        return self.adv_correct / self.images if self.images else None

    @property
    def success_rate(self) -> float | None:
        return self.successes / self.images if self.images else None

    def label_sources(self) -> str:
        """Where the labels came from, as a summary says it."""
        from_predictions = self.images - self.labels_from_dataset
        if not from_predictions:
            return "labels from the dataset"
        note = "the model's clean predictions, so clean accuracy counts them as right"
        if not self.labels_from_dataset:
            return f"labels: {note}"
        return (
            f"labels: {self.labels_from_dataset} from the dataset, {from_predictions} from {note}"
        )

    def describe(self, method: str, norm: str, targeted: bool, eps_text: str | None) -> str:
        """One sentence: accuracy before and after, success rate, and after saving (`eps_text`
        None: an attack without a budget)."""
        goal = "classified as the target" if targeted else "misclassified"
        budget = "" if eps_text is None else f" ε = {eps_text}"
        line = (
            f"{method}{budget} ({norm}) on {self.images} images "
            f"({self.label_sources()}): accuracy {_percent(self.clean_accuracy)} → "
            f"{_percent(self.adv_accuracy)}; success rate {_percent(self.success_rate)} "
            f"({self.successes}/{self.images} {goal})"
        )
        if self.saved:
            line += (
                f"; after saving as 8-bit PNG {self.successes_after_save}/{self.saved} "
                "still succeed"
            )
        if self.nonfinite:
            line += f"; {self.nonfinite} with non-finite logits counted wrong"
        return line

    def to_record(self) -> dict:
        record = {
            "eps": self.eps,
            "images": self.images,
            "labels_from_dataset": self.labels_from_dataset,
            "clean_accuracy": _rounded(self.clean_accuracy),
            "adv_accuracy": _rounded(self.adv_accuracy),
            "success_rate": _rounded(self.success_rate),
        }
        if self.saved:
            record["success_after_save_rate"] = _rounded(self.successes_after_save / self.saved)
        if self.nonfinite:
            record["nonfinite_logits"] = self.nonfinite
        return record


class AttackTally:
    """Running counts per ε, fed one outcome at a time (memory does not grow with the data)."""

    def __init__(self, eps_values: Sequence[float]):
        self._counts = {
            eps: dict.fromkeys(AttackSummary.__dataclass_fields__, 0) | {"eps": eps}
            for eps in eps_values
        }

    def add(self, image: AttackedImage, success_after_save: bool | None = None) -> None:
        counts = self._counts[image.eps]
        counts["images"] += 1
        counts["labels_from_dataset"] += image.label_source == "dataset"
        counts["clean_correct"] += image.finite and image.clean_pred == image.label
        counts["adv_correct"] += image.finite and image.adv_pred == image.label
        counts["nonfinite"] += not image.finite
        counts["successes"] += image.success
        if success_after_save is not None:
            counts["saved"] += 1
            counts["successes_after_save"] += success_after_save

    def merge(self, other: AttackTally) -> None:
        """Add another rank's counts (torchrun)."""
        for eps, counts in other._counts.items():
            for key, value in counts.items():
                if key != "eps":
                    self._counts[eps][key] += value

    def summaries(self) -> list[AttackSummary]:
        return [AttackSummary(**counts) for counts in self._counts.values()]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"
