"""What the microscope looks at: which layers get a page, which of their units, and what is known
about each layer before any data is read (type, output shape, params, MACs, receptive field).

Default layers, spread over the depth:
- the first convolution, at the activation that follows it (diagnose's first measure point):
  its units are the first convolution's, judged after the nonlinearity;
- up to three "blocks" evenly spaced from the first to the last: the children of the model's
  Sequential/ModuleList containers that are themselves containers (EfficientNet's `_blocks.N`,
  ResNet's `layerK.N`, MobileNet's `features.N`, at the shallowest such depth); a model without such
  blocks (LeNet, VGG)
  uses its other conv/linear measure points instead;
- the penultimate layer (the input of the classifier: the map's features).

Everything here comes from one trace on the meta device (tasks.profile): no data, no compute.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from cnntool.core.layers import layer_aliases, main_blocks, named_layers, resolve_layer
from cnntool.core.loading.exported import untyped_layers_hint
from cnntool.core.receptive_field import ReceptiveField
from cnntool.core.selection import parse_indices
from cnntool.errors import CnnToolError
from cnntool.tasks.diagnose import MeasurePoint, default_points, named_points
from cnntool.tasks.diagnose.points import activation_of

MIDDLE_LAYERS = 3
DEFAULT_UNITS = "32"
_BEFORE_LOGITS = (nn.Flatten, nn.Dropout, nn.Identity, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool1d)


@dataclass(frozen=True)
class LayerPlan:
    """One layer with a page. `name` is the module whose output is scanned; `point` is diagnose's
    measure point there (its `layer` is the conv/linear whose units these are, when there is
    one); `units` are the channels shown; `field` is None where a unit sees the whole input.
    `params`/`macs` are the conv/linear's (with its normalization) for an activation point, else
    the module's with everything inside it."""

    name: str
    point: MeasurePoint
    kind: str
    output_shape: tuple[int, ...]  # without the batch: (C, H, W) or (C,)
    units: tuple[int, ...]
    params: int
    macs: int | None
    field: ReceptiveField | None

    @property
    def channels(self) -> int:
        return self.output_shape[0]


@dataclass(frozen=True)
class ClassifierPlan:
    """The logits layer (no page: its units are the classes)."""

    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    macs: int | None


@dataclass(frozen=True)
class MicroscopePlan:
    """The layers with pages, K patches per unit, the layer whose features make the map, and
    the classifier (the logits Linear), when the model has one."""

    layers: tuple[LayerPlan, ...]
    top: int
    penultimate: str
    classifier: ClassifierPlan | None
    first_conv: str | None
    params: int
    macs: int | None

    def describe(self) -> str:
        """'layers: conv1 (32 of 32 units), …' (what the command says before scanning)."""
        return "layers: " + ", ".join(
            f"{layer.name} ({len(layer.units)} of {layer.channels} units)" for layer in self.layers
        )


def default_layers(model: nn.Module) -> list[str]:
    """The module paths the microscope shows when --layers is not given (see the docstring)."""
    points = default_points(model)
    penultimate = layer_aliases(model).get("penultimate")
    first = points[0].module if points else None
    order = {name: i for i, name in enumerate(named_layers(model))}

    def between(name: str) -> bool:
        after_first = first is None or (
            order[name] > order[first] and not first.startswith(name + ".")
        )
        before_last = penultimate is None or (
            order[name] < order[penultimate] and not penultimate.startswith(name + ".")
        )
        return after_first and before_last

    candidates = [name for name in main_blocks(model) if between(name)]
    if not candidates:
        candidates = [p.module for p in points if between(p.module)]
    chosen = [first] if first else []
    chosen += _spread(candidates, MIDDLE_LAYERS)
    if penultimate and penultimate not in chosen:
        chosen.append(penultimate)
    if not chosen:
        raise CnnToolError(
            "the model has no convolution, linear layer or classifier to show; "
            "name the layers with --layers" + untyped_layers_hint(model)
        )
    return chosen


def _spread(names: Sequence[str], count: int) -> list[str]:
    """`count` names evenly spaced through `names`, the last one included."""
    if len(names) <= count:
        return list(names)
    picks = sorted({round(len(names) * k / count) - 1 for k in range(1, count + 1)})
    return [names[i] for i in picks]


