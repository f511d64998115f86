"""Custom autograd Functions with hand-written backwards, correct and with planted bugs.

Loaded by the gradcheck tests directly and through the CLI as `tests/buggy_layers.py:NAME`.
Every factory returns a seeded 1x8x8 -> 10 network whose `preprocessing` gives its input size:

    conv (1->4, 3x3) -> relu -> maxpool 2 -> flatten -> fc1 (64->16) -> act (SiLU) ->
    square (16->16) -> head (16->10)

fc1, act and square are the hand-written layers; each bug sits in exactly one of them.
"""

import torch
from torch import nn

from cnntool.core.preprocessing import Preprocessing


class LinearFunction(torch.autograd.Function):
    """y = x Wᵀ + b with its backward written out by hand (correct)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return x @ weight.t() + bias

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        return grad @ weight, grad.t() @ x, grad.sum(0)


class ScaledBackwardLinear(LinearFunction):
    """Bug: every gradient 1% too large."""

    @staticmethod
    def backward(ctx, grad):
        return tuple(1.01 * g for g in LinearFunction.backward(ctx, grad))


class TransposedWeightGradLinear(LinearFunction):
    """Bug: the weight gradient transposed (invisible to shape checks for a square weight)."""

    @staticmethod
    def backward(ctx, grad):
        grad_x, grad_weight, grad_bias = LinearFunction.backward(ctx, grad)
        return grad_x, grad_weight.t(), grad_bias


class SiLUFunction(torch.autograd.Function):
    """y = x·σ(x); dy/dx = σ(x) + x·σ(x)(1 − σ(x)) (correct)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return grad * (s + x * s * (1 - s))


class DroppedTermSiLU(SiLUFunction):
    """Bug: the product rule's second term x·σ'(x) is forgotten."""

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.sigmoid(x)


class HandLinear(nn.Linear):
    def __init__(self, in_features, out_features, function=LinearFunction):
        super().__init__(in_features, out_features)
        self.function = function

    def forward(self, x):
        return self.function.apply(x, self.weight, self.bias)


class HandSiLU(nn.Module):
    def __init__(self, function=SiLUFunction):
        super().__init__()
        self.function = function

    def forward(self, x):
        return self.function.apply(x)


class SmallNet(nn.Module):
    preprocessing = Preprocessing(crop=(8, 8), resize=8, mean=(0.0,), std=(1.0,), channels=1)

    def __init__(self, fc1=LinearFunction, act=SiLUFunction, square=LinearFunction):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = HandLinear(64, 16, fc1)
        self.act = HandSiLU(act)
        self.square = HandLinear(16, 16, square)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = self.flatten(self.pool(self.relu(self.conv(x))))
        return self.head(self.square(self.act(self.fc1(x))))


def _seeded(**functions) -> SmallNet:
    torch.manual_seed(0)
    return SmallNet(**functions).eval()


def correct_net() -> SmallNet:
    return _seeded()


def net_with_scaled_backward() -> SmallNet:
    return _seeded(fc1=ScaledBackwardLinear)


def net_with_dropped_term() -> SmallNet:
    return _seeded(act=DroppedTermSiLU)


def net_with_transposed_weight_grad() -> SmallNet:
    return _seeded(square=TransposedWeightGradLinear)


# factory -> (module, tensors) whose gradients are planted wrong
PLANTED = {
    "net_with_scaled_backward": ("fc1", {"input", "weight", "bias"}),
    "net_with_dropped_term": ("act", {"input"}),
    "net_with_transposed_weight_grad": ("square", {"weight"}),
}
