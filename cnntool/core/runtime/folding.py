"""BatchNorm folded into the convolution that feeds it, for scans that never look at the
convolution's own output.

In eval mode BatchNorm is y = γ (x − μ) / √(σ² + ε) + β per channel, so conv-then-BN is one
convolution with weights w·γ/√(σ² + ε) and bias β + (b − μ)·γ/√(σ² + ε). Padding plays no part
(lite0's Conv2dSame pads in forward, before the convolution proper).

Folding here is in place and reversible, and keeps every module object and name: the
convolution gets the folded weight and bias, and the BatchNorm's forward becomes the identity,
so a hook on the BatchNorm still sees what the BatchNorm would have returned (to float
rounding). Only a hook on the convolution would see something else (the folded, post-BN
values): such convolutions are named in `keep` and left alone.

Which BatchNorm follows which convolution is observed, not guessed from registration order: one
probe forward records, for every call, whether a BatchNorm's input is the very tensor a
convolution just returned, untouched since (same object, same version counter). A pair is
folded only when each module ran exactly once. The caller checks the folded model's output
against the probe's and undoes the fold when they disagree (a convolution output that also
feeds a branch around its BatchNorm).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from cnntool.core.hooks import module_hooks


def fold_batchnorm(
    weight: Tensor, bias: Tensor | None, bn: nn.BatchNorm2d
) -> tuple[Tensor, Tensor]:
    """(weight, bias) of the convolution that equals conv(weight, bias) followed by `bn` in
    eval mode, in the dtype and on the device of `weight`. The scale is computed in float64
    (the folded weights are then one rounding away from the exact product)."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("a BatchNorm without running statistics cannot be folded (see foldable)")
    variance = bn.running_var.detach().double()
    scale = 1 / torch.sqrt(variance + bn.eps)
    if bn.affine:
        scale = scale * bn.weight.detach().double()
    shift = bn.bias.detach().double() if bn.affine else torch.zeros_like(scale)
    old_bias = torch.zeros_like(scale) if bias is None else bias.detach().double()
    scale, shift, old_bias = (t.to(weight.device) for t in (scale, shift, old_bias))
    mean = bn.running_mean.detach().double().to(weight.device)
    folded_weight = weight.detach().double() * scale.view(-1, *[1] * (weight.dim() - 1))
    folded_bias = shift + (old_bias - mean) * scale
    return folded_weight.to(weight.dtype), folded_bias.to(weight.dtype)


@dataclass(frozen=True)
class FoldPair:
    """A convolution whose output goes straight (and only) into a BatchNorm."""

    conv: str
    bn: str


def foldable(bn: nn.Module) -> bool:
    """A BatchNorm2d that normalizes with its running statistics (eval mode, stats tracked)."""
    return (
        isinstance(bn, nn.BatchNorm2d)
        and not bn.training
        and bn.running_mean is not None
        and bn.running_var is not None
    )


def find_pairs(model: nn.Module, example: Tensor, keep: Sequence[str] = ()) -> list[FoldPair]:
    """The conv→BatchNorm pairs that one forward of `example` shows, minus those whose
    convolution output is looked at: a convolution named in `keep`, or one whose output is the
    very output of a module named in `keep` (a wrapper around it). Runs under no_grad, not
    inference_mode: the check needs version counters."""
    modules = dict(model.named_modules())
    convs = {n for n, m in modules.items() if isinstance(m, nn.Conv2d)}
    bns = {n for n, m in modules.items() if foldable(m)}
    kept = set(keep) & set(modules)
    calls: dict[str, int] = {}
    produced: dict[int, tuple[str, Tensor, int]] = {}  # id(output) -> (conv, output, version)
    fed: dict[str, str] = {}  # bn -> the conv whose untouched output it received
    looked_at: set[int] = set()  # ids of the kept modules' outputs

    def pre(name, module, args):
        calls[name] = calls.get(name, 0) + 1
        if name in bns and args and isinstance(args[0], Tensor):
            source = produced.get(id(args[0]))
            if source is not None and source[1] is args[0] and source[2] == args[0]._version:
                fed[name] = source[0]

    def post(name, module, args, output):
        if name in convs and isinstance(output, Tensor):
            produced[id(output)] = (name, output, output._version)
        if name in kept and isinstance(output, Tensor):
            looked_at.add(id(output))

    hooked = {n: modules[n] for n in convs | bns | kept}
    with torch.no_grad(), module_hooks(hooked, pre=pre, post=post):
        model(example)
    hidden = {conv for key, (conv, _, _) in produced.items() if key in looked_at}
    return [
        FoldPair(conv, bn)
        for bn, conv in fed.items()
        if conv not in kept | hidden and calls.get(conv) == 1 and calls.get(bn) == 1
    ]


def _identity(x: Tensor) -> Tensor:
    return x


class Folding:
    """Folds pairs in place; `undo()` puts back the exact tensors, bias slots and forwards."""

    def __init__(self, model: nn.Module, pairs: Sequence[FoldPair]):
        self.pairs = tuple(pairs)
        modules = dict(model.named_modules())
        self.modules = [(modules[p.conv], modules[p.bn]) for p in self.pairs]
        # (conv, bn, original weight data, (original bias Parameter, its data) or None)
        self._saved: list[tuple[nn.Conv2d, nn.Module, Tensor, tuple[Tensor, Tensor] | None]] = []

    def apply(self) -> None:
        for conv, bn in self.modules:
            bias = conv.bias
            self._saved.append(
                (conv, bn, conv.weight.data, None if bias is None else (bias, bias.data))
            )
            weight, new_bias = fold_batchnorm(conv.weight, bias, bn)
            conv.weight.data = weight
            if bias is None:
                conv.bias = nn.Parameter(new_bias, requires_grad=conv.weight.requires_grad)
            else:
                bias.data = new_bias
            # an instance attribute: nn.Module.__call__ finds it before the class's forward,
            # hooks on the BatchNorm still run, and deleting it restores the class's forward
            bn.forward = _identity

    def undo(self) -> None:
        for conv, bn, weight, saved_bias in reversed(self._saved):
            conv.weight.data = weight
            if saved_bias is None:
                conv.bias = None  # the slot stays where it was in _parameters, empty again
            else:
                bias, bias_data = saved_bias
                bias.data = bias_data
            bn.__dict__.pop("forward", None)
        self._saved.clear()
