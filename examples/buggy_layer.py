"""A small MNIST-sized CNN with a hand-written activation whose backward has a classic bug.

    cnntool gradcheck examples/buggy_layer.py:buggy_net --trust-code --per-layer   # exit 1
    cnntool gradcheck examples/buggy_layer.py:fixed_net --trust-code --per-layer   # exit 0

The activation is Swish with a learnable slope, y = x·σ(βx), started at β = 1.702 (where it
approximates GELU). Its custom backward forgets the inner derivative β of σ(βx) in dL/dx: the
kind of bug that trains "almost fine" and that no shape check catches. With β = 1 it would be
invisible, which is why gradcheck checks at the model's real parameter values. Whole-model
mode sees every tensor upstream of the bug go wrong; --per-layer names the two activations.
"""

import torch
from torch import nn


class SwishFunction(torch.autograd.Function):
    """y = x·σ(βx); dy/dx = σ + βx·σ(1−σ); dy/dβ = x²·σ(1−σ) (correct)."""

    @staticmethod
    def forward(ctx, x, beta):
        s = torch.sigmoid(beta * x)
        ctx.save_for_backward(x, beta, s)
        return x * s

    @staticmethod
    def backward(ctx, grad):
        x, beta, s = ctx.saved_tensors
        ds = s * (1 - s)
        return grad * (s + beta * x * ds), (grad * x * x * ds).sum().reshape(beta.shape)


class BuggySwishFunction(SwishFunction):
    """The bug: dy/dx = σ + x·σ(1−σ), the factor β of the chain rule forgotten."""

    @staticmethod
    def backward(ctx, grad):
        x, beta, s = ctx.saved_tensors
        ds = s * (1 - s)
        return grad * (s + x * ds), (grad * x * x * ds).sum().reshape(beta.shape)


class Swish(nn.Module):
    def __init__(self, function=SwishFunction, beta: float = 1.702):
        super().__init__()
        self.function = function
        self.beta = nn.Parameter(torch.tensor([beta]))

    def forward(self, x):
        return self.function.apply(x, self.beta)


class SmallCNN(nn.Module):
    """1×28×28 -> 10: conv 1→8, Swish, pool, conv 8→16, Swish, pool, linear 784→10."""

    def __init__(self, swish=SwishFunction):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.act1 = Swish(swish)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.act2 = Swish(swish)
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16 * 7 * 7, 10)

    def forward(self, x):
        x = self.pool1(self.act1(self.conv1(x)))
        x = self.pool2(self.act2(self.conv2(x)))
        return self.fc(self.flatten(x))


def buggy_net() -> SmallCNN:
    torch.manual_seed(0)
    return SmallCNN(BuggySwishFunction)


def fixed_net() -> SmallCNN:
    torch.manual_seed(0)
    return SmallCNN(SwishFunction)
