"""Is the synthesized image what it claims to be? A second model's verdict, and the data's best.

MACO's transferability (Fel et al. 2023): an image made for class c is judged by an
independently trained model, which sees the saved 8-bit PNG through its own preprocessing, as
`cnntool predict JUDGE image.png` would; the record carries the rank of c among the judge's
classes (1 = its top class) and its probability. For a unit there is no second model: its value
on the image is compared with its best value over real images (`objective_values` over DATA).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torch import nn

from cnntool.core.preprocessing import Preprocessing
from cnntool.errors import CnnToolError

# Each built-in model's judge: another network trained on the same classes.
DEFAULT_JUDGES = {
    "efficientnet_lite0": "efficientnet_lite2",
    "efficientnet_lite1": "efficientnet_lite2",
    "efficientnet_lite2": "efficientnet_lite1",
    "lenet5-mnist": "lenet5-mnist-adv",
    "lenet5-mnist-adv": "lenet5-mnist",
}


def default_judge(model_name: str) -> str | None:
    """The judge of a built-in model, None for others (name one with --judge)."""
    return DEFAULT_JUDGES.get(model_name)


@dataclass(frozen=True)
class Verdict:
    """The judge's view of one image made for class `target`: the target's `rank` among all
    classes (1 = the judge's top class) and `probability` (softmax), the judge's own top
    class and its probability."""

    judge: str
    target: int
    rank: int
    probability: float
    top: int
    top_probability: float

    def to_record(self, class_name=None) -> dict:
        record = {
            "judge": self.judge,
            "judge_rank": self.rank,
            "judge_probability": round(self.probability, 6),
        }
        if class_name is not None:
            record["judge_top"] = class_name(self.top)
        return record


def judge_class_images(
    goal,
    images: Sequence[Image.Image],
    model_name: str,
    judge: str | None,
    load: Callable[[str], object],
) -> list[Verdict]:
    """The verdicts of `judge` (a MODEL spec; None: the default judge of `model_name`; "none":
    no judge) on the images made for classes; none for units. `load(spec)` gives the judge as
    a LoadedModel (it is loaded as a plain MODEL: the options that load the model judged are
    not its own)."""
    name = judge or default_judge(model_name)
    if goal.kind != "class" or name is None or name.lower() == "none":
        return []
    judged = load(name)
    return judge_images(judged.module, judged.preprocessing, images, goal.units, judged.name)


@torch.no_grad()
def judge_images(
    judge: nn.Module,
    preprocessing: Preprocessing,
    images: Sequence[Image.Image],
    targets: Sequence[int],
    name: str,
) -> list[Verdict]:
    """The judge's verdict on each saved image (PIL, as written) for its target class."""
    device = next(judge.parameters()).device
    batch = torch.stack([preprocessing(image) for image in images]).to(device)
    was_training = judge.training
    judge.eval()
    try:
        logits = judge(batch)
    finally:
        judge.train(was_training)
    logits = (logits[0] if isinstance(logits, (tuple, list)) else logits).float()
    if max(targets) >= logits.shape[1]:
        raise CnnToolError(
            f"the judge {name} has {logits.shape[1]} classes; class "
            f"{max(targets)} is not one of them"
        )
    probabilities = torch.softmax(logits, dim=1)
    verdicts = []
    for row, target in enumerate(targets):
        score = logits[row, target]
        rank = 1 + int((logits[row] > score).sum())
        top = int(logits[row].argmax())
        verdicts.append(
            Verdict(
                name,
                int(target),
                rank,
                float(probabilities[row, target]),
                top,
                float(probabilities[row, top]),
            )
        )
    return verdicts


def unit_records(
    results: Sequence,
    goal,
    config,
    class_name: Callable[[int], str | None],
    verdicts: Sequence[Verdict] = (),
    best_on_data: torch.Tensor | None = None,
) -> list[dict]:
    """One record per synthesized image: the objective's value, the class name, the settings,
    and the judge's verdict (classes) or the unit's best value over real data and the image's
    value relative to it (units; above 1: the image excites the unit more than any data image),
    and the picture's `check_picture` (`converged`, `contrast`, `failure`: "flat", "below the
    data's best" or null)."""
    records = []
    for k, result in enumerate(results):
        best = None if best_on_data is None else float(best_on_data[k])
        record = result.to_record(goal)
        if goal.kind == "class":
            record["name"] = class_name(result.unit)
        record.update(steps=config.steps, param=config.param)
        if k < len(verdicts):
            record.update(verdicts[k].to_record(lambda c: class_name(c) or str(c)))
        if best is not None:
            record.update(
                best_on_data=round(best, 6),
                relative=round(result.value / best, 4) if best > 0 else None,
            )
        check = check_picture(
            result.pixels,
            result.value,
            best,
            getattr(result, "ceiling", None),
            positions=getattr(result, "positions", 1),
        )
        record.update(check.to_record())
        records.append(record)
    return records


# ---------------------------------------------------------------------------------------------
# is there a picture at all? The check every synthesized image passes before it is shown

# The least contrast a picture must have: its 1st-to-99th percentile spread in [0, 1] pixels.
# 0.1 is 25 of the 255 steps of the saved 8-bit image. Measured (notes/fv.md): LeNet-5's relu1
# pictures before the penalty fix spread 0.004–0.09 (flat grey squares by eye), the unit images
# that show a pattern 0.3–1.0 (MACO on lite0: > 0.8, a sigmoid of unit-variance noise). LeNet's
# relu2 has faint stroke pictures in between (notes/pics2.md: 0.05–0.07 inside the border
# band, marked; 0.11–0.17, shown).
FLAT_CONTRAST = 0.1

# A channel's value is the mean of a convolution's map over its positions, and a convolution is
# the same at every position: a pattern the unit prefers can be drawn anywhere away from the
# edges. Along the edges the unit sees the zero padding beside the pixels, and what the
# optimizer draws there is the padding's doing. LeNet-5's relu1 units 10 and 24 (3×3 weights
# summing to +0.41 and +0.11) came out as uniform white squares with a dark corner or a dark
# strip 2–3 px wide down one side, and passed the check on that alone (contrast 0.11 and 0.78
# over the whole image, 0.004 and 0.014 inside; unit 10's picture is worth no more than a
# plain white square). So such a picture's contrast is measured inside a band of 1/8 of each
# side: 3 px of a 28-px digit, 16 of a 128-px thumbnail.
BORDER_FRACTION = 8

NOT_CONVERGED = "did not converge"
DEAD = "dead: never fires on DATA"  # the microscope's badge for the same finding


def contrast(pixels) -> float:
    """The spread of an image's pixels (C×H×W or H×W in [0, 1], a tensor or array): the 99th
    minus the 1st percentile over all its values. A few stray pixels do not make a picture."""
    values = torch.as_tensor(pixels, dtype=torch.float32).flatten()
    low, high = torch.quantile(values, torch.tensor([0.01, 0.99]))
    return float(high - low)


def inside(pixels):
    """The image (C×H×W or H×W) without the band of 1/BORDER_FRACTION of each side along its
    edges, where a channel averaged over positions sees the zero padding."""
    height, width = pixels.shape[-2:]
    top, left = height // BORDER_FRACTION, width // BORDER_FRACTION
    return pixels[..., top : height - top, left : width - left]


def is_flat(pixels) -> bool:
    """Whether the image has no contrast to show (`contrast` under FLAT_CONTRAST)."""
    return contrast(pixels) < FLAT_CONTRAST


@dataclass(frozen=True)
class Check:
    """Whether a synthesized image is a result: `contrast` (see `contrast`; inside the border
    band for a channel averaged over positions, see `check_picture`), `beats_data`
    whether the unit's value on it is above its best on real data, or at the most the layer
    can output (None: not known), and `dead` whether the unit is exactly 0 on every real image
    and on the picture too (a rectified unit that never fires: there is nothing to draw).
    `reason` is None for a result, else why it is not: DEAD, "flat" or "below the data's
    best"."""

    contrast: float
    beats_data: bool | None = None
    dead: bool = False

    @property
    def reason(self) -> str | None:
        if self.dead:
            return DEAD
        if self.contrast < FLAT_CONTRAST:
            return "flat"
        if self.beats_data is False:
            return "below the data's best"
        return None

    @property
    def converged(self) -> bool:
        return self.reason is None

    @property
    def mark(self) -> str | None:
        """What a picture that is not a result is marked with, e.g. 'did not converge: flat'."""
        return None if self.reason is None else f"{NOT_CONVERGED}: {self.reason}"

    def to_record(self) -> dict:
        return {
            "converged": self.converged,
            "contrast": round(self.contrast, 4),
            "failure": self.reason,
        }


def check_picture(
    pixels,
    value: float | None = None,
    best: float | None = None,
    ceiling: float | None = None,
    *,
    positions: int = 1,
) -> Check:
    """The check of one synthesized image: flat or not, and, when the data's best `best` is
    known, whether `value` (the unit on the image) is above it. `positions`: how many positions
    `value` is the mean of (a channel of a convolution's map: H·W, and then the contrast is
    measured `inside` the border band; 1: a logit, an fc unit, a neuron: the whole image). A
    layer that clamps its output (ReLU6, Hardtanh: `ceiling`, see `output_ceiling`) cannot be
    beaten where the data already reaches the clamp: there a value at the ceiling counts as
    beating the data. A unit whose best is exactly 0 and that stays at 0 on the picture never
    fires at all: DEAD."""
    beats = None
    if value is not None and best is not None and math.isfinite(best):
        beats = value > best or (ceiling is not None and reaches(value, ceiling))
    dead = best == 0 and value is not None and value <= 0
    pixels = torch.as_tensor(pixels, dtype=torch.float32)
    return Check(contrast(inside(pixels) if positions > 1 else pixels), beats, dead)


def reaches(value: float, ceiling: float) -> bool:
    """Whether `value` is at `ceiling` (to float32 rounding: a clamped output is exact)."""
    return value >= ceiling - 1e-6 * max(1.0, abs(ceiling))


def output_ceiling(model: nn.Module, layer: str | None) -> float | None:
    """The largest value `layer`'s output can take when the layer is a clamp (nn.ReLU6 and
    nn.Hardtanh: its `max_val`), else None (no bound, or none that a value reaches exactly)."""
    if layer is None:
        return None
    from cnntool.core.layers import resolve_layer

    module = resolve_layer(model, layer)[1]
    return float(module.max_val) if isinstance(module, nn.Hardtanh) else None
