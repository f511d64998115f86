"""Layer-wise relevance propagation (LRP; Bach et al. 2015, Montavon et al. 2017 and 2019) as
backward rules of the torch functions a model calls.

`core.hooks.substitute_activation_backward` reroutes the backward of every rectifier, whatever
its spelling, by intercepting torch functions in a `TorchFunctionMode`. LRP is the same idea
taken to every layer: while `propagate_relevance` is active, each call a rule exists for runs
its ordinary forward inside an autograd function whose backward is the rule, so one
`torch.autograd.grad` of the target, started from the target's value, returns the relevance
of every input pixel. Intercepting functions rather than hooking modules (zennit's way) means
a functional ReLU, a residual `out + x` and a BatchNorm are seen wherever and however the
model's code calls them, with no per-architecture canonizer.

The rules (zennit 0.5.1's definitions, which tests/test_lrp.py holds our maps to):
- conv1d/2d/3d and linear: the composite's rule; its `first` rule for the first one the input
  meets. ε: R_i = x_i Σ_j w_ji R_j / (z_j + ε sign z_j). z+: only positive contributions
  (x⁺w⁺ + x⁻w⁻ + b⁺). α-β: α × positive minus β × negative contributions (α − β = 1). flat:
  every input of a window gets an equal share. zbox: Montavon's z^B for inputs bounded to
  [low, high] (the model's normalization of black and white pixels).
- a zero F.pad right before a convolution (TensorFlow "SAME" layers pad first): part of the
  convolution, as its own padding would be, so flat and zbox give the padding no relevance.
- batch_norm (eval mode) right after a conv or linear: merged into it, as zennit's canonizers
  do (the layer's rule sees W·γ/σ and (b − μ)·γ/σ + β); anywhere else: relevance passes.
- add of two tensors of one shape that both come from the input (a residual connection): split
  in proportion to the summands (zennit's ResNet canonizer, its `Norm` rule on a `Sum`).
- avg_pool, adaptive_avg_pool and mean: linear layers without bias, relevance in proportion to
  the inputs (zennit's `Norm`).
- rectifiers (ReLU, ReLU6, hardtanh, leaky ReLU, clamp(min=0)) and the smooth activations
  (SiLU, GELU, sigmoid…): relevance passes unchanged (zennit's `Pass`). The smooth ones have no
  LRP rule of their own; they are reported (`passed`) so that a caller can name them.
- max pooling, dropout, flatten, reshapes, indexing, padding, concatenation: their gradient,
  which moves relevance without changing it (max pooling: to the winner, zennit's default).
- anything else that depends on the input (multiplications, attention, layer norm, softmax…):
  its gradient, and counted in `unruled` so that a caller says so instead of guessing.

The stabilizer of every denominator is zennit's: z + ε·sign(z), with sign(0) = +1.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakTensorKeyDictionary

from cnntool.core.hooks import _SMOOTH, _rectifying_call, preserved_state
from cnntool.core.loading.exported import refuse_interception
from cnntool.errors import CnnToolError

LAYER_RULES = ("epsilon", "zplus", "alphabeta")
FIRST_RULES = ("flat", "zbox", *LAYER_RULES)
RULE_NAMES = {
    "epsilon": "ε",
    "zplus": "z+",
    "alphabeta": "α-β",
    "flat": "flat",
    "zbox": "z^B (zbox)",
}


@dataclass(frozen=True)
class Composite:
    """Which rule each layer gets: `conv` for convolutions, `dense` for fully connected layers,
    `first` for the first convolution or linear layer the input meets. `epsilon` is the ε rule's
    ε, `stabilizer` the other rules' (zennit's defaults, 1e-6 both); `alpha`, `beta` the α-β
    rule's (α − β = 1: what a layer receives, it passes on); `low`, `high` the zbox rule's input
    bounds, in model-input space (a number or a tensor that broadcasts to the input)."""

    conv: str = "zplus"
    dense: str = "epsilon"
    first: str = "flat"
    epsilon: float = 1e-6
    stabilizer: float = 1e-6
    alpha: float = 2.0
    beta: float = 1.0
    low: Tensor | float | None = None
    high: Tensor | float | None = None

    def __post_init__(self):
        for name, rule in (("conv", self.conv), ("dense", self.dense)):
            if rule not in LAYER_RULES:
                raise CnnToolError(
                    f"unknown LRP rule '{rule}' for {name} layers; use one of "
                    f"{', '.join(LAYER_RULES)}"
                )
        if self.first not in FIRST_RULES:
            raise CnnToolError(
                f"unknown first-layer LRP rule '{self.first}'; use one of {', '.join(FIRST_RULES)}"
            )
        if self.alpha < 0 or self.beta < 0 or abs(self.alpha - self.beta - 1) > 1e-9:
            raise CnnToolError(
                f"LRP α-β needs α ≥ 0, β ≥ 0 and α − β = 1 (got α {self.alpha:g}, "
                f"β {self.beta:g}), so that each layer passes on what it receives"
            )
        if self.epsilon < 0 or self.stabilizer < 0:
            raise CnnToolError("LRP's ε and stabilizer cannot be negative")
        if self.first == "zbox" and (self.low is None or self.high is None):
            raise CnnToolError(
                "the zbox first-layer rule needs the input's bounds (low, high): the model's "
                "preprocessing gives them"
            )

    def rule_text(self, rule: str) -> str:
        if rule == "epsilon":
            return f"ε={self.epsilon:g}"
        if rule == "alphabeta":
            return f"α={self.alpha:g} β={self.beta:g}"
        return RULE_NAMES[rule]

    def short(self) -> str:
        """'LRP z+ (conv) ε (dense) flat (first layer)', for a figure's title."""
        conv, dense = self.rule_text(self.conv), self.rule_text(self.dense)
        layers = f"{conv} (conv, dense)" if conv == dense else f"{conv} (conv) {dense} (dense)"
        return f"LRP {layers} {self.rule_text(self.first)} (first layer)"

    def describe(self) -> str:
        """'z+ on convolutions, ε=1e-06 on dense layers, flat on the first layer'."""
        return (
            f"{self.rule_text(self.conv)} on convolutions, {self.rule_text(self.dense)} on dense "
            f"layers, {self.rule_text(self.first)} on the first layer"
        )


