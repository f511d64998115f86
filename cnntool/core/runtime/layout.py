"""When a scan runs a model in channels-last memory format (NHWC), and why.

oneDNN (CPU) and cuDNN (tensor cores) compute convolutions natively in NHWC; in the default
NCHW format every convolution pays a reorder of its input and output. Measured on the 2-core
CPU here (batch 16, interleaved, benchmarks/README.md): resnet50 1.3–1.4×, efficientnet_lite0
1.4–1.7×, mobilenet_v2 1.4–1.9×, LeNet-5 on 28×28 digits ~2×, resnet18 at 32–64 px ~1.4×, while
convnext_tiny (whose pointwise "convolutions" are Linear layers) stays at 1.0–1.05×.

The rule ("auto"): channels-last when the input is an image batch (C, H, W) and convolutions
do at least half of the multiply-adds of convolutions and Linear layers together, counted on
a forward pass of one image (no gradients, the user's hooks set aside). So CNNs get it, and ViTs
(one patch-embedding convolution, 1% of the work) and ConvNeXts do not. On MPS it stays off:
not measured.
"""

from __future__ import annotations

import contextlib
import math
from collections import OrderedDict
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from cnntool.core.device import device_of
from cnntool.core.trace import ForwardObserver, trace_forward

CONVOLUTION_SHARE = 0.5


class _WorkCounter(ForwardObserver):
    """Multiply-adds of Conv2d and Linear modules, from their output shapes (module hooks only:
    no op tap, so deciding the layout imports no torch._dynamo)."""

    sees_ops = False

    def __init__(self) -> None:
        self.convolution = 0
        self.linear = 0

    def module_exited(self, name: str, module: nn.Module, output) -> None:
        if not isinstance(output, torch.Tensor):
            return
        if isinstance(module, nn.Conv2d):
            per_output = (module.in_channels // module.groups) * math.prod(module.kernel_size)
            self.convolution += output.numel() * per_output
        elif isinstance(module, nn.Linear):
            self.linear += output.numel() * module.in_features


def convolution_share(model: nn.Module, input_shape: Sequence[int]) -> float:
    """The fraction of Conv2d + Linear multiply-adds done by Conv2d modules for one input of
    `input_shape` (C, H, W); 0 when the model has neither."""
    # a real forward of one image on the model's own device, not a meta trace: running on the
    # meta device goes through torch's Python reference ops, which import torch._dynamo and
    # sympy on first use (about a second of start-up, more than one image's forward costs)
    with _forward_hooks_suspended(model):
        (counter,), _ = trace_forward(
            model, lambda: [_WorkCounter()], tuple(input_shape), device=device_of(model)
        )
    total = counter.convolution + counter.linear
    return counter.convolution / total if total else 0.0


_FORWARD_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks")


@contextlib.contextmanager
def _forward_hooks_suspended(model: nn.Module) -> Iterator[None]:
    """The user's forward hooks out of the way while the shape trace runs: its meta copy would
    carry them along and call them with meta tensors (a hook that appends or prints would see
    a forward that never happened). Each module gets empty hook dicts, and its own back after."""
    saved = [
        (module, name, getattr(module, name))
        for module in model.modules()
        for name in _FORWARD_HOOK_DICTS
    ]
    try:
        for module, name, _ in saved:
            setattr(module, name, OrderedDict())
        yield
    finally:
        for module, name, hooks in saved:
            setattr(module, name, hooks)


def has_convolution(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def choose_channels_last(
    model: nn.Module, device: torch.device, setting: str | bool, input_shape: Sequence[int] | None
) -> tuple[bool, str]:
    """(use channels-last?, why) for `setting` True/False/"auto"."""
    if setting is True or setting is False:
        return setting, "asked for"
    if setting != "auto":
        raise ValueError(f"channels_last must be True, False or 'auto', not {setting!r}")
    if device.type not in ("cpu", "cuda"):
        return False, f"not measured on {device.type}"
    if not has_convolution(model):
        return False, "no 2-D convolution"
    if input_shape is None:
        return True, "2-D convolutions"
    if len(input_shape) != 3:
        return False, "the input is not an image batch (C, H, W)"
    share = convolution_share(model, input_shape)
    if share < CONVOLUTION_SHARE:
        return False, f"convolutions do {share:.0%} of the work"
    return True, f"convolutions do {share:.0%} of the work"
