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


class FunctionalStem(nn.Module):
    """Its first convolution is functional, `F.conv2d(x, self.w1)` with a 3-channel w1; the
    first nn.Conv2d it registers, conv2, takes 16 (#25: the channel check looked at conv2)."""

    def __init__(self):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(16, 3, 3, 3) * 0.1)
        self.conv2 = nn.Conv2d(16, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(nn.functional.conv2d(x, self.w1, padding=1))
        x = torch.relu(self.conv2(x))
        return self.fc(x.mean((2, 3)))


def functional_stem() -> FunctionalStem:
    return FunctionalStem().eval()


class EdgeBars(nn.Module):
    """Which edge of a 48×64 input holds a bright bar: logit k = the mean of the input over the
    4-px band along edge k (top, bottom, left, right). A short-side resize and a center crop cut
    the bands off; a resize to exactly 48×64 keeps them."""

    def __init__(self):
        super().__init__()
        masks = torch.zeros(4, 48, 64)
        masks[0, :4], masks[1, -4:], masks[2, :, :4], masks[3, :, -4:] = 1, 1, 1, 1
        self.register_buffer("masks", masks / masks.sum((1, 2), keepdim=True))
        self.class_names = ["top", "bottom", "left", "right"]

    def forward(self, x):
        return torch.einsum("nchw,khw->nk", x, self.masks)


def edge_bars() -> EdgeBars:
    return EdgeBars().eval()


class FlipsToBgr(nn.Module):
    """A model that swaps RGB to BGR in its own forward (`x[:, [2, 1, 0]]`), then conv 3×3,
    pool 2, conv 3×3: its receptive fields are those of the convolutions alone."""

    def __init__(self, how: str = "index"):
        super().__init__()
        self.how = how
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = x[:, [2, 1, 0]] if self.how == "index" else x.flip(1)
        x = self.conv2(self.pool(torch.relu(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


def flips_to_bgr() -> FlipsToBgr:
    return FlipsToBgr().eval()
