"""Where diagnose measures: one point per convolution / linear layer, at its activation.

A unit is "dead" or "sparse" only after a nonlinearity, so by default every Conv*/Linear layer
(the classifier's logits excepted) is measured at the output of the activation module that
follows it in registration order, through BatchNorm / Dropout / Identity. When no activation
module follows (a linear bottleneck, a functional `F.relu`, a residual add before the ReLU) or
when that activation module is shared with an earlier layer (ResNet's reused `relu`: its first
call of each forward is the one after the earlier layer), the point is the pre-activation — the
following normalization's output, else the layer's own — and its kind is "linear": variance and
correlation are measured, dead/sparsity are not judged. A reused activation module is measured
at its FIRST call in each forward (ResNet: after `bn1`, which is the unit of `conv1`).

In-place activations are fine: the statistics are taken inside the forward hook, before any
later in-place op can overwrite the tensor.

`--layers` measures exactly the named modules' outputs instead; a conv/linear/norm layer
followed by a rectifier is then judged as a pre-activation (a unit never > 0 there is dead
after the rectifier).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from cnntool.core.layers import layer_aliases, named_layers, resolve_layer
from cnntool.tasks.diagnose.stats import Bounds

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_PASS_THROUGH = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.Dropout,
    nn.Dropout2d,
    nn.Identity,
)


@dataclass(frozen=True)
class Activation:
    """What a module's output looks like: `rectified` = outputs ≥ 0 and 0 means "off"."""

    kind: str  # "relu", "relu6", "sigmoid", …, or "linear" (no nonlinearity seen)
    rectified: bool
    bounds: Bounds | None = None


LINEAR = Activation("linear", rectified=False)


def activation_of(module: nn.Module) -> Activation | None:
    """The activation a module computes, or None when it is not an activation module."""
    if isinstance(module, nn.ReLU6):
        return Activation("relu6", True, Bounds(0.0, 6.0, two_sided=False))
    if isinstance(module, nn.Hardtanh):  # after ReLU6, which is a Hardtanh
        low, high = float(module.min_val), float(module.max_val)
        return Activation("hardtanh", low == 0.0, Bounds(low, high, two_sided=low != 0.0))
    if isinstance(module, nn.ReLU):
        return Activation("relu", True)
    if isinstance(module, (nn.Sigmoid, nn.Hardsigmoid)):
        return Activation(type(module).__name__.lower(), False, Bounds(0.0, 1.0, two_sided=True))
    if isinstance(module, (nn.Tanh, nn.Softsign)):
        return Activation(type(module).__name__.lower(), False, Bounds(-1.0, 1.0, two_sided=True))
    smooth = (
        nn.LeakyReLU,
        nn.PReLU,
        nn.ELU,
        nn.SELU,
        nn.CELU,
        nn.GELU,
        nn.SiLU,
        nn.Mish,
        nn.Hardswish,
        nn.Softplus,
    )
    if isinstance(module, smooth):
        return Activation(type(module).__name__.lower(), False)
    return None


@dataclass(frozen=True)
class MeasurePoint:
    """Measure `module`'s output (a module path); `layer` is the conv/linear whose units these
    are (for filter statistics and messages), or None when there is none before it."""

    module: str
    layer: str | None
    activation: Activation

    @property
    def label(self) -> str:
        """How reports name the point: 'conv2 (at relu2)' or just 'conv2'."""
        if self.layer is None or self.layer == self.module:
            return self.module
        return f"{self.layer} (at {self.module})"


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in named_layers(model).items() if not list(m.children())]


def default_points(model: nn.Module) -> list[MeasurePoint]:
    """Every Conv*/Linear layer but the logits, at its activation (see the module docstring)."""
    leaves = _leaves(model)
    logits = layer_aliases(model).get("logits") or _last_linear(leaves)
    claimed: set[int] = set()
    points = []
    for position, (name, module) in enumerate(leaves):
        if not isinstance(module, _WEIGHTED) or name == logits:
            continue
        measured, activation = name, LINEAR
        for follower_name, follower in leaves[position + 1 :]:
            found = activation_of(follower)
            if found is not None:
                if id(follower) not in claimed:
                    claimed.add(id(follower))
                    measured, activation = follower_name, found
                break
            if not isinstance(follower, _PASS_THROUGH):
                break
            if not isinstance(follower, (nn.Dropout, nn.Dropout2d, nn.Identity)):
                measured = follower_name  # the normalization's output is the pre-activation
        points.append(MeasurePoint(measured, name, activation))
    return points


def _last_linear(leaves) -> str | None:
    linear = [n for n, m in leaves if isinstance(m, nn.Linear)]
    return linear[-1] if linear else None


def named_points(model: nn.Module, names: list[str]) -> list[MeasurePoint]:
    """Points at exactly these modules (paths or aliases), in the order given."""
    leaves = _leaves(model)
    order = {name: i for i, (name, _) in enumerate(leaves)}
    points = []
    for given in names:
        path, module = resolve_layer(model, given)
        own = activation_of(module)
        if own is not None:
            points.append(MeasurePoint(path, _weighted_before(leaves, order.get(path)), own))
            continue
        layer = path if isinstance(module, _WEIGHTED) else _weighted_before(leaves, order.get(path))
        points.append(MeasurePoint(path, layer, _pre_activation(leaves, order.get(path))))
    return points


def _weighted_before(leaves, position: int | None) -> str | None:
    """The conv/linear layer that feeds a point through pass-through modules, if any."""
    if position is None:
        return None
    for name, module in reversed(leaves[:position]):
        if isinstance(module, _WEIGHTED):
            return name
        if not isinstance(module, _PASS_THROUGH):
            return None
    return None


def _pre_activation(leaves, position: int | None) -> Activation:
    """A pre-activation followed by a rectifier is judged as rectified (never > 0 = dead)."""
    if position is None:
        return LINEAR
    for _name, module in leaves[position + 1 :]:
        found = activation_of(module)
        if found is not None:
            if found.rectified:
                return Activation(f"pre-{found.kind}", True)
            return LINEAR
        if not isinstance(module, _PASS_THROUGH):
            break
    return LINEAR
