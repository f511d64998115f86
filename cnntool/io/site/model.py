"""What a microscope site shows: frozen records, the same ones written as JSON beside each page.

The scan fills these records; `cnntool.io.site.render` turns them into HTML. Every record has
`to_dict()` (JSON-ready: tuples become lists), `to_json()` (that dict as text) and the class
method `from_dict()` (the inverse), so a site can be re-rendered or scripted from its JSON.

Conventions:
- every image is a path RELATIVE TO THE SITE ROOT, with '/' separators (see `layout.py` for the
  names the scan is expected to use); the renderer makes it relative to each page;
- shares (dead, constant, active, accuracy) are fractions in [0, 1], shown as percentages;
- a box is (x0, y0, x1, y1) in the ORIGINAL image's pixels, half-open, and may reach past the
  image (a receptive field near a border reaches into the padding);
- None means "not measured" or "does not apply" and is shown as an em dash.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import types
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any

SEVERITIES = ("error", "warning", "info")


class _Record:
    """JSON round trip for the frozen records below."""

    def to_dict(self) -> dict:
        return {field.name: _plain(getattr(self, field.name)) for field in dataclasses.fields(self)}

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(
            self.to_dict(),
            ensure_ascii=False,
            indent=indent,
            separators=None if indent else (",", ":"),
        )

    @classmethod
    def from_dict(cls, data: dict):
        hints = _hints(cls)
        return cls(
            **{
                field.name: _build(hints[field.name], data[field.name])
                for field in dataclasses.fields(cls)
                if field.name in data
            }
        )


def _plain(value: Any) -> Any:
    if isinstance(value, _Record):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_plain(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; "not measured" is what such a figure means here
    return value


@cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))


def _build(kind: Any, value: Any) -> Any:
    """The value of annotation `kind` from its JSON form (nested records, tuples, Optional)."""
    if value is None:
        return None
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [k for k in typing.get_args(kind) if k is not type(None)]
        return _build(options[0], value)
    if origin is tuple:
        args = typing.get_args(kind)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_build(args[0], item) for item in value)
        return tuple(_build(k, item) for k, item in zip(args, value, strict=True))
    if isinstance(kind, type) and issubclass(kind, _Record):
        return kind.from_dict(value)
    if kind is float:
        return float(value)
    return value


# ---------------------------------------------------------------------------------------------
# the index page


@dataclass(frozen=True)
class ModelCard(_Record):
    """The model: `source` is how it was named (built-in, a file, a module path);
    `preprocessing` is one line ("224×224, bicubic resize to 256, centre crop, mean/std …") and
    `preprocessing_source` where it came from ("the checkpoint", "a guess", …)."""

    name: str
    source: str
    preprocessing: str
    preprocessing_source: str
    params: int
    macs: int | None
    classes: int | None
    class_names: tuple[str, ...] | None = None


@dataclass(frozen=True)
class DataCard(_Record):
    """The data scanned: `images` read, `skipped` unreadable, `labelled` with a label the model
    knows; `accuracy` of the model's top-1 prediction on the labelled ones (None: no labels)."""

    name: str
    images: int
    skipped: int
    labelled: int
    accuracy: float | None


@dataclass(frozen=True)
class LayerSummary(_Record):
    """One row of the index's layer table. `receptive_field`/`jump` are None where a unit sees
    the whole input; `dead`/`constant` are shares of the units (None: not judged, e.g. a linear
    point); `filters_image` is the first convolution's filters; `preview` a few images (top
    patches or feature visualizations) shown in the row; `page`: whether the layer has a page."""

    name: str
    type: str
    output_shape: tuple[int, ...]
    params: int
    macs: int | None
    receptive_field: int | None
    jump: int | None
    units: int
    dead: float | None
    constant: float | None
    mean_abs_r: float | None
    filters_image: str | None = None
    preview: tuple[str, ...] = ()
    page: bool = True


@dataclass(frozen=True)
class Finding(_Record):
    """One of diagnose's findings: what was measured, the advice it comes from, and the
    command that digs deeper. `layer` is None for a model-level finding."""

    severity: str
    layer: str | None
    message: str
    advice: str
    command: str

    def __post_init__(self):
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, not {self.severity!r}")


# ---------------------------------------------------------------------------------------------
# layer and unit pages


@dataclass(frozen=True)
class Patch(_Record):
    """One of a unit's top hits: `image` the receptive-field crop; `value` the activation;
    `source_index`/`source_path` the image in DATA; `box` the crop in the original's pixels;
    `source_image` a downscaled copy of the whole original (the box is drawn over it) and
    `source_size` the original's (width, height); `projection` the guided-backprop image of the
    unit on this hit (optional)."""

    image: str
    value: float
    source_index: int
    source_path: str
    box: tuple[int, int, int, int]
    source_image: str | None = None
    source_size: tuple[int, int] | None = None
    projection: str | None = None


