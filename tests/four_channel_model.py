"""A hand-set 4-channel model for the command-line tests: it looks only at the alpha plane.

Logits are (mean alpha, 1 − mean alpha): class 0 `opaque` for an opaque image, class 1
`transparent` for a transparent one, whatever the colours show."""

import torch
from torch import nn


class AlphaNet(nn.Module):
    class_names = ["opaque", "transparent"]
    preprocessing = {"input_size": [4, 16, 16], "resize": 16, "mean": [0.0] * 4, "std": [1.0] * 4}

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 2, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 3] = 1.0
            self.conv.weight[1, 3] = -1.0
            self.conv.bias.copy_(torch.tensor([0.0, 1.0]))
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        return self.pool(self.conv(x)).flatten(1)


def alpha_net() -> AlphaNet:
    return AlphaNet().eval()
