"""Which convolution takes the image: the first one that runs, not the first one registered.

`models.first_convolution` reads the module tree, which is cheap and right for almost every
network; but a forward that starts with a functional convolution (`F.conv2d(x, self.w1)`)
before its first `nn.Conv2d` module, or that registers its modules out of order, makes the tree
lie. `first_convolution_run` settles it by running the model: on a meta copy (no memory, no
compute), under a TorchFunctionMode that stops the forward at the first convolution call and
reads its weight. A TorchFunctionMode sees `F.conv2d` and `nn.Conv2d` alike and costs nothing
to enter (unlike the dispatch mode of core.trace, which imports torch._dynamo).
"""

from __future__ import annotations

from typing import Any

_FUNCTIONAL = (
    "conv1d",
    "conv2d",
    "conv3d",
)  # (input, weight, bias, stride, padding, dilation, groups)
_TRANSPOSED = ("conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
_ATEN_LIKE = ("convolution", "_convolution")  # (…, dilation, transposed, output_padding, groups)


class _Found(Exception):
    """Raised inside the forward to stop it at the first convolution."""

    def __init__(self, weight: Any, channels: int) -> None:
        super().__init__()
        self.weight, self.channels = weight, channels


def _input_channels(name: str, args: tuple, kwargs: dict) -> int | None:
    """The input channels of a convolution call `name(*args, **kwargs)`; None for anything else."""
    import torch

    if name not in (*_FUNCTIONAL, *_TRANSPOSED, *_ATEN_LIKE):
        return None
    weight = args[1] if len(args) > 1 else kwargs.get("weight")
    if not isinstance(weight, torch.Tensor) or weight.dim() < 3:
        return None

    def argument(index: int, key: str, default):
        value = args[index] if len(args) > index else kwargs.get(key, default)
        return value if isinstance(value, (int, bool)) else default

    if name in _FUNCTIONAL:
        return int(weight.shape[1]) * argument(6, "groups", 1)
    if name in _TRANSPOSED:
        return int(weight.shape[0])
    if argument(6, "transposed", False):
        return int(weight.shape[0])
    return int(weight.shape[1]) * argument(8, "groups", 1)


def first_convolution_run(module, input_shape: tuple[int, ...]) -> tuple[str, int] | None:
    """(name, input channels) of the first convolution that a forward pass of a
    (1, *input_shape) input calls: the name of its weight's module, or the weight itself for a
    functional one (`w1`). None when no convolution runs, or the model cannot run on the meta
    device (then nothing is known)."""
    import torch
    from torch.overrides import TorchFunctionMode

    from cnntool.core.trace import _copy_to

    if isinstance(module, torch.jit.ScriptModule):
        return None

    class StopAtConvolution(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            channels = _input_channels(getattr(func, "__name__", ""), args, kwargs)
            if channels is not None:
                raise _Found(args[1] if len(args) > 1 else kwargs["weight"], channels)
            return func(*args, **kwargs)

    try:
        copy = _copy_to(module, torch.device("meta"))
        copy.eval()
        x = torch.empty((1, *input_shape), device="meta")
        with torch.no_grad(), StopAtConvolution():
            copy(x)
    except _Found as found:
        return _weight_name(copy, found.weight), found.channels
    except Exception:  # noqa: BLE001 - a model that cannot run on meta: nothing is known
        return None
    return None


def _weight_name(module, weight) -> str:
    """The module path owning `weight` ('conv2'), or the parameter's own name for a functional
    convolution's weight held by a module that is not a convolution ('w1', 'stem.w')."""
    from torch import nn

    for name, parameter in module.named_parameters():
        if parameter is weight:
            owner, _, attribute = name.rpartition(".")
            parent = module.get_submodule(owner) if owner else module
            is_conv = isinstance(parent, nn.modules.conv._ConvNd) and attribute == "weight"
            return owner if is_conv else name
    return "(a convolution whose weight is not a parameter)"
