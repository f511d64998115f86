"""Hand-set user models for the own-model tests: loaded as `tests.own_models:NAME` (this module is
imported by the tests first, so no --trust-code is needed) or saved to checkpoints."""

import torch
from torch import nn


class MeanColourNet(nn.Module):
    """Logits = the input's per-channel means (a 1×1 convolution with identity weights, then a
    global average pool): the answer to any input can be computed by hand."""

    def __init__(self, channels: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, channels)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(channels).view(channels, channels, 1, 1))
            self.fc.weight.copy_(torch.eye(channels))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.pool(self.conv(x)).flatten(1))


def mean_colour() -> MeanColourNet:
    return MeanColourNet(3).eval()


def mean_colour_rgba() -> MeanColourNet:
    return MeanColourNet(4).eval()


def mean_gray() -> MeanColourNet:
    return MeanColourNet(1).eval()


def with_preprocessing_attribute() -> MeanColourNet:
    """The module carries its preprocessing as a schema dict, and its class names."""
    net = MeanColourNet(3).eval()
    net.preprocessing = {"input_size": [3, 20, 20], "resize": "none", "mean": [0.5], "std": [0.25]}
    net.class_names = ["red", "green", "blue"]
    return net


class Classifier(nn.Module):
    """conv 3→4, pool, linear 4→num_classes."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.head(self.pool(torch.relu(self.conv(x))).flatten(1))


def classifier(num_classes: int = 3) -> Classifier:
    """A factory that takes num_classes."""
    return Classifier(num_classes)


def fixed_classifier() -> Classifier:
    """A factory that does not: --num-classes replaces its last Linear."""
    return Classifier(3)


class FixedSize(nn.Module):
    """Only runs on 3×16×16 (a Linear after flatten)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 16 * 16, 5)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))


def fixed_size() -> FixedSize:
    return FixedSize()
