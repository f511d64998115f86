"""Hand-set models for `attack auto` whose answers are known in advance.

`rounding_net`: a 1×8×8 grey image in [0, 1]; f = the share of its pixels above 0.5 (torch.round:
a rounding step, whose gradient is zero everywhere); logits 20·(0.4 − f) for "plain",
20·(f − 0.4) for "speckled" and −5 for two more classes. A uniform grey image below 0.5 is
"plain"; it turns "speckled" once more than 40% of its pixels cross 0.5. Every gradient attack
sees a zero gradient (a masked gradient), while a search that only reads the logits finds that.

`ramp_net`: a 1×4×4 image; logits 6 − 10·mean(x) for class 0, then 0, −10, −10. On the grey
image 0.5 the margin of class 0 is 1; the worst L∞ perturbation of radius ε (every pixel +ε)
leaves 1 − 10ε, the worst L2 one (every pixel +ε/4) 1 − 2.5ε.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn


class RoundingNet(nn.Module):
    preprocessing = {"input_size": [1, 8, 8], "resize": "none", "mean": [0.0], "std": [1.0]}

    def forward(self, x):
        speckled = torch.round(x).flatten(1).mean(dim=1)  # round(0.5) is 0: above 0.5 counts
        constant = torch.full_like(speckled, -5.0)
        return torch.stack(
            [20 * (0.4 - speckled), 20 * (speckled - 0.4), constant, constant], dim=1
        )


class RampNet(nn.Module):
    preprocessing = {"input_size": [1, 4, 4], "resize": "none", "mean": [0.0], "std": [1.0]}

    def forward(self, x):
        first = 6 - 10 * x.flatten(1).mean(dim=1)
        zero = torch.zeros_like(first)
        return torch.stack([first, zero, zero - 10, zero - 10], dim=1)


def rounding_net() -> RoundingNet:
    return RoundingNet().eval()


def ramp_net() -> RampNet:
    return RampNet().eval()


GREYS = (100, 102, 104, 106)  # 8-bit levels of the rounding net's images: 0.39 to 0.42


def write_greys(folder: Path) -> list[Path]:
    """One uniform 8×8 PNG per level of GREYS (all "plain" to the rounding net)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for level in GREYS:
        path = folder / f"grey_{level}.png"
        Image.fromarray(np.full((8, 8), level, dtype=np.uint8), mode="L").save(path)
        paths.append(path)
    return paths
