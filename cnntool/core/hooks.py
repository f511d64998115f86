"""The one place where cnntool registers hooks on a model.

Every context manager here removes its handles in `finally` and puts back the model's
train/eval mode and its parameters' requires_grad flags, also when the forward pass raises.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Mapping

import torch
from torch import nn

ForwardPre = Callable[[str, nn.Module, tuple], None]
ForwardPost = Callable[[str, nn.Module, tuple, object], None]


@contextlib.contextmanager
def preserved_state(model: nn.Module) -> Iterator[nn.Module]:
    """Restore every submodule's `training` flag and every parameter's requires_grad on exit."""
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training
        for param, requires_grad in flags:
            param.requires_grad_(requires_grad)


@contextlib.contextmanager
def module_hooks(
    modules: Mapping[str, nn.Module],
    pre: ForwardPre | None = None,
    post: ForwardPost | None = None,
) -> Iterator[None]:
    """Call `pre(name, module, inputs)` / `post(name, module, inputs, output)` around each forward.

    A module reached under several names (a reused ReLU) is hooked once, under its first name.
    """
    handles: list[torch.utils.hooks.RemovableHandle] = []
    seen: set[int] = set()
    try:
        for name, module in modules.items():
            if id(module) in seen:
                continue
            seen.add(id(module))
            if pre is not None:
                handles.append(module.register_forward_pre_hook(
                    lambda mod, args, _n=name: pre(_n, mod, args)))
            if post is not None:
                handles.append(module.register_forward_hook(
                    lambda mod, args, out, _n=name: post(_n, mod, args, out)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def hook_count(model: nn.Module) -> int:
    """How many forward/backward hooks are registered on any module of `model` (tests use it)."""
    total = 0
    for module in model.modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                     "_backward_pre_hooks"):
            total += len(getattr(module, attr, {}) or {})
    return total