@dataclass
class RelevanceReport:
    """What `propagate_relevance` saw, counted per call.

    `rules`: (function, what its backward does) -> calls, for every call given an LRP rule.
    `passed`: smooth activations (silu, gelu, sigmoid…) that passed relevance unchanged without
    an LRP rule of their own. `unruled`: functions of the input with no rule at all, whose
    gradient carried the relevance (mul, matmul, layer_norm, softmax, attention…)."""

    composite: Composite
    rules: Counter = field(default_factory=Counter)
    passed: Counter = field(default_factory=Counter)
    unruled: Counter = field(default_factory=Counter)


def stabilize(z: Tensor, epsilon: float) -> Tensor:
    """zennit's stabilizer: z + ε·sign(z), with sign(0) = +1 (so 0 becomes ε)."""
    return z + ((z == 0).to(z) + z.sign()) * epsilon


# ---------------------------------------------------------------------------------------------
# linear layers


_CONV_OPTIONS = ("stride", "padding", "dilation", "groups")
_CONV_DEFAULTS = (1, 0, 1, 1)


@dataclass
class _Layer:
    """One call of a convolution or linear function: its parameters, its rule, and the
    BatchNorm merged into it (scale, running mean, shift per output channel) when one follows
    it directly."""

    func: Callable
    weight: Tensor
    bias: Tensor | None
    options: dict
    rule: str
    composite: Composite
    merged: tuple[Tensor, Tensor, Tensor] | None = None
    padding: tuple[int, ...] | None = None  # zeros added by F.pad right before the call

    def parameters(self) -> tuple[Tensor, Tensor | None]:
        """Weight and bias with the merged BatchNorm (zennit's MergeBatchNorm arithmetic)."""
        weight = self.weight.detach()
        bias = None if self.bias is None else self.bias.detach()
        if self.merged is None:
            return weight, bias
        scale, mean, shift = self.merged
        weight = weight * scale.view(-1, *([1] * (weight.dim() - 1)))
        bias = torch.zeros(1, dtype=weight.dtype, device=weight.device) if bias is None else bias
        return weight, (bias - mean) * scale + shift

    def run(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if self.padding is not None:
            x = F.pad(x, self.padding)
        return self.func(x, weight, bias, **self.options)

    def relevance(self, x: Tensor, relevance: Tensor) -> Tensor:
        """The relevance of the layer's input `x`, given its output's."""
        weight, bias = self.parameters()
        rule, c = self.rule, self.composite
        if rule == "epsilon":
            (g,) = self._shares([(x, weight, bias)], relevance, c.epsilon)
            return x * g
        if rule == "flat":
            (g,) = self._shares(
                [(torch.ones_like(x), torch.ones_like(weight), None)], relevance, c.stabilizer
            )
            return g
        if rule == "zbox":
            low = _bound(c.low, x)
            high = _bound(c.high, x)
            positive, negative = weight.clamp(min=0), weight.clamp(max=0)
            g, g_low, g_high = self._shares(
                [
                    (x, weight, bias),
                    (low, positive, _clamped(bias, min=0)),
                    (high, negative, _clamped(bias, max=0)),
                ],
                relevance,
                c.stabilizer,
                signs=(1, -1, -1),
            )
            return x * g - low * g_low - high * g_high
        positive, negative = weight.clamp(min=0), weight.clamp(max=0)
        x_pos = x.clamp(min=0)
        # after a rectifier the input has no negative part: its terms are exactly 0, skip them
        x_neg = None if bool((x >= 0).all()) else x.clamp(max=0)
        excitatory = self._contribution(
            x_pos, x_neg, positive, negative, _clamped(bias, min=0), relevance
        )
        if rule == "zplus":
            return excitatory
        inhibitory = self._contribution(
            x_pos, x_neg, negative, positive, _clamped(bias, max=0), relevance
        )
        return c.alpha * excitatory - c.beta * inhibitory

    def _contribution(self, x_pos, x_neg, w_pos, w_neg, bias, relevance) -> Tensor:
        """Relevance in proportion to x⁺·w_pos + x⁻·w_neg (+ bias): the z+ rule's share, and
        each half of the α-β rule's."""
        terms = [(x_pos, w_pos, bias)] + ([] if x_neg is None else [(x_neg, w_neg, None)])
        grads = self._shares(terms, relevance, self.composite.stabilizer)
        share = x_pos * grads[0]
        return share if x_neg is None else share + x_neg * grads[1]

    def _shares(self, terms, relevance, epsilon, signs=None) -> tuple[Tensor, ...]:
        """Σ± run(input, weight, bias) over `terms` is the denominator z; returns, for each
        term's input, the backward of run applied to relevance / stabilized z."""
        with torch.enable_grad():
            inputs = [t[0].detach().requires_grad_() for t in terms]
            outputs = [self.run(i, w, b) for i, (_, w, b) in zip(inputs, terms, strict=True)]
            z = outputs[0]
            for out, sign in zip(outputs[1:], (signs or (1,) * len(outputs))[1:], strict=True):
                z = z + out if sign > 0 else z - out
            scaled = relevance / stabilize(z.detach(), epsilon)
            return torch.autograd.grad(outputs, inputs, [scaled] * len(outputs))


def _clamped(bias: Tensor | None, **bounds) -> Tensor | None:
    return None if bias is None else bias.clamp(**bounds)


def _bound(value, x: Tensor) -> Tensor:
    """A zbox bound (a number, or a tensor shaped like one input or like the batch) as a
    tensor of x's shape; an image's bounds also fit a linear first layer that takes the image
    flattened. A bound that fits neither is one sentence."""
    bound = torch.as_tensor(value).to(x)
    if bound.dim() == x.dim() and bound.shape[0] > x.shape[0]:
        bound = bound[: x.shape[0]]
    if bound.dim() == x.dim() - 1:
        bound = bound.unsqueeze(0)
    if bound.dim() > 1 and bound.dim() != x.dim() and bound[0].numel() == x[0].numel():
        bound = bound.reshape(bound.shape[0], *x.shape[1:])
    try:
        return bound.expand_as(x)
    except RuntimeError:
        raise CnnToolError(
            f"the zbox rule's bounds ({tuple(bound.shape)}) do not fit the first layer's input "
            f"({tuple(x.shape)}): it is not the image; use the flat first-layer rule"
        ) from None


class _LinearRelevance(torch.autograd.Function):
    """Forward: the original convolution or linear call. Backward: the layer's LRP rule."""

    @staticmethod
    def forward(ctx, x: Tensor, layer: _Layer, call: Callable[[], Tensor]) -> Tensor:
        ctx.layer = layer
        ctx.save_for_backward(x)
        return call()

    @staticmethod
    def backward(ctx, relevance: Tensor):
        (x,) = ctx.saved_tensors
        return ctx.layer.relevance(x, relevance), None, None


# ---------------------------------------------------------------------------------------------
# the other rules


class _PassRelevance(torch.autograd.Function):
    """Forward: the original call (in place or not). Backward: relevance passes unchanged."""

    @staticmethod
    def forward(ctx, x: Tensor, call: Callable[[], Tensor], inplace: bool) -> Tensor:
        out = call()
        if inplace:
            ctx.mark_dirty(x)
        return out

    @staticmethod
    def backward(ctx, relevance: Tensor):
        return relevance, None, None


class _SumRelevance(torch.autograd.Function):
    """a + b with relevance split in proportion to the summands (zennit's Norm on a Sum)."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, call: Callable[[], Tensor], inplace: bool, eps: float):
        ctx.eps = eps
        # an in-place `out += x` overwrites a: keep the summand it was
        ctx.save_for_backward(a.clone() if inplace else a, b)
        out = call()
        if inplace:
            ctx.mark_dirty(a)
        return out

    @staticmethod
    def backward(ctx, relevance: Tensor):
        a, b = ctx.saved_tensors
        scaled = relevance / stabilize(a + b, ctx.eps)
        return a * scaled, b * scaled, None, None, None


class _PoolRelevance(torch.autograd.Function):
    """Average pooling or a mean: relevance in proportion to the inputs (zennit's Norm)."""

    @staticmethod
    def forward(ctx, x: Tensor, again: Callable[[Tensor], Tensor], eps: float) -> Tensor:
        ctx.again, ctx.eps = again, eps
        ctx.save_for_backward(x)
        return again(x)

    @staticmethod
    def backward(ctx, relevance: Tensor):
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            leaf = x.detach().requires_grad_()
            out = ctx.again(leaf)
            (g,) = torch.autograd.grad(out, leaf, relevance / stabilize(out.detach(), ctx.eps))
        return x * g, None, None


# ---------------------------------------------------------------------------------------------
# the mode

_CONVOLUTIONS = {F.conv1d: "conv1d", F.conv2d: "conv2d", F.conv3d: "conv3d"}
_POOLS = {
    F.avg_pool1d: "avg_pool1d",
    F.avg_pool2d: "avg_pool2d",
    F.avg_pool3d: "avg_pool3d",
    F.adaptive_avg_pool1d: "adaptive_avg_pool1d",
    F.adaptive_avg_pool2d: "adaptive_avg_pool2d",
    F.adaptive_avg_pool3d: "adaptive_avg_pool3d",
    torch.mean: "mean",
    Tensor.mean: "mean",
}
_ADDS = {torch.add, Tensor.add, Tensor.__add__, Tensor.__radd__}
_ADDS_INPLACE = {Tensor.add_, Tensor.__iadd__}
# where a smooth activation says `inplace`, by position (a name ending in _ is in place anyway)
_INPLACE_AT = {
    F.silu: 1,
    F.hardswish: 1,
    F.hardsigmoid: 1,
    F.mish: 1,
    F.selu: 1,
    F.elu: 2,
    F.celu: 2,
    F.threshold: 3,
    F.rrelu: 4,
}
# functions whose gradient moves relevance without changing it: no rule needed, nothing to say
_STRUCTURAL = frozenset(
    (
        *("view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "permute"),
        *("transpose", "t", "movedim", "moveaxis", "swapaxes", "swapdims", "contiguous"),
        *("getitem", "cat", "concat", "concatenate", "stack", "chunk", "split", "unbind"),
        *("split_with_sizes", "tensor_split", "squeeze", "unsqueeze", "expand", "expand_as"),
        *("pad", "dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout"),
        *("feature_alpha_dropout", "clone", "to", "float", "double", "half", "bfloat16"),
        *("type", "type_as", "narrow", "select", "flip", "roll", "pixel_shuffle"),
        *("pixel_unshuffle", "channel_shuffle", "native_channel_shuffle", "identity"),
        *("cpu", "cuda", "requires_grad", "detach"),
    )
)


def function_name(func) -> str:
    """'mul' for Tensor.__mul__, 'layer_norm' for F.layer_norm."""
    name = getattr(func, "__name__", None) or type(func).__name__
    return name.strip("_") or name


def _needs_relevance(*tensors) -> bool:
    """Whether any of `tensors` comes from the input (the model's parameters are frozen while
    relevance propagates, so requires_grad means exactly that)."""
    return any(isinstance(t, Tensor) and t.requires_grad for t in tensors)


class _RelevanceMode(TorchFunctionMode):
    """Routes each call that has an LRP rule through its autograd function, counts the rest.

    While the handler runs, torch pops the mode, so the calls a function makes inside (F.conv2d
    -> torch.conv2d, F.batch_norm -> torch.batch_norm) are not seen again."""

    def __init__(self, report: RelevanceReport):
        super().__init__()
        self._report = report
        self._first_done = False
        # a conv/linear output -> (its layer, the output's version then): a BatchNorm on it
        # merges into that layer, unless something changed it in place in between (a ReLU)
        self._produced = WeakTensorKeyDictionary()
        # a zero-padded tensor -> (the tensor before, the padding, the version then): a
        # convolution of it takes the padding as its own (TensorFlow "SAME" layers pad first),
        # so that the flat and zbox rules give no relevance to padding, as with a conv's own
        self._padded = WeakTensorKeyDictionary()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _CONVOLUTIONS or func is F.linear:
            return self._linear(func, args, kwargs)
        if func is F.batch_norm:
            return self._batch_norm(func, args, kwargs)
        if func in _ADDS or func in _ADDS_INPLACE:
            return self._add(func, args, kwargs)
        if func in _POOLS:
            return self._pool(func, args, kwargs)
        if func is F.pad:
            return self._pad(func, args, kwargs)
        call = _rectifying_call(func, args, kwargs)
        if call is not None:
            if not _needs_relevance(call.input):
                return func(*args, **kwargs)
            self._report.rules[(call.activation.kind, "passed")] += 1
            return _PassRelevance.apply(call.input, lambda: func(*args, **kwargs), call.inplace)
        if func in _SMOOTH and args and _needs_relevance(args[0]):
            self._report.passed[_SMOOTH[func]] += 1
            at = _INPLACE_AT.get(func)
            inplace = getattr(func, "__name__", "").endswith("_") or (
                at is not None and bool(args[at] if len(args) > at else kwargs.get("inplace"))
            )
            return _PassRelevance.apply(args[0], lambda: func(*args, **kwargs), inplace)
        out = func(*args, **kwargs)
        self._count_unruled(func, out)
        return out

    def _count_unruled(self, func, out) -> None:
        outputs = out if isinstance(out, (tuple, list)) else (out,)
        if not _needs_relevance(*outputs):
            return
        name = function_name(func)
        if "max_pool" in name:  # zennit's default too: the winner takes the relevance
            self._report.rules[(name.removesuffix("_with_indices"), "gradient")] += 1
        elif name not in _STRUCTURAL:
            self._report.unruled[name] += 1

    def _linear(self, func, args, kwargs):
        names = ("input", "weight", "bias", *(_CONV_OPTIONS if func is not F.linear else ()))
        bound = dict(zip(names, args, strict=False)) | kwargs
        x = bound.get("input")
        if not _needs_relevance(x):
            return func(*args, **kwargs)
        kind = "linear" if func is F.linear else _CONVOLUTIONS[func]
        composite = self._report.composite
        if not self._first_done:
            rule, self._first_done = composite.first, True
            label = f"{kind} (first)"
        else:
            rule = composite.dense if func is F.linear else composite.conv
            label = kind
        options = {}
        if func is not F.linear:
            options = {
                o: bound.get(o, d) for o, d in zip(_CONV_OPTIONS, _CONV_DEFAULTS, strict=True)
            }
        layer = _Layer(func, bound["weight"], bound.get("bias"), options, rule, composite)
        padded = self._padded.get(x)
        if padded is not None and padded[2] == x._version:
            x, layer.padding = padded[0], padded[1]
        if rule == "zbox":  # a bound that does not fit the input: one sentence now
            for bound in (composite.low, composite.high):
                _bound(bound, x)
        self._report.rules[(label, composite.rule_text(rule))] += 1
        out = _LinearRelevance.apply(x, layer, lambda: func(*args, **kwargs))
        self._produced[out] = (layer, out._version)
        return out

    def _pad(self, func, args, kwargs):
        names = ("input", "pad", "mode", "value")
        bound = dict(zip(names, args, strict=False)) | kwargs
        out = func(*args, **kwargs)
        x = bound.get("input")
        zeros = bound.get("mode", "constant") == "constant" and not bound.get("value")
        if zeros and _needs_relevance(x):
            self._padded[out] = (x, tuple(bound["pad"]), out._version)
        return out

    def _batch_norm(self, func, args, kwargs):
        names = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum")
        bound = dict(zip((*names, "eps"), args, strict=False)) | kwargs
        x = bound.get("input")
        if not _needs_relevance(x):
            return func(*args, **kwargs)
        if bound.get("training", False) or bound.get("running_mean") is None:
            out = func(*args, **kwargs)
            self._report.unruled["batch_norm (training mode)"] += 1
            return out
        producer = self._produced.get(x)
        if producer is not None and producer[1] == x._version and producer[0].merged is None:
            producer[0].merged = _batch_norm_affine(bound)
            self._report.rules[("batch_norm", "merged into the layer before it")] += 1
        else:
            self._report.rules[("batch_norm", "passed (no conv/linear right before it)")] += 1
        return _PassRelevance.apply(x, lambda: func(*args, **kwargs), False)

    def _add(self, func, args, kwargs):
        a, b = (args + (None, None))[:2]
        alpha = kwargs.get("alpha", args[2] if len(args) > 2 else 1)
        if (
            not isinstance(a, Tensor)
            or not isinstance(b, Tensor)
            or alpha != 1
            or a.shape != b.shape
            or not (a.requires_grad and b.requires_grad)
        ):
            out = func(*args, **kwargs)
            self._count_unruled(func, out)
            return out
        self._report.rules[("add", "split in proportion to the summands")] += 1
        inplace = func in _ADDS_INPLACE
        return _SumRelevance.apply(
            a, b, lambda: func(*args, **kwargs), inplace, self._report.composite.stabilizer
        )

    def _pool(self, func, args, kwargs):
        if not args or not _needs_relevance(args[0]):
            return func(*args, **kwargs)
        self._report.rules[(_POOLS[func], "in proportion to the inputs")] += 1
        rest = args[1:]
        return _PoolRelevance.apply(
            args[0], lambda x: func(x, *rest, **kwargs), self._report.composite.stabilizer
        )


def _batch_norm_affine(bound: dict) -> tuple[Tensor, Tensor, Tensor]:
    """(scale γ/√(σ² + eps), running mean μ, shift β) of an eval-mode BatchNorm, as zennit's
    MergeBatchNorm computes them."""
    mean, var = bound["running_mean"], bound["running_var"]
    weight, bias = bound.get("weight"), bound.get("bias")
    scale = (torch.ones_like(var) if weight is None else weight.detach()) / (
        var + bound.get("eps", 1e-5)
    ) ** 0.5
    return scale, mean, torch.zeros_like(mean) if bias is None else bias.detach()


@contextlib.contextmanager
def propagate_relevance(model: nn.Module, composite: Composite) -> Iterator[RelevanceReport]:
    """While active, every call of the model with an LRP rule (module docstring) backprops its
    rule, so the gradient of a score w.r.t. the input, started from the score's value, is the
    input's relevance. The model's parameters are frozen inside (restored on exit) and the
    rules are fixed into the graph by the forward, so the backward may run after the block.
    Yields the `RelevanceReport` of what was seen."""
    refuse_interception(model, "LRP")
    report = RelevanceReport(composite)
    with preserved_state(model):
        for param in model.parameters():
            param.requires_grad_(False)
        with _RelevanceMode(report):
            yield report