@dataclass(frozen=True)
class UnitStats(_Record):
    """Diagnose's figures for one unit: `active` is the share of samples > 0 (None where the
    layer is not rectified), `lifetime_sparsity` the Treves–Rolls figure (0 = the same response
    everywhere, 1 = a single sample)."""

    mean: float
    max: float
    lifetime_sparsity: float | None
    active: float | None
    dead: bool = False
    constant: bool = False
    saturated: bool = False


@dataclass(frozen=True)
class Histogram(_Record):
    """Counts of a unit's activations in the bins [edges[i], edges[i+1])."""

    edges: tuple[float, ...]
    counts: tuple[int, ...]

    def __post_init__(self):
        if len(self.edges) != len(self.counts) + 1:
            raise ValueError("a histogram needs one more edge than counts")


@dataclass(frozen=True)
class Correlated(_Record):
    """Another unit of the same layer and its Pearson r with this one."""

    unit: int
    r: float


@dataclass(frozen=True)
class Vote(_Record):
    """A class this unit pushes the logits towards: weight × the unit's mean activation."""

    class_index: int
    name: str
    score: float


@dataclass(frozen=True)
class Unit(_Record):
    """A unit (channel) of a layer: its top patches in rank order and what else is known.
    `visualization_failure`: the feature visualization did not pass its check ("flat",
    "below the data's best"), and the pages mark it "did not converge" instead of showing it."""

    index: int
    patches: tuple[Patch, ...]
    stats: UnitStats
    histogram: Histogram | None = None
    correlated: tuple[Correlated, ...] = ()
    votes: tuple[Vote, ...] = ()
    visualization: str | None = None
    visualization_failure: str | None = (
        None  # why the picture is not a result (tasks.maximize.judge)
    )


@dataclass(frozen=True)
class LayerPage(_Record):
    """A layer's page: the units shown (all, or the ones chosen), `top` = K patches each;
    `histogram_of` says what the histograms count (e.g. "activation at every position");
    `visualizations` how the feature visualizations were made (e.g. "maco, 128×128 px, 64
    steps at lr 0.2"; None: none were)."""

    name: str
    top: int
    units: tuple[Unit, ...]
    histogram_of: str = "activation"
    visualizations: str | None = None


# ---------------------------------------------------------------------------------------------
# the embedding map and the attack page


@dataclass(frozen=True)
class Atlas(_Record):
    """A JPEG sprite sheet: `count` thumbnails of `thumb` × `thumb` px, row-major in `columns`
    columns (cell c sits at column c % columns, row c // columns)."""

    image: str
    thumb: int
    columns: int
    count: int


@dataclass(frozen=True)
class Point(_Record):
    """One image on the map: `label`/`prediction` index `Embedding.label_names` (None: unknown);
    `correct` is None without a label; its thumbnail is cell `cell` of atlas `atlas`; `href` is
    what a click opens (a URL, or a path relative to the site root; None: nothing)."""

    x: float
    y: float
    label: int | None
    prediction: int | None
    correct: bool | None
    path: str
    atlas: int
    cell: int
    href: str | None = None


@dataclass(frozen=True)
class Embedding(_Record):
    """The 2-D map of a layer's features (`method`: "t-SNE", "PCA", …)."""

    layer: str
    method: str
    points: tuple[Point, ...]
    label_names: tuple[str, ...]
    atlases: tuple[Atlas, ...]


@dataclass(frozen=True)
class Triptych(_Record):
    """One adversarial example: original | perturbation | adversarial in one image."""

    image: str
    eps: float
    label: str
    adversarial: str


@dataclass(frozen=True)
class Attack(_Record):
    """Accuracy against `method` (e.g. FGSM) at each ε (pixel units, [0, 1])."""

    method: str
    eps: tuple[float, ...]
    accuracy: tuple[float, ...]
    triptychs: tuple[Triptych, ...] = ()
    clean_accuracy: float | None = None  # drawn at ε = 0 when the sweep has no ε = 0

    def __post_init__(self):
        if len(self.eps) != len(self.accuracy):
            raise ValueError("an attack needs one accuracy per ε")


# ---------------------------------------------------------------------------------------------
# the whole site


@dataclass(frozen=True)
class Site(_Record):
    """Everything index.html shows; layer pages come separately (they can be large)."""

    model: ModelCard
    data: DataCard
    layers: tuple[LayerSummary, ...]
    findings: tuple[Finding, ...] = ()
    embedding: Embedding | None = None
    attack: Attack | None = None
    generator: str = "cnntool microscope"
