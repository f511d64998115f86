"""`--device auto|cpu|cuda|cuda:N|mps` means the same in every command."""

from __future__ import annotations

from cnntool.errors import CnnToolError


def resolve_device(spec: str = "auto"):
    """The torch.device for a --device value; a device that is not there is one clear error."""
    import torch

    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise CnnToolError(f"unknown device '{spec}'; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CnnToolError(
                f"device '{spec}' was requested but CUDA is not available on this machine"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CnnToolError(
                f"device '{spec}' does not exist: this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
    elif device.type == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise CnnToolError(
                "device 'mps' was requested but MPS is not available on this machine"
            )
    elif device.type != "cpu":
        raise CnnToolError(f"unsupported device '{spec}'; use auto, cpu, cuda, cuda:N or mps")
    return device


def device_of(module):
    """Where a model's parameters (or buffers) are; the CPU for a model with neither."""
    import torch

    tensor = next(module.parameters(), None)
    if tensor is None:
        tensor = next(module.buffers(), None)
    return tensor.device if tensor is not None else torch.device("cpu")
