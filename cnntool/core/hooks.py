"""The one place where cnntool registers hooks on a model or changes how its activations backprop.

Every context manager here removes its handles (and exits its torch function mode) in `finally`
and puts back the model's train/eval mode and its parameters' requires_grad flags, also when
the forward pass raises. None of them swallows an exception, except `capture`'s own private
early-stop signal, and none relies on `__del__`.

- `capture`: activations (cloned, so a later in-place ReLU cannot overwrite them) and gradients
  (tensor hooks on the outputs, pytorch#61519, because full backward hooks break on in-place
  ReLUs) of chosen layers, per call for reused modules.
- `substitute_activation_backward`: guided backprop / deconvnet / custom backward for every
  rectifying activation, whether it is an `nn.ReLU` module or a functional `F.relu`, by
  intercepting torch functions instead of hooking modules (hooking only `nn.ReLU` modules is why
  captum's guided backprop silently equals the plain gradient on GoogLeNet and MobileNetV2).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from cnntool.core.loading.exported import refuse_hooks, refuse_interception
from cnntool.errors import CnnToolError, unknown_name

ForwardPre = Callable[[str, nn.Module, tuple], None]
ForwardPost = Callable[[str, nn.Module, tuple, object], None]
# rule(input, output, grad_output) -> grad_input, for one call of a rectifying activation
BackwardRule = Callable[[Tensor, Tensor, Tensor], Tensor]


@contextlib.contextmanager
def preserved_state(model: nn.Module) -> Iterator[nn.Module]:
    """Restore every submodule's `training` flag and every parameter's requires_grad on exit."""
    modules = list(model.modules())  # one walk of the tree for both (this runs per batch)
    modes = [(m, m.training) for m in modules]
    flags = [(p, p.requires_grad) for m in modules for p in m._parameters.values() if p is not None]
    try:
        yield model
    finally:
        # Touch only what changed: nn.Module.__setattr__ is slow, and attacks call this per batch.
        for module, training in modes:
            if module.training != training:
                module.training = training
        for param, requires_grad in flags:
            if param.requires_grad != requires_grad:
                param.requires_grad_(requires_grad)


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[nn.Module]:
    """The parameters stop requiring grad while active, and get their flags back on exit. An
    input gradient needs no parameter gradient, and with none required autograd records less
    (about 2 % of a batch's backprop on resnet18 and efficientnet_lite0)."""
    frozen = [p for p in model.parameters() if p.requires_grad]
    for param in frozen:
        param.requires_grad_(False)
    try:
        yield model
    finally:
        for param in frozen:
            param.requires_grad_(True)


@contextlib.contextmanager
def module_hooks(
    modules: Mapping[str, nn.Module],
    pre: ForwardPre | None = None,
    post: ForwardPost | None = None,
) -> Iterator[None]:
    """Call `pre(name, module, inputs)` / `post(name, module, inputs, output)` around each forward.

    A module reached under several names (a reused ReLU) is hooked once, under its first name.
    """
    handles: list[torch.utils.hooks.RemovableHandle] = []
    seen: set[int] = set()
    try:
        for name, module in modules.items():
            refuse_hooks(module)  # TorchScript: one sentence instead of torch's RuntimeError
            if id(module) in seen:
                continue
            seen.add(id(module))
            if pre is not None:
                handles.append(
                    module.register_forward_pre_hook(lambda mod, args, _n=name: pre(_n, mod, args))
                )
            if post is not None:
                handles.append(
                    module.register_forward_hook(
                        lambda mod, args, out, _n=name: post(_n, mod, args, out)
                    )
                )
        yield
    finally:
        for handle in handles:
            handle.remove()


def hook_count(model: nn.Module) -> int:
    """How many forward/backward hooks are registered on any module of `model` (tests use it)."""
    total = 0
    for module in model.modules():
        for attr in (
            "_forward_hooks",
            "_forward_pre_hooks",
            "_backward_hooks",
            "_backward_pre_hooks",
        ):
            total += len(getattr(module, attr, {}) or {})
    return total


# ---------------------------------------------------------------------------------------------
# capture


class _StopForward(BaseException):
    """Raised by a hook to end the forward once every requested layer has run.

    A BaseException, so that a model's own `except Exception` cannot swallow it; only the
    Capture that raised it catches it again.
    """

    def __init__(self, capture: object):
        super().__init__("forward stopped after the last captured layer")
        self.capture = capture  # the Capture or Observer that raised it


def _last(calls: Mapping[str, list]) -> dict[str, Any]:
    """The last call's entry per name; names never called, or whose last call got no gradient,
    are left out."""
    return {name: items[-1] for name, items in calls.items() if items and items[-1] is not None}


class Capture:
    """What `capture` recorded during the latest forward of the model.

    Everything is cleared when the next forward of the model starts, so a loop over batches
    inside one `capture` block keeps only the current batch.

    - `all_activations[name]`: one detached clone of the layer's output per call, in call order
      (a reused module, e.g. ResNet's `relu`, has several); `activations[name]` is the last.
    - `all_outputs[name]` / `outputs[name]`: the same clones still attached to the autograd
      graph (only with `detach=False`), to backprop from a unit towards the input. They keep the
      values the layer produced, even if an in-place op later overwrote the original tensor.
    - `all_gradients[name]` / `gradients[name]` (only with `gradients=True`): d(whatever was
      backpropagated) / d(output), per call in forward order (None where backward did not reach
      that call). A later backward overwrites an earlier one. The gradient hooks are removed
      when the block exits: run backward inside it.
    """

    all_activations: dict[str, list[Tensor]]
    all_outputs: dict[str, list[Tensor]]
    all_gradients: dict[str, list[Tensor | None]]

    def __init__(
        self,
        model: nn.Module,
        names: Sequence[str],
        *,
        gradients: bool,
        detach: bool,
        stop_early: bool,
    ):
        self._model = model
        self._names = tuple(names)
        self._want_gradients = gradients
        self._keep_outputs = not detach
        self._stop_early = stop_early
        self._tensor_hooks: list[torch.utils.hooks.RemovableHandle] = []
        self._clear()

    @property
    def activations(self) -> dict[str, Tensor]:
        return _last(self.all_activations)

    @property
    def outputs(self) -> dict[str, Tensor]:
        return _last(self.all_outputs)

    @property
    def gradients(self) -> dict[str, Tensor]:
        return _last(self.all_gradients)

    def run(self, *args, **kwargs) -> Any:
        """Call the model; return its output, or None when `stop_early` ended the forward.

        Use this in a loop (dataset scans): unlike a bare `model(x)` in the `with` block, an early
        stop does not skip the rest of the block.
        """
        try:
            return self._model(*args, **kwargs)
        except _StopForward as stop:
            if stop.capture is not self:
                raise
            return None

    def _clear(self) -> None:
        """Start afresh (a pre-hook on the model calls this before each forward)."""
        self._remove_tensor_hooks()
        self.all_activations = {n: [] for n in self._names}
        self.all_outputs = {n: [] for n in self._names}
        self.all_gradients = {n: [] for n in self._names}
        self._pending = set(self._names)

    def _remove_tensor_hooks(self) -> None:
        for handle in self._tensor_hooks:
            handle.remove()
        self._tensor_hooks.clear()

    def _record(self, names: Sequence[str], output: object) -> None:
        """Forward hook body: keep a clone of `output` under each of the module's names."""
        if not isinstance(output, Tensor):
            raise CnnToolError(
                f"layer '{names[0]}' returns a {type(output).__name__}, not a "
                "tensor; capture a layer whose output is a tensor"
            )
        kept = output.clone() if self._keep_outputs else output.detach().clone()
        for name in names:
            self.all_activations[name].append(kept.detach())
            if self._keep_outputs:
                self.all_outputs[name].append(kept)
            if self._want_gradients:
                self._watch_gradient(self.all_gradients[name], output)
        self._pending.difference_update(names)
        if self._stop_early and not self._pending:
            raise _StopForward(self)

    def _watch_gradient(self, slots: list[Tensor | None], output: Tensor) -> None:
        """Reserve this call's slot and fill it when backward reaches `output`.

        The hook sits on the output tensor itself, registered before any later in-place op, so
        it receives the gradient w.r.t. the value the layer produced (pytorch#61519).
        """
        index = len(slots)
        slots.append(None)
        if not output.requires_grad:
            return

        def keep(grad: Tensor) -> None:
            slots[index] = grad.detach().clone()

        self._tensor_hooks.append(output.register_hook(keep))


def _resolve_layers(
    model: nn.Module, layers: Mapping[str, nn.Module] | Sequence[str] | str
) -> dict[str, nn.Module]:
    """Names -> modules of `model`; plain names are module paths (aliases are layers.py's job)."""
    if isinstance(layers, Mapping):
        members = {id(m) for m in model.modules()}
        strangers = [name for name, module in layers.items() if id(module) not in members]
        if strangers:
            raise ValueError(f"layers {strangers} are not submodules of the model")
        return dict(layers)
    names = [layers] if isinstance(layers, str) else list(layers)
    paths = dict(model.named_modules(remove_duplicate=False))
    for name in names:
        if name not in paths:
            raise unknown_name("layer", name, paths)
    return {name: paths[name] for name in names}


@contextlib.contextmanager
def capture(
    model: nn.Module,
    layers: Mapping[str, nn.Module] | Sequence[str] | str,
    *,
    gradients: bool = False,
    detach: bool = True,
    stop_early: bool = False,
) -> Iterator[Capture]:
    """Record the outputs (and with `gradients=True` their gradients) of `layers` while active.

    `layers` is a mapping name -> submodule, or module paths of `model` ("features.0").
    Run the model (and backward) inside the block; see `Capture` for what is kept.
    `detach=False` also keeps graph-attached clones in `outputs`, to backprop from.
    `stop_early=True` ends the forward as soon as every requested layer has run once (a dataset
    scan of early layers need not pay for the rest of the network; later calls of a reused
    module are then not seen). The stop is caught by `Capture.run` or, for a bare `model(x)`,
    by this context manager itself, which then skips the rest of the `with` block.
    """
    modules = _resolve_layers(model, layers)
    names_of: dict[int, list[str]] = {}
    for name, module in modules.items():
        names_of.setdefault(id(module), []).append(name)
    cap = Capture(model, list(modules), gradients=gradients, detach=detach, stop_early=stop_early)
    try:
        with (
            preserved_state(model),
            # (nothing to clear when nothing is captured: a TorchScript model needs no hook then)
            module_hooks({"": model} if modules else {}, pre=lambda *_: cap._clear()),
            module_hooks(
                modules, post=lambda _n, mod, _a, out: cap._record(names_of[id(mod)], out)
            ),
        ):
            yield cap
    except _StopForward as stop:
        if stop.capture is not cap:
            raise
    finally:
        cap._remove_tensor_hooks()


# ---------------------------------------------------------------------------------------------
# observe: outputs handed to callbacks inside the hook (dataset scans)

Observation = Callable[[Tensor], None]


class Observer:
    """What `observe` yields: `run(x)` calls the model and returns its output, or None when
    `stop_early` ended the forward after the last observed layer."""

    def __init__(self, model: nn.Module, names: Sequence[str], stop_early: bool):
        self._model, self._names, self._stop_early = model, tuple(names), stop_early
        self._pending: set[str] = set(self._names)

    def run(self, *args, **kwargs) -> Any:
        self._pending = set(self._names)
        try:
            return self._model(*args, **kwargs)
        except _StopForward as stop:
            if stop.capture is not self:
                raise
            return None

    def _seen(self, names: Sequence[str]) -> None:
        self._pending.difference_update(names)
        if self._stop_early and not self._pending:
            raise _StopForward(self)


@contextlib.contextmanager
def observe(
    model: nn.Module, callbacks: Mapping[str, Sequence[Observation]], *, stop_early: bool = False
) -> Iterator[Observer]:
    """Hand each call's output of the named layers (module paths) to their callbacks, inside the
    forward hook.

    Unlike `capture`, nothing is cloned or kept: a callback reduces the tensor at once (running
    statistics, a top-k, pooled features), before a later in-place op can overwrite it and
    without holding every layer's maps until the forward ends. A reused module calls its
    callbacks once per call. `stop_early=True` ends the forward once every named layer has run
    once, when nobody needs the model's output.
    """
    modules = _resolve_layers(model, list(callbacks))
    names_of: dict[int, list[str]] = {}
    for name, module in modules.items():
        names_of.setdefault(id(module), []).append(name)
    observer = Observer(model, list(modules), stop_early)

    def post(_name, module, _inputs, output):
        names = names_of[id(module)]
        if not isinstance(output, Tensor):
            raise CnnToolError(
                f"layer '{names[0]}' returns a {type(output).__name__}, not a "
                "tensor; pick a layer whose output is a tensor"
            )
        for name in names:
            for callback in callbacks[name]:
                callback(output)
        observer._seen(names)

    with preserved_state(model), module_hooks(modules, post=post):
        yield observer


# ---------------------------------------------------------------------------------------------
# substitute_activation_backward


@dataclass(frozen=True)
class _Rectifier:
    """A piecewise-linear activation: identity on (lower, upper), slope `negative_slope` below
    `lower` (leaky ReLU), constant elsewhere. ReLU, ReLU6, Hardtanh and LeakyReLU are all one."""

    kind: str
    lower: float
    upper: float
    negative_slope: float = 0.0

    def derivative(self, x: Tensor) -> Tensor:
        """d activation / dx in x's dtype; at a kink, the side torch's own backward picks."""
        inside = (x > self.lower) & (x < self.upper)
        return torch.full_like(x, self.negative_slope).masked_fill_(inside, 1.0)


_RELU = _Rectifier("relu", 0.0, math.inf)
_RELU6 = _Rectifier("relu6", 0.0, 6.0)


def _plain(act: _Rectifier, x: Tensor, _out: Tensor, grad: Tensor) -> Tensor:
    """The true gradient: a control that exercises the substitution yet changes no number
    (except clamp(min=0) at exactly 0, which gets ReLU's subgradient 0 instead of clamp's 1)."""
    return grad * act.derivative(x)


def _guided(act: _Rectifier, x: Tensor, _out: Tensor, grad: Tensor) -> Tensor:
    """Springenberg et al. 2015: the true backward, and only positive gradients pass.

    For ReLU6/Hardtanh the input gate is the forward's pass-through range (lower < x < upper);
    for LeakyReLU negative inputs keep their slope (the forward's own derivative).
    """
    return grad.clamp(min=0) * act.derivative(x)


def _guided_from_output(act: _Rectifier, _x: Tensor, out: Tensor, grad: Tensor) -> Tensor:
    """`_guided` for a rectifier with no negative slope (ReLU, ReLU6, Hardtanh), read from its
    output: lower < out < upper exactly where lower < x < upper, since it clamps x to
    [lower, upper]. Two passes (aten's own backward, then the clamp), and an in-place call's
    input need not be copied in the forward."""
    if act.upper == math.inf:
        masked = torch.ops.aten.threshold_backward.default(grad, out, act.lower)
    else:
        masked = torch.ops.aten.hardtanh_backward.default(grad, out, act.lower, act.upper)
    return masked.clamp_min_(0)


def _deconv(_act: _Rectifier, _x: Tensor, _out: Tensor, grad: Tensor) -> Tensor:
    """Zeiler & Fergus 2014: rectify the backward signal, ignoring the forward's input mask.

    The max-pool "switches" need nothing here: autograd's max-pool backward already routes
    each gradient to the position that won in the forward.
    """
    return grad.clamp(min=0)


def _redirected(act: _Rectifier, x: Tensor, _out: Tensor, grad: Tensor) -> Tensor:
    """Lucid's redirected ReLU (lucid.misc.redirected_relu_grad), for gradient *descent* on a
    loss: the true gradient, except for an image (the first dimension) whose true gradient is
    zero everywhere in this activation, e.g. the unit an image maximizes is off at the start.
    There the gradient passes as if the activation were the identity, but never where descent
    would push an input further out of the pass-through range (below `lower` with grad > 0,
    above `upper` with grad < 0), so the input is brought back to where the unit can fire."""
    true = grad * act.derivative(x)
    outward = ((x <= act.lower) & (grad > 0)) | ((x >= act.upper) & (grad < 0))
    redirected = grad.masked_fill(outward, 0.0)
    if x.dim() < 2:
        return redirected if not true.any() else true
    stuck = ~true.flatten(1).ne(0).any(1)
    return torch.where(stuck.view(-1, *([1] * (x.dim() - 1))), redirected, true)


_BUILTIN_RULES = {
    "plain": _plain,
    "guided": _guided,
    "deconv": _deconv,
    "redirected": _redirected,
}
_RULE_NAMES = {"guided": "guided backprop", "deconv": "deconvnet", "redirected": "redirected ReLU"}


@dataclass(frozen=True)
class _RectifyingCall:
    """One intercepted call: the original function and arguments, and what it computes."""

    func: Callable
    args: tuple
    kwargs: dict
    input: Tensor
    activation: _Rectifier
    inplace: bool


class _OutputOnlyRule(functools.partial):
    """A built-in rule that reads only the output and the gradient: the forward keeps no copy
    of the input for it."""

    uses_input = False


class _RuleBackward(torch.autograd.Function):
    """Forward: exactly the original call. Backward: rule(input, output, grad_output)."""

    @staticmethod
    def forward(ctx, x: Tensor, call: _RectifyingCall, rule: BackwardRule) -> Tensor:
        # An in-place call overwrites x, so the rule gets a copy of the input it saw (None for
        # a built-in rule that reads only the output or the gradient).
        original_input = (
            None if not getattr(rule, "uses_input", True) else x.clone() if call.inplace else x
        )
        out = call.func(*call.args, **call.kwargs)
        if call.inplace:
            ctx.mark_dirty(x)
        ctx.rule = rule
        ctx.save_for_backward(original_input, out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, out = ctx.saved_tensors
        return ctx.rule(x, out, grad), None, None


def _relu_family(_bound: dict) -> _Rectifier:
    return _RELU


def _relu6_family(_bound: dict) -> _Rectifier:
    return _RELU6


def _hardtanh_family(bound: dict) -> _Rectifier:
    lower, upper = float(bound["min_val"]), float(bound["max_val"])
    return _RELU6 if (lower, upper) == (0.0, 6.0) else _Rectifier("hardtanh", lower, upper)


def _leaky_family(bound: dict) -> _Rectifier:
    return _Rectifier("leaky_relu", 0.0, math.inf, float(bound["negative_slope"]))


def _clamp_family(bound: dict) -> _Rectifier | None:
    """clamp(min=0) with no max is a ReLU; any other clamp is not an activation."""
    low = bound.get("min")
    if bound.get("max") is None and isinstance(low, (int, float)) and low == 0:
        return _RELU
    return None


_HARDTANH = {"min_val": -1.0, "max_val": 1.0}
_CLAMP = {"min": None, "max": None}
# func -> (family, parameters after the input with their defaults, in-place by its very name).
# nn.ReLU / ReLU6 / Hardtanh / LeakyReLU call the F.* functions, so modules are covered too.
_RECTIFYING: dict[Callable, tuple[Callable[[dict], _Rectifier | None], dict, bool]] = {
    F.relu: (_relu_family, {"inplace": False}, False),
    torch.relu: (_relu_family, {}, False),
    torch.relu_: (_relu_family, {}, True),  # also F.relu_
    Tensor.relu: (_relu_family, {}, False),
    Tensor.relu_: (_relu_family, {}, True),
    F.relu6: (_relu6_family, {"inplace": False}, False),
    F.hardtanh: (_hardtanh_family, {**_HARDTANH, "inplace": False}, False),
    F.hardtanh_: (_hardtanh_family, _HARDTANH, True),
    F.leaky_relu: (_leaky_family, {"negative_slope": 0.01, "inplace": False}, False),
    F.leaky_relu_: (_leaky_family, {"negative_slope": 0.01}, True),
    torch.clamp: (_clamp_family, _CLAMP, False),
    torch.clip: (_clamp_family, _CLAMP, False),
    torch.clamp_: (_clamp_family, _CLAMP, True),
    torch.clip_: (_clamp_family, _CLAMP, True),
    Tensor.clamp: (_clamp_family, _CLAMP, False),
    Tensor.clip: (_clamp_family, _CLAMP, False),
    Tensor.clamp_: (_clamp_family, _CLAMP, True),
    Tensor.clip_: (_clamp_family, _CLAMP, True),
    torch.clamp_min: (_clamp_family, {"min": None}, False),
    torch.clamp_min_: (_clamp_family, {"min": None}, True),
    Tensor.clamp_min: (_clamp_family, {"min": None}, False),
    Tensor.clamp_min_: (_clamp_family, {"min": None}, True),
}

# Activations that are not rectifiers: their gradients are left alone, their use is reported.
_SMOOTH: dict[Callable, str] = {
    F.silu: "silu",
    F.gelu: "gelu",
    F.hardswish: "hardswish",
    F.hardsigmoid: "hardsigmoid",
    F.mish: "mish",
    F.elu: "elu",
    F.elu_: "elu",
    F.selu: "selu",
    F.celu: "celu",
    F.softplus: "softplus",
    F.logsigmoid: "logsigmoid",
    F.prelu: "prelu",
    F.rrelu: "rrelu",
    F.threshold: "threshold",
    torch.sigmoid: "sigmoid",
    torch.sigmoid_: "sigmoid",
    Tensor.sigmoid: "sigmoid",
    Tensor.sigmoid_: "sigmoid",  # F.sigmoid calls Tensor.sigmoid
    torch.tanh: "tanh",
    torch.tanh_: "tanh",
    Tensor.tanh: "tanh",
    Tensor.tanh_: "tanh",
}


def _rectifying_call(func: Callable, args: tuple, kwargs: dict) -> _RectifyingCall | None:
    """Recognize a rectifying activation on a floating-point tensor, whatever its spelling."""
    signature = _RECTIFYING.get(func)
    if signature is None:
        return None
    family, params, inplace_by_name = signature
    bound = {**params, **dict(zip(("input", *params), args, strict=False)), **kwargs}
    x = bound.get("input")
    activation = family(bound)
    if activation is None or not isinstance(x, Tensor) or not x.is_floating_point():
        return None
    return _RectifyingCall(
        func, args, kwargs, x, activation, inplace_by_name or bool(bound.get("inplace"))
    )


@dataclass
class Substitution:
    """What `substitute_activation_backward` saw, counted per call of each activation kind.

    `substituted`: rectifier kinds ("relu", "relu6", "hardtanh", "leaky_relu") whose backward
    follows the rule. `uncovered`: smooth activations ("silu", "gelu", "sigmoid", ...) that ran
    with their ordinary gradient — a caller should warn that the rule does not cover them.
    """

    rule: str | BackwardRule
    substituted: Counter = field(default_factory=Counter)
    uncovered: Counter = field(default_factory=Counter)


class _SubstitutionMode(TorchFunctionMode):
    """Routes each rectifying call through `_RuleBackward` and counts what it sees.

    While this handler runs, torch pops the mode, so the F.relu -> torch.relu calls made inside
    one activation are not seen again: each activation is substituted exactly once. The same
    holds for backward: `Tensor.backward` and `torch.autograd.grad` are torch functions too,
    so a rule's own clamp runs with the mode popped and is not counted as a model activation.
    """

    def __init__(self, report: Substitution):
        super().__init__()
        self._report = report
        self._rules: dict[_Rectifier, BackwardRule] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        call = _rectifying_call(func, args, kwargs)
        if call is None:
            kind = _SMOOTH.get(func)
            if kind is not None:
                self._report.uncovered[kind] += 1
            return func(*args, **kwargs)
        self._report.substituted[call.activation.kind] += 1
        return _RuleBackward.apply(call.input, call, self._rule_for(call.activation))

    def _rule_for(self, activation: _Rectifier) -> BackwardRule:
        built = self._rules.get(activation)  # one per activation kind, not one per call
        if built is None:
            built = self._rules[activation] = self._build_rule(activation)
        return built

    def _build_rule(self, activation: _Rectifier) -> BackwardRule:
        rule = self._report.rule
        if callable(rule):
            return rule
        if activation.negative_slope == 0 and rule in ("guided", "deconv"):
            return _OutputOnlyRule(_guided_from_output if rule == "guided" else _deconv, activation)
        return functools.partial(_BUILTIN_RULES[rule], activation)


@contextlib.contextmanager
def substitute_activation_backward(
    model: nn.Module, rule: str | BackwardRule
) -> Iterator[Substitution]:
    """While active, every rectifying activation computed backprops by `rule`.

    `rule`: "guided" (Springenberg 2015), "deconv" (Zeiler & Fergus 2014), "plain" (the true
    gradient, a control), "redirected" (Lucid's redirected ReLU, for activation maximization:
    see `_redirected`), or a callable(input, output, grad_output) -> grad_input.
    Covered: nn.ReLU / ReLU6 / Hardtanh / LeakyReLU modules (in-place and reused ones too) and
    F.relu, torch.relu(_), Tensor.relu(_), F.relu6, F.hardtanh(_), F.leaky_relu(_) and
    clamp/clip/clamp_min with min=0 and no max — every call made while the block is active,
    inside the model or not. The rule is fixed into the graph when the forward runs, so
    backward may also run after the block. Not seen: TorchScript code and torch.ops.aten calls.
    Yields a `Substitution` that counts substituted and uncovered (smooth) activations.
    """
    if not callable(rule) and rule not in _BUILTIN_RULES:
        raise ValueError(
            f"unknown backward rule {rule!r}; use one of {sorted(_BUILTIN_RULES)} or a callable"
        )
    if rule != "plain":  # compiled models give true gradients, but no Python calls to reroute
        name = _RULE_NAMES.get(rule) if isinstance(rule, str) else None
        refuse_interception(model, name or "a custom backward rule")
    report = Substitution(rule)
    with preserved_state(model), _SubstitutionMode(report):
        yield report
