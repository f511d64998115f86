"""The MNIST "LeNet-5" that advertorch trained (clean and adversarially), our definition.

advertorch ships two checkpoints of this network (`mnist_lenet5_clntrained.pt`,
`mnist_lenet5_advtrained.pt`, keys `conv1.*`, `conv2.*`, `linear1.*`, `linear2.*`). Despite the
name it is not LeCun's 1998 net: 3x3 convolutions with padding 1 keep 28x28, each followed by
ReLU then 2x2 max pooling (28 -> 14 -> 7), so the first linear layer sees 7*7*64 = 3136 features.
The order conv -> ReLU -> pool and the padding were checked against `advertorch.test_utils.LeNet5`
(advertorch is LGPL: we depend on it for the weights and keep the definition our own).

Each ReLU, pool and the flatten is a module of its own so analyses can hook every step; the
ReLUs are not in-place so captured activations are never overwritten.
"""

from __future__ import annotations

import torch
from torch import nn


class LeNet5(nn.Module):
    """1x28x28 digits in [0, 1] (white on black, as MNIST) -> 10 logits."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, kernel_size=3, padding=1)
        self.relu1 = nn.ReLU()
        self.maxpool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
        self.relu2 = nn.ReLU()
        self.maxpool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten(1)
        self.linear1 = nn.Linear(7 * 7 * 64, 200)
        self.relu3 = nn.ReLU()
        self.linear2 = nn.Linear(200, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool1(self.relu1(self.conv1(x)))
        x = self.maxpool2(self.relu2(self.conv2(x)))
        x = self.relu3(self.linear1(self.flatten(x)))
        return self.linear2(x)


def lenet5(num_classes: int = 10) -> LeNet5:
    """advertorch's MNIST LeNet-5, randomly initialised (load weights separately)."""
    return LeNet5(num_classes)
