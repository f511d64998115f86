"""A small CIFAR-style CNN, the kind of model a user brings: 3×32×32 input, its own mean/std.

It ends in global average pooling, so it also runs on 224-px input without an error: fed the
wrong way (ImageNet's resize and statistics), it answers, and the answers are wrong. That is why
cnntool says on every command which preprocessing it uses and where it came from.
"""

from torch import nn

# Mean and std of the training patches (data.py prints them); not ImageNet's.
MEAN = (0.4858, 0.373, 0.3277)
STD = (0.2955, 0.2354, 0.2353)
INPUT_SIZE = (3, 32, 32)


def _block(inputs: int, outputs: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(outputs),
        nn.ReLU(inplace=True),
    )


class SmallNet(nn.Module):
    """conv 3→16, 16→32, 32→64 (each 3×3, stride 2), global average pool, linear → classes."""

    def __init__(self, num_classes: int = 8):
        super().__init__()
        self.features = nn.Sequential(_block(3, 16, 2), _block(16, 32, 2), _block(32, 64, 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(64, num_classes)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


def small_net(num_classes: int = 8) -> SmallNet:
    """The factory a MODEL spec names: `examples/own_model/model.py:small_net`."""
    return SmallNet(num_classes)