def plan(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    layers: Sequence[str] | None = None,
    units: str = DEFAULT_UNITS,
    top: int = 9,
) -> MicroscopePlan:
    """The microscope's layers (paths or aliases; None: `default_layers`), the units shown of
    each ('N': the first N, 'all', or a list like '0-15,42' for every layer) and K = `top`."""
    from cnntool.tasks.profile import profile

    if top < 1:
        raise CnnToolError("--top must be at least 1")
    names = [resolve_layer(model, name)[0] for name in layers] if layers else default_layers(model)
    names = list(dict.fromkeys(names))
    counted = profile(model, input_shape=tuple(input_shape), batch=1, all_modules=True)
    rows = {row.name: row for row in counted.layers}
    modules = dict(model.named_modules())
    points = {p.module: p for p in named_points(model, names)}
    planned = []
    for name in names:
        row = rows.get(name)
        if row is None or row.output_shape is None:
            raise CnnToolError(
                f"layer '{name}' never runs in the forward pass of a "
                f"{'×'.join(map(str, input_shape))} input; pick another"
            )
        shape = tuple(row.output_shape[1:])
        if len(shape) not in (1, 3):
            raise CnnToolError(
                f"layer '{name}' gives a {len(row.output_shape)}-d output "
                f"{tuple(row.output_shape)}; the microscope shows (batch, units) "
                "and (batch, units, height, width) layers"
            )
        point = points[name]
        owner = point.layer if point.layer and activation_of(modules[name]) is not None else None
        params, macs = _cost(rows, modules, owner or name, with_norm=owner is not None)
        kind = type(modules[name]).__name__
        if owner:
            kind = f"{type(modules[owner]).__name__} → {kind}"
        planned.append(
            LayerPlan(
                name=name,
                point=point,
                kind=kind,
                output_shape=shape,
                units=chosen_units(units, shape[0], name),
                params=params,
                macs=macs,
                field=row.receptive_field if len(shape) == 3 else None,
            )
        )
    aliases = layer_aliases(model)
    penultimate = aliases.get("penultimate") or planned[-1].name
    logits = aliases.get("logits")
    classifier = None
    if logits is not None and rows.get(logits) is not None and rows[logits].output_shape:
        params, macs = _cost(rows, modules, logits, with_norm=False)
        classifier = ClassifierPlan(
            logits,
            type(modules[logits]).__name__,
            tuple(rows[logits].output_shape[1:]),
            params,
            macs,
        )
    return MicroscopePlan(
        layers=tuple(planned),
        top=top,
        penultimate=penultimate,
        classifier=classifier,
        first_conv=_first_conv(model),
        params=counted.total.params,
        macs=counted.total.macs,
    )


def chosen_units(text: str, channels: int, layer: str = "") -> tuple[int, ...]:
    """'N' -> the first N channels (all when fewer), 'all', or a list checked against the layer."""
    text = str(text).strip()
    if text.isdigit():
        if int(text) < 1:
            raise CnnToolError("--units must be at least 1, 'all' or a list like 0-15,42")
        return tuple(range(min(int(text), channels)))
    chosen = parse_indices(text, channels, what=f"unit of layer {layer}" if layer else "unit")
    return tuple(range(channels)) if chosen is None else tuple(chosen)


def _cost(rows, modules, name: str, *, with_norm: bool) -> tuple[int, int | None]:
    """Params and MACs of module `name` and everything inside it (with the normalization that
    follows a conv/linear when `with_norm`)."""
    inside = [row for row in rows.values() if row.name == name or row.name.startswith(name + ".")]
    params = sum(p.numel() for p in modules[name].parameters())
    macs = sum(row.macs for row in inside)
    if with_norm:
        names = list(rows)
        position = names.index(name) if name in names else -1
        for following in names[position + 1 :]:
            module = modules[following]
            if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)):
                params += sum(p.numel() for p in module.parameters())
                continue
            break
    return params, macs


def _first_conv(model: nn.Module) -> str | None:
    return next(
        (name for name, module in named_layers(model).items() if isinstance(module, nn.Conv2d)),
        None,
    )


def feeds_classifier(model: nn.Module, plan: MicroscopePlan, layer: LayerPlan) -> bool:
    """Whether `layer`'s units are the classifier's inputs: only flattening, dropout or global
    average pooling between them, and as many units as the classifier has inputs (so that
    weight × mean activation is each unit's push on each logit)."""
    if plan.classifier is None:
        return False
    modules = dict(model.named_modules())
    classifier = modules[plan.classifier.name]
    if not isinstance(classifier, nn.Linear) or classifier.in_features != layer.channels:
        return False
    leaves = [(n, m) for n, m in named_layers(model).items() if not list(m.children())]
    names = [n for n, _ in leaves]
    end = names.index(plan.classifier.name)
    if layer.name in names:
        start = names.index(layer.name) + 1
    else:  # a container: what follows its last leaf
        inside = [i for i, n in enumerate(names) if n.startswith(layer.name + ".")]
        if not inside:
            return False
        start = inside[-1] + 1
    return start <= end and all(isinstance(m, _BEFORE_LOGITS) for _, m in leaves[start:end])
