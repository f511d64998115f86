"""A hand-set model whose microscope is known in advance, and the images it is shown.

`bright_net`: 8×8 grayscale input in [0, 1] (no normalization), a 1×1 convolution with two
units — unit 0 = x − 0.5 ("bright"), unit 1 = 0.5 − x ("dark") — a ReLU, global average
pooling, and a classifier whose logit "bright" is 2 × unit 0 and logit "dark" 2 × unit 1.
On a uniform grey image of level p, unit 0 is max(p − 0.5, 0) at every position, unit 1 is
max(0.5 − p, 0), and the prediction is "bright" exactly when p > 0.5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

CLASSES = ("dark", "bright")
LEVELS = tuple(range(10, 250, 20))  # 8-bit grey levels of the 12 images: 10, 30, …, 230
MISLABELLED = 170  # this bright image is filed under "dark": accuracy 11/12


class BrightNet(nn.Module):
    preprocessing = {"input_size": [1, 8, 8], "resize": "none", "mean": [0.0], "std": [1.0]}

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.conv.bias.copy_(torch.tensor([-0.5, 0.5]))
            self.fc.weight.copy_(
                torch.tensor([[0.0, 2.0], [2.0, 0.0]])
            )  # dark <- unit 1, bright <- unit 0
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.relu(self.conv(x)))))


def bright_net() -> BrightNet:
    return BrightNet().eval()


def write_grey_images(folder: Path) -> list[tuple[Path, float]]:
    """One uniform 8×8 PNG per level, filed under its class folder (one deliberately wrong);
    returns (path, level in [0, 1]) in the order DATA lists them (sorted paths)."""
    written = []
    for level in LEVELS:
        label = "bright" if level > 127 and level != MISLABELLED else "dark"
        path = folder / label / f"grey_{level:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8), level, dtype=np.uint8), mode="L").save(path)
        written.append((path, level / 255))
    return sorted(written)


class GreekNet(nn.Module):
    """Two convolutions named `conv_α` and `conv_β`: names that one file-name rule would make
    the same (`conv_-`); 8×8 grayscale like BrightNet, weights from a fixed seed."""

    preprocessing = BrightNet.preprocessing

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv_α = nn.Conv2d(1, 2, 1)
        self.conv_β = nn.Conv2d(2, 2, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        return self.fc(self.flatten(self.pool(torch.relu(self.conv_β(torch.relu(self.conv_α(x)))))))


def greek_net() -> GreekNet:
    return GreekNet().eval()


class DeadNet(nn.Module):
    """BrightNet with a third unit that is never above 0 (weight 0, bias -1: a planted dead
    unit); the classifier ignores it."""

    preprocessing = BrightNet.preprocessing

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(3, 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0, 0.0]).view(3, 1, 1, 1))
            self.conv.bias.copy_(torch.tensor([-0.5, 0.5, -1.0]))
            self.fc.weight.copy_(torch.tensor([[0.0, 2.0, 0.0], [2.0, 0.0, 0.0]]))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.relu(self.conv(x)))))


def dead_net() -> DeadNet:
    return DeadNet().eval()
