"""What a caller asks of a model (the command line's MODEL options, as values).

`ModelRequest`: how MODEL is to be loaded and fed (`load_model`'s options in one object), the
flags that contradict MODEL, and the lines that say how the loaded model is fed, handed to a
`say(text, warning)` callback. How a dataset scan reads its images is core/scan_options.py's."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cnntool.errors import ModelLoadError

if TYPE_CHECKING:
    from cnntool.core.loading.models import LoadedModel

Say = Callable[[str, bool], None]  # (text, whether it is a warning)


@dataclass(frozen=True)
class ModelRequest:
    """How MODEL is to be loaded and fed (None: from the model, see models.py). `say` takes
    the lines `load` says (silent here; the CLI prints them), `refuse` the flags that contradict
    MODEL (a subclass may refuse them otherwise: the CLI as a usage error)."""

    @staticmethod
    def say(text: str, warning: bool) -> None:
        """A line `load` says (none here)."""

    @staticmethod
    def refuse(problem: str) -> Exception:
        """The error for flags that contradict MODEL."""
        return ModelLoadError(problem)

    arch: str | None = None
    weights: str | None = None
    trust_code: bool = False
    device: str = "auto"
    input_size: tuple | None = None  # (C or None, H, W)
    resize: int | tuple | str | None = None  # int, (H, W) or "none"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    interpolation: str | None = None
    channel_order: str | None = None  # "rgb" or "bgr"
    input_range: int | None = None  # 1 or 255
    preprocessing_file: str | None = None
    classes: str | None = None
    num_classes: int | None = None
    use_ema: bool = False

    def conflict(self, spec: str) -> str | None:
        """Why the flags contradict MODEL (to refuse before anything is loaded), or None."""
        from cnntool.core.loading.spec import names_weight_file

        is_file = names_weight_file(spec)
        if self.weights and is_file:
            return (
                f"MODEL {spec} is a weight file already; --weights is for an architecture "
                "named by MODEL (resnet18, FILE.py:NAME)"
            )
        if self.arch and not is_file:
            return (
                f"--arch names the architecture of a weight file, and MODEL {spec} is not one; "
                "drop --arch"
            )
        return None

    def load(
        self,
        spec: str,
        *,
        weights_matter: bool = True,
        images: bool = True,
        run: bool | None = None,
        say: Say | None = None,
    ) -> LoadedModel:
        """Load MODEL as asked and `say` how its input is fed and where that came from.

        `weights_matter`: warn when the answer describes random weights. `images`: the caller
        feeds images (so the model must run on them: one forward pass checks it); else only
        the input size matters (profile, layers, gradcheck). `run` (default: `images`): check
        with one forward pass that the model runs, and that NaN/inf weights leave its output
        finite (gradcheck: their gradients would be meaningless). `say`: instead of `self.say`."""
        from cnntool.core.loading.models import load_model
        from cnntool.core.loading.preprocessing_sources import PreprocessingOptions

        say = say or self.say
        problem = self.conflict(spec)
        if problem:
            raise self.refuse(problem)
        loaded = load_model(
            spec,
            arch=self.arch,
            weights=self.weights,
            device=self.device,
            trust_code=self.trust_code,
            classes=self.classes,
            num_classes=self.num_classes,
            use_ema=self.use_ema,
            preprocessing=PreprocessingOptions(
                input_size=self.input_size,
                resize=self.resize,
                interpolation=self.interpolation,
                mean=self.mean,
                std=self.std,
                file=self.preprocessing_file,
                channel_order=self.channel_order.lower() if self.channel_order else None,
                input_range=self.input_range,
            ),
        )
        for note in loaded.notes:
            say(note, False)
        if images:
            say(loaded.preprocessing_line(), loaded.preprocessing_guessed)
        if images if run is None else run:
            loaded.check_forward()
        if not images:
            say(*input_line(loaded))
        for warning in loaded.warnings:
            say(warning, True)
        if weights_matter and loaded.random_weights:
            say(
                f"{loaded.name} has random weights (torchvision's architectures come without "
                "trained ones here): the results describe an untrained network; give --weights "
                "FILE for a trained one",
                True,
            )
        return loaded


def input_line(loaded: LoadedModel) -> tuple[str, bool]:
    """The input size of a model that is not fed images, and whether it is a guess (a warning)."""
    shape = "×".join(map(str, loaded.input_shape))
    choice = loaded.preprocessing_choice
    if choice is not None and "size" in choice.guessed_fields:
        return (
            f"input {shape} — {choice.guess_name}, not from the model: set --input-size "
            "(or --preprocessing FILE.json) if it takes another",
            True,
        )
    return f"input {shape} — from {loaded.preprocessing_source}", False
