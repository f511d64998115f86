"""What to maximize (`Objective`), how (`MaximizeConfig` and its documented defaults), and what
comes out (`Synthesized`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from torch import Tensor, nn

from cnntool.core.layers import resolve_layer
from cnntool.errors import CnnToolError

PARAMETERIZATIONS = ("maco", "fourier", "pixel", "pca")


@dataclass(frozen=True)
class MaximizeConfig:
    """How to optimize. Pixel values live in [0, 1] before the model's normalization.

    - `param`: "maco" (Fourier phase only, magnitude fixed to a natural-image spectrum; Fel et
      al. 2023), "fourier" (spectrum scaled by 1/frequency, decorrelated colour, sigmoid; Olah
      et al. 2017), "pixel" (sigmoid of free pixels) or "pca" (coordinates in a PCA basis of
      the prior data with a Gaussian prior on them; needs prior data).
    - `steps`, `lr` (Adam).
    - `jitter` (max shift, px), `scales` (random zoom range), `rotate` (max degrees): random
      per step, applied before the model; what comes into view is mirrored. `pad` (px) bounds
      the mirrored border of a pure shift (0: wrap around); a zoom or rotation mirrors as far
      as it needs. `crop` (MACO): instead of shift and zoom, a random square crop whose side is
      this fraction of the image, zoomed to the full size. `noise`: std of Gaussian noise
      added to each view.
    - `l2` (decay of pixels towards grey), `tv` (total variation weight),
      `blur_every` / `blur_sigma` (Gaussian blur of the pixel parameters; pixel param only).
    - `closeness`: feature accentuation (Hamblin et al. 2024): with a start image, the weight
      of the penalty closeness · Σ|X − X_start|² on the image's Fourier coefficients X (of the
      decorrelated pre-sigmoid image), which keeps the result near the photo.
    - `prior`, `components` ("pca"): the Gaussian prior's weight, prior · |z|², and the number
      of principal components.
    - `importance`: accumulate MACO's transparency map, |∂objective/∂pixel| summed over steps.
    - `size`: the side of the synthesized (square) image in pixels; None: the model's input
      size. A fully convolutional model takes a smaller image for a fraction of the cost (the
      microscope's thumbnails, `thumbnail_defaults`).
    - `redirect`: for the first this many steps, rectifiers (ReLU, ReLU6, Hardtanh) backprop
      by Lucid's redirected-ReLU rule (core.hooks `substitute_activation_backward`): an image
      whose unit is off at the start, so that no gradient gets through, is still moved towards
      where it fires. 0: the true gradient throughout.
    """

    param: str = "maco"
    steps: int = 256
    lr: float = 0.05
    pad: int = 12
    jitter: int = 8
    scales: tuple[float, float] = (0.9, 1.1)
    rotate: float = 5.0
    crop: tuple[float, float] | None = None
    noise: float = 0.0
    l2: float = 0.0
    tv: float = 0.0
    blur_every: int = 0
    blur_sigma: float = 0.5
    closeness: float = 0.0
    prior: float = 0.5
    components: int = 80
    importance: bool = False
    size: int | None = None
    redirect: int = 0

    @staticmethod
    def for_input(
        shape: Sequence[int],
        *,
        param: str | None = None,
        prior_data: bool = False,
        accentuate: bool = False,
    ) -> MaximizeConfig:
        """The documented defaults for an input of shape (C, H, W) and `param` (None: the
        default one): with a photo to accentuate, `accentuation_defaults`; for inputs up to
        64 px, `data_prior_defaults` for "pca" (the default with prior data) and
        `small_defaults` otherwise (another `param` keeps its transforms and regularizers);
        for larger ones `imagenet_defaults` (MACO), whose crops another `param` keeps, at
        lr 0.05."""
        if accentuate:
            return accentuation_defaults()
        small = min(shape[1:]) <= 64
        if param is None:
            param = ("pca" if prior_data else "pixel") if small else "maco"
        if param not in PARAMETERIZATIONS:
            raise CnnToolError(
                f"unknown parameterization '{param}'; use " + ", ".join(PARAMETERIZATIONS)
            )
        if param == "pca":
            return data_prior_defaults()
        if small:
            return replace(small_defaults(), param=param)
        if param == "maco":
            return imagenet_defaults()
        return replace(imagenet_defaults(), param=param, lr=0.05, importance=False)


def imagenet_defaults() -> MaximizeConfig:
    """Colour models (lite0): MACO, the phase of a natural-image spectrum, one random crop of
    50–100% of the side per step turned by up to ±5°, 256 Adam steps at lr 0.1; the
    transparency map is accumulated. Chosen among 14 variants by lite2's verdict on lite0's
    class images (benchmarks/maximize_quality.py)."""
    return MaximizeConfig(
        param="maco", steps=256, lr=0.1, crop=(0.5, 1.0), rotate=5.0, importance=True
    )


THUMBNAIL_SIZE = 128


def thumbnail_defaults() -> MaximizeConfig:
    """The microscope's feature visualizations of colour models: `imagenet_defaults` (MACO,
    crops of 50–100% turned by up to ±5°) on a 128-px image (a third of the pixels of 224,
    shown at 160 px on the site) for 64 Adam steps at lr 0.2, without the transparency map
    (the site does not show it). About 10× cheaper than `imagenet_defaults` on lite0;
    measured in benchmarks/microscope_fv_bench.py."""
    return replace(imagenet_defaults(), size=THUMBNAIL_SIZE, steps=64, lr=0.2, importance=False)


def lucid_defaults() -> MaximizeConfig:
    """The previous colour default, `--param fourier`: Fourier + decorrelated colour, jitter
    8 px, scale 0.9–1.1, rotation ±5°, 256 Adam steps at lr 0.05 (Olah et al. 2017's lucid
    recipe, half its steps)."""
    return MaximizeConfig(param="fourier")


def small_defaults() -> MaximizeConfig:
    """MNIST-sized inputs (LeNet-5, 28 px): pixels, 1-px jitter, no scale/rotation (a 28-px
    digit has no room for them), L2 decay, total variation and a blur every 4 steps
    (Yosinski et al. 2015), 128 Adam steps at lr 0.1, the first 16 through redirected ReLUs
    (Lucid): LeNet-5's relu3 units that are off on the grey start no longer stay flat grey
    (of 150 live units, 118 converged and 32 flat without; 150 and 0 with it,
    benchmarks/maximize_converged.py); relu1 and relu2 are unchanged."""
    return MaximizeConfig(
        param="pixel",
        steps=128,
        lr=0.1,
        pad=2,
        jitter=1,
        scales=(1.0, 1.0),
        rotate=0.0,
        l2=1e-3,
        tv=1e-3,
        blur_every=4,
        blur_sigma=0.5,
        redirect=16,
    )


def data_prior_defaults() -> MaximizeConfig:
    """Small inputs with prior data (LeNet-5 with mnist-5k): the image is the data's mean plus
    80 principal components, whose coordinates z (in units of each component's standard
    deviation) carry the Gaussian prior 0.5·|z|²; 128 Adam steps at lr 0.1, no transforms."""
    return MaximizeConfig(
        param="pca",
        steps=128,
        lr=0.1,
        pad=0,
        jitter=0,
        scales=(1.0, 1.0),
        rotate=0.0,
        prior=0.5,
        components=80,
    )


def accentuation_defaults() -> MaximizeConfig:
    """Feature accentuation of a photo: Fourier parameters started at the photo, closeness 0.01,
    the lucid transforms, 128 Adam steps at lr 0.05; the transparency map is accumulated."""
    return MaximizeConfig(param="fourier", steps=128, lr=0.05, closeness=0.01, importance=True)


def with_overrides(config: MaximizeConfig, **changes) -> MaximizeConfig:
    """`config` with the given fields replaced (None values are ignored: CLI defaults)."""
    return replace(config, **{k: v for k, v in changes.items() if v is not None})


@dataclass(frozen=True)
class Objective:
    """What image k maximizes: `layer`'s channel units[k] ("channel": mean over positions;
    "neuron": the one at `position`, default the centre), or class logit units[k]
    ("class", `layer` None)."""

    kind: str
    units: tuple[int, ...]
    layer: str | None = None
    position: tuple[int, int] | None = None


def objective(
    model: nn.Module,
    kind: str,
    units: Sequence[int],
    layer: str | None = None,
    position: tuple[int, int] | None = None,
) -> Objective:
    """Check and resolve an objective (layer aliases allowed)."""
    if kind not in ("channel", "neuron", "class"):
        raise CnnToolError(f"unknown objective '{kind}'; use channel, neuron or class")
    if not units:
        raise CnnToolError("give at least one unit to maximize")
    if kind == "class":
        return Objective("class", tuple(int(u) for u in units))
    if layer is None:
        raise CnnToolError(f"a {kind} objective needs a layer (--layer)")
    path, _ = resolve_layer(model, layer)
    return Objective(kind, tuple(int(u) for u in units), path, position)


@dataclass(frozen=True)
class Synthesized:
    """One synthesized input: `pixels` C×H×W in [0, 1]; `value` the objective on the final
    image without transforms; `history` the objective (under transforms) every few steps;
    `importance` H×W, MACO's transparency map (|∂objective/∂pixel| summed over the steps and
    the channels), when the config asks for it; `peak` the unit's largest value at any
    position of the final image (= `value` for logits and fc units), what a scan of
    real data ranks its hits by; `ceiling` the most the layer can output when it clamps
    (ReLU6: 6; judge.output_ceiling), else None; `positions` how many positions `value` is
    the mean of (a channel of a convolution's map: H·W; 1: logits, fc units, a neuron)."""

    unit: int
    pixels: Tensor
    value: float
    history: tuple[float, ...]
    importance: Tensor | None = None
    peak: float | None = None
    ceiling: float | None = None
    positions: int = 1

    def to_record(self, objective: Objective) -> dict:
        record = {"kind": objective.kind, "unit": self.unit, "value": round(self.value, 6)}
        if objective.layer is not None:
            record["layer"] = objective.layer
        if objective.position is not None:
            record["position"] = list(objective.position)
        return record


def maximize_config(
    shape: Sequence[int],
    *,
    param: str | None = None,
    prior_data: bool = False,
    accentuate: bool = False,
    crop: float | None = None,
    scale: float | None = None,
    **changes,
) -> MaximizeConfig:
    """The documented defaults for an input of `shape` (`MaximizeConfig.for_input`) with the
    given changes (None: keep the default): `scale` a random zoom of ± this fraction, `crop`
    the smallest random crop as a fraction of the side (0: shift and zoom views instead), the
    others MaximizeConfig fields."""
    config = with_overrides(
        MaximizeConfig.for_input(shape, param=param, prior_data=prior_data, accentuate=accentuate),
        param=param,
        scales=None if scale is None else (1 - scale, 1 + scale),
        **changes,
    )
    if crop is not None:
        config = replace(config, crop=(crop, 1.0) if crop > 0 else None)
    return config


def objective_for(
    loaded,
    layer: str | None,
    units: Sequence[int],
    classes: Sequence = (),
    neuron: bool = False,
    position: tuple[int, int] | None = None,
) -> Objective:
    """The objective of a LoadedModel: channels `units` of `layer` (their mean over positions,
    or with `neuron` the unit at `position`), or without a layer the logits of `classes`
    (indices or names of the model's classes)."""
    from cnntool.core.class_indices import class_index

    if bool(layer) == bool(classes):
        raise CnnToolError("give --layer with --unit, or --class, to say what to maximize")
    if layer and not units:
        raise CnnToolError("--layer needs at least one --unit")
    if layer:
        return objective(loaded.module, "neuron" if neuron else "channel", units, layer, position)
    names = loaded.class_names
    count = len(names) if names else loaded.num_outputs
    return objective(loaded.module, "class", [class_index(c, names, count) for c in classes])
