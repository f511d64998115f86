"""The files of an attack with `-o DIR`: adversarial images as lossless 8-bit PNGs (read back, so
that what is judged is what was saved), original | perturbation | adversarial triptychs, and
perturbations carried onto the full-size photos."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from cnntool.core.images import load_image
from cnntool.io.figures import pixels_to_image, save_triptych
from cnntool.io.writers import save_image


class AdversarialFiles:
    """DIR/adversarial, DIR/triptych (the first `triptychs` images) and DIR/full_res."""

    def __init__(self, out: str | Path, triptychs: int, *, norm: str = "linf", scale: int = 1):
        """`norm` and `scale` are the triptychs' (figures.save_triptych)."""
        out = Path(out)
        self.norm, self.scale = norm, scale
        self.folder, self.triptych_folder = out / "adversarial", out / "triptych"
        self.full_res_folder = out / "full_res"
        self.triptychs_left, self.triptych_count = triptychs, 0
        self.full_res_count = self.full_res_successes = 0

    def save_and_judge(self, outcomes, judge, full_res=None) -> list[dict]:
        """Save each adversarial image, read it back and `judge(images, full_size)` it (the
        model's predictions: does the attack survive 8-bit quantization?); with `full_res`
        (outcome -> full-size PIL image) also save and judge the perturbed original photos.
        The record fields each image adds: file, success_after_save[, full_res_*]."""
        saved = self.save(outcomes)
        predictions = judge([image for _, image in saved], False)
        records = [
            {"file": str(file), "success_after_save": o.succeeded(pred)}
            for (file, _), pred, o in zip(saved, predictions, outcomes, strict=True)
        ]
        if full_res is not None:
            photos = self.save_full_res(outcomes, [full_res(o) for o in outcomes])
            predictions = judge([image for _, image in photos], True)
            for record, (file, _), pred, o in zip(
                records, photos, predictions, outcomes, strict=True
            ):
                ok = o.succeeded(pred)
                record.update(full_res_file=str(file), full_res_pred=pred, success_full_res=ok)
                self.full_res_count += 1
                self.full_res_successes += ok
        return records

    def counts(self) -> dict:
        return {
            "triptychs": self.triptych_count,
            "full_res": self.full_res_count,
            "full_res_successes": self.full_res_successes,
        }

    @staticmethod
    def name(outcome) -> str:
        return f"{outcome.index:05d}_{Path(outcome.path).stem}.png"

    def save(self, outcomes) -> list[tuple[Path, Image.Image]]:
        """Save each adversarial image (and a triptych while any are left); return each file
        with the image read back from it."""
        saved = []
        for outcome in outcomes:
            file = self.folder / self.name(outcome)
            save_image(pixels_to_image(outcome.adversarial.cpu().numpy()), file)
            saved.append((file, load_image(file)))
            if self.triptychs_left:
                self._triptych(outcome)
        return saved

    def save_full_res(
        self, outcomes, images: Sequence[Image.Image]
    ) -> list[tuple[Path, Image.Image]]:
        """Save each full-size adversarial photo; return each file with the image read back."""
        saved = []
        for outcome, image in zip(outcomes, images, strict=True):
            file = self.full_res_folder / self.name(outcome)
            save_image(image, file)
            saved.append((file, load_image(file)))
        return saved

    def _triptych(self, outcome) -> None:
        save_triptych(
            self.triptych_folder / self.name(outcome),
            outcome.clean.cpu().numpy(),
            outcome.adversarial.cpu().numpy(),
            eps=outcome.eps,
            norm=self.norm,
            scale=self.scale,
            clean_title=f"original: {class_label(outcome.clean_name, outcome.clean_pred)}\n"
            f"{outcome.clean_conf:.1%} confidence",
            adversarial_title=f"adversarial: {class_label(outcome.adv_name, outcome.adv_pred)}\n"
            f"{outcome.adv_conf:.1%} confidence",
        )
        self.triptychs_left -= 1
        self.triptych_count += 1


def class_label(name: str | None, index: int) -> str:
    return name if name is not None else f"class {index}"
