"""Learned filters of a convolution (Krizhevsky et al. 2012, Fig. 3), optionally with the
following BatchNorm folded in, and per-filter statistics for spotting bad filters.

Folding: BatchNorm in eval mode is y = γ (x − μ) / √(σ² + ε) + β per output channel, so
conv-then-BN is one convolution with weights w·γ/√(σ²+ε) and bias β + (b − μ)·γ/√(σ²+ε): the
filters the network really applies. Padding plays no part (lite0's Conv2dSame pads in forward).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from cnntool.core.layers import named_layers, resolve_layer
from cnntool.core.loading.exported import refuse_untyped
from cnntool.core.runtime.folding import fold_batchnorm
from cnntool.errors import CnnToolError


@dataclass(frozen=True)
class FilterStats:
    """Per output filter: L2 norm, mean, std of its weights, and its largest |Pearson
    correlation| with any other filter of the layer (near 1: a redundant filter)."""

    index: int
    norm: float
    mean: float
    std: float
    max_abs_corr: float


@dataclass(frozen=True)
class Filters:
    """weights (out, in, kh, kw) as applied (BN folded when `folded`), bias (out,) or None."""

    layer: str
    weights: torch.Tensor
    bias: torch.Tensor | None
    folded: str | None  # the BatchNorm folded in, if any
    stats: tuple[FilterStats, ...]
    mean_abs_corr: float  # over all pairs: high = filters too alike


def first_convolution(model) -> str:
    for name, module in named_layers(model).items():
        if isinstance(module, nn.Conv2d):
            return name
    raise CnnToolError("the model has no 2-D convolution, so it has no filters to show")


def following_batchnorm(model, layer: str) -> tuple[str, nn.BatchNorm2d]:
    """The BatchNorm2d registered right after `layer` (torchvision's conv1/bn1, lite0's
    _conv_stem/_bn0, Conv-BN-ReLU Sequentials): the usual conv-BN pairing."""
    leaves = [(n, m) for n, m in named_layers(model).items() if not list(m.children())]
    names = [n for n, _ in leaves]
    if layer in names:
        position = names.index(layer)
        if position + 1 < len(leaves):
            name, module = leaves[position + 1]
            conv = leaves[position][1]
            if isinstance(module, nn.BatchNorm2d) and module.num_features == conv.out_channels:
                return name, module
    raise CnnToolError(f"no BatchNorm2d follows layer '{layer}', so there is nothing to fold")


def filters(model, layer: str | None = None, *, fold_bn: bool = False) -> Filters:
    """The filters of convolution `layer` (default: the first one)."""
    refuse_untyped(model, "filters reads each convolution's weight, stride and BatchNorm")
    name = resolve_layer(model, layer)[0] if layer else first_convolution(model)
    module = named_layers(model)[name]
    if not isinstance(module, nn.Conv2d):
        raise CnnToolError(
            f"layer '{name}' is a {type(module).__name__}, not a Conv2d; "
            "filters exist only for convolutions"
        )
    weight = module.weight.detach().float().cpu()
    bias = None if module.bias is None else module.bias.detach().float().cpu()
    folded = None
    if fold_bn:
        folded, bn = following_batchnorm(model, name)
        bn_state = {
            k: v.detach().float().cpu() for k, v in bn.state_dict().items() if v.is_floating_point()
        }
        cpu_bn = nn.BatchNorm2d(bn.num_features, eps=bn.eps, affine=bn.affine)
        cpu_bn.load_state_dict(bn_state, strict=False)
        weight, bias = fold_batchnorm(weight, bias, cpu_bn)
    stats, mean_abs = _statistics(weight)
    return Filters(name, weight, bias, folded, stats, mean_abs)


def _statistics(weight: torch.Tensor) -> tuple[tuple[FilterStats, ...], float]:
    flat = weight.reshape(weight.shape[0], -1).double()
    centered = flat - flat.mean(dim=1, keepdim=True)
    length = centered.norm(dim=1).clamp_min(1e-12)
    corr = (centered @ centered.T) / (length[:, None] * length[None, :])
    count = flat.shape[0]
    off = corr.abs().masked_fill(torch.eye(count, dtype=torch.bool), float("nan"))
    max_abs = off.nan_to_num(-1).max(dim=1).values if count > 1 else torch.zeros(count)
    mean_abs = float(off.nanmean()) if count > 1 else 0.0
    norms, means, stds = flat.norm(dim=1), flat.mean(dim=1), flat.std(dim=1, unbiased=False)
    stats = tuple(
        FilterStats(i, float(norms[i]), float(means[i]), float(stds[i]), float(max_abs[i]))
        for i in range(count)
    )
    return stats, mean_abs


def in_image_order(result: Filters, loaded) -> Filters:
    """The filters of the convolution that takes the image with their input channels in the
    image's order, to be shown as RGB: a BGR model's first layer swapped back. Any other layer,
    or an RGB model, as it is."""
    first = loaded.first_conv
    if first is None or result.layer != first[0]:
        return result
    return replace(result, weights=shown_filters(result.weights, loaded.preprocessing))


def shown_filters(weights: torch.Tensor, preprocessing) -> torch.Tensor:
    """Weights (out, in, kh, kw) whose inputs are the image's channels in the model's order,
    in the image's order (BGR -> RGB); as they are for an RGB model or another input count."""
    if preprocessing.channel_order == "rgb" or weights.shape[1] != preprocessing.channels:
        return weights
    return preprocessing.image_channels(weights)
