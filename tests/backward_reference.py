"""References for the activation-backward rules (guided backprop, deconvnet), shared by
tests/test_hooks.py (the rules) and tests/test_projection.py (the projections built on them):
seeded torchvision models, a tolerance relative to the largest magnitude, captum's expected
warnings silenced, and a hand-written autograd function swapped in for F.relu / F.hardtanh
(where captum silently falls back to the plain gradient)."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn


def norm_close(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-5) -> bool:
    """Equal to `rel` of the largest magnitude (elementwise rtol fails on near-zero pixels)."""
    return bool((actual - expected).abs().max() <= rel * expected.abs().max())


def make(name: str) -> nn.Module:
    """torchvision's `name` with seeded random weights, in eval mode."""
    torch.manual_seed(0)
    if name == "googlenet":
        return torchvision.models.googlenet(init_weights=True, aux_logits=False).eval()
    return getattr(torchvision.models, name)().eval()


def quiet_captum(test):
    """Captum warns that it set requires_grad and hooked ReLUs; both are expected here."""
    test = pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require")(test)
    return pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU")(test)


class HandSwapped(torch.autograd.Function):
    """The reference: clamp to [lower, upper] forward, the rule written out by hand backward."""

    @staticmethod
    def forward(ctx, x, lower, upper, rule):
        ctx.save_for_backward(x)
        ctx.bounds, ctx.rule = (lower, upper), rule
        return x.clamp(lower, upper)

    @staticmethod
    def backward(ctx, grad):
        (x,), (lower, upper) = ctx.saved_tensors, ctx.bounds
        if ctx.rule == "deconv":
            return grad.clamp(min=0), None, None, None
        return grad.clamp(min=0) * ((x > lower) & (x < upper)), None, None, None


def hand_swapped(monkeypatch, rule):
    """Swap the functions torchvision's GoogLeNet (F.relu) and MobileNetV2 (ReLU6 ->
    F.hardtanh) call for the hand-written reference."""
    monkeypatch.setattr(
        torch.nn.functional,
        "relu",
        lambda input, inplace=False: HandSwapped.apply(input, 0.0, math.inf, rule),
    )
    monkeypatch.setattr(
        torch.nn.functional,
        "hardtanh",
        lambda input, min_val=-1.0, max_val=1.0, inplace=False: HandSwapped.apply(
            input, min_val, max_val, rule
        ),
    )
