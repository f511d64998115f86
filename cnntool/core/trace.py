"""One observed forward pass, shared by the profile task and receptive fields.

`trace_forward` runs a model once, on the meta device by default (a copy whose parameters are
empty meta tensors: no memory, no compute), falling back to a real forward when the model cannot
run there. Observers see every aten op (a TorchDispatchMode) together with the innermost module
running it (forward hooks from `core.hooks` keep a stack of module names). The geometry of
windowed ops (convolution, pooling) is read from their aten arguments here too.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from cnntool.core.device import device_of
from cnntool.core.hooks import module_hooks, preserved_state
from cnntool.errors import CnnToolError, InputSizeError

aten = torch.ops.aten


# --- the tracing harness ----------------------------------------------------------------------


class ForwardObserver:
    """What a traced forward pass reports: its input, each aten op, each module's output.

    An observer that needs no aten op (`after_op`) sets `sees_ops = False`: when none of a
    trace's observers does, the pass runs without the op tap, whose TorchDispatchMode makes
    torch import torch._dynamo (and sympy) on first use, about a second of start-up."""

    sees_ops = True

    def forward_started(self, x: torch.Tensor) -> None:
        """`x` is about to go into the model."""

    def after_op(self, module: str, func, args: tuple, kwargs: dict, out: Any) -> None:
        """`func(*args, **kwargs)` returned `out` while `module` (a module path) was innermost."""

    def module_exited(self, name: str, module: nn.Module, output: Any) -> None:
        """The module reached under `name` returned `output`."""


Observer = TypeVar("Observer", bound=ForwardObserver)


def trace_forward(
    model: nn.Module,
    make_observers: Callable[[], Sequence[Observer]],
    input_shape: Sequence[int],
    *,
    batch: int = 1,
    device: str | torch.device = "meta",
) -> tuple[Sequence[Observer], str]:
    """Run one forward pass of a (batch, *input_shape) input, reporting to fresh observers.

    device "meta" runs a meta copy of the model: no weight is copied, nothing is allocated, and
    the user's model is not touched. A model the meta device cannot run (data-dependent ops, a
    plain CPU tensor attribute) falls back to a real forward pass of the model itself, on its
    own device, in eval mode and without gradients; its train/eval flags and requires_grad
    flags are restored and its hooks removed. Any other device runs a real forward there (on a
    copy when the model lives elsewhere). Returns the observers and "meta" or "forward".
    """
    shape = _checked_shape(input_shape, batch)
    target = torch.device(device)
    if target.type == "meta":
        try:
            return _observed_run(_copy_to(model, target), model, shape, make_observers()), "meta"
        except InputSizeError:
            raise
        except Exception as error:  # noqa: BLE001 - a copy or a meta pass that fails: run for real
            reason = error.error if isinstance(error, _ForwardFailed) else error
        target = device_of(model)
        if target.type == "meta":
            raise CnnToolError(
                f"{type(model).__name__} cannot run on the meta device ({reason}) and its "
                "weights are on the meta device, so no real forward pass can replace it"
            ) from reason
    runnable = model if device_of(model) == target else _copy_to(model, target)
    try:
        return _observed_run(runnable, model, shape, make_observers()), "forward"
    except _ForwardFailed as failure:
        raise InputSizeError(
            f"the forward pass of {type(model).__name__} on a {_fmt(shape[1:])} input failed in "
            f"{failure.where}: {failure.error}"
        ) from failure.error


class _ForwardFailed(Exception):
    """The traced forward pass raised `error` inside the module described by `where`."""

    def __init__(self, where: str, error: Exception) -> None:
        super().__init__(where, error)
        self.where, self.error = where, error


class _EmptyOutput(Exception):
    """A convolution or pooling would produce an empty spatial output of `size`."""

    def __init__(self, size: tuple[int, ...]) -> None:
        super().__init__(size)
        self.size = size


def _observed_run(
    model: nn.Module,
    original: nn.Module,
    shape: tuple[int, ...],
    observers: Sequence[Observer],
) -> Sequence[Observer]:
    """One forward pass of `model` with module hooks and the op tap; errors name the module.

    The root is not hooked: it is at the bottom of the stack throughout, and its output is
    reported after the call. Submodules of a TorchScript model cannot be hooked (their work
    goes to the innermost Python module, the root for a scripted model).
    """
    stack: list[tuple[str, nn.Module]] = [("", model)]
    submodules = {
        name: module
        for name, module in model.named_modules()
        if name and not isinstance(module, torch.jit.ScriptModule)
    }

    def entered(name, module, args):
        stack.append((name, module))

    def exited(name, module, args, output):
        stack.pop()
        for observer in observers:
            observer.module_exited(name, module, output)

    x = _example_input(model, shape)
    for observer in observers:
        observer.forward_started(x)
    tap = (
        _OpTap(stack, observers) if any(o.sees_ops for o in observers) else contextlib.nullcontext()
    )
    with (
        preserved_state(model),
        module_hooks(submodules, entered, exited),
        torch.no_grad(),
        _mha_fastpath_disabled(),
        tap,
    ):
        model.eval()
        try:
            output = model(x)
        except _EmptyOutput as empty:
            raise InputSizeError(
                f"input {_fmt(shape[1:])} is too small for {type(original).__name__}: the output "
                f"of {_where(*stack[-1])} would be {_fmt(empty.size)}"
            ) from None
        except Exception as error:  # noqa: BLE001 - re-raised with the module's name
            raise _ForwardFailed(_where(*stack[-1]), error) from error
    for observer in observers:
        observer.module_exited("", model, output)
    return observers


class _OpTap(TorchDispatchMode):
    """Sees every aten op; refuses empty conv/pool outputs; tells observers what ran where."""

    def __init__(
        self, stack: list[tuple[str, nn.Module]], observers: Sequence[ForwardObserver]
    ) -> None:
        super().__init__()
        self.stack, self.observers = stack, observers

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.overloadpacket in WINDOW_OPS:
            _check_not_empty(func, args, kwargs)
        out = func(*args, **kwargs)
        module = self.stack[-1][0]
        for observer in self.observers:
            observer.after_op(module, func, args, kwargs, out)
        return out


@contextlib.contextmanager
def _mha_fastpath_disabled() -> Iterator[None]:
    """nn.MultiheadAttention's fused CPU fast path hides its matmuls in one opaque op."""
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


def _copy_to(model: nn.Module, device: torch.device) -> nn.Module:
    """A deep copy of `model` whose parameters and buffers live on `device`.

    Tensors are mapped through deepcopy's memo, so the user's weights are never duplicated on
    their own device (a meta copy allocates nothing) and shared parameters stay shared.
    """
    memo: dict[int, Any] = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        moved = (
            torch.empty_like(tensor, device=device)
            if device.type == "meta"
            else tensor.detach().to(device)
        )
        if isinstance(tensor, nn.Parameter):
            moved = nn.Parameter(moved, requires_grad=tensor.requires_grad)
        memo[id(tensor)] = moved
    return copy.deepcopy(model, memo)


def _example_input(model: nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    """A seeded random input on the model's device, in its floating dtype."""
    home = device_of(model)
    dtype = next(
        (t.dtype for t in [*model.parameters(), *model.buffers()] if t.is_floating_point()),
        torch.float32,
    )
    if home.type == "meta":
        return torch.empty(shape, dtype=dtype, device=home)
    generator = torch.Generator().manual_seed(0)
    return torch.randn(shape, generator=generator, dtype=dtype).to(home)


def _checked_shape(input_shape: Sequence[int], batch: int) -> tuple[int, ...]:
    shape = (batch, *input_shape)
    if not all(isinstance(n, int) and n > 0 for n in shape):
        raise InputSizeError(
            "the input shape and batch must be positive integers (like "
            f"3×224×224, batch 1), got {tuple(input_shape)}, batch {batch}"
        )
    return shape


def _fmt(shape: Sequence[int]) -> str:
    return "×".join(str(n) for n in shape)


def _where(name: str, module: nn.Module) -> str:
    return f"{name} ({type(module).__name__})" if name else f"{type(module).__name__}.forward"


# --- geometry of windowed ops -----------------------------------------------------------------

_CONV_OPS = {aten.convolution, aten._convolution}  # the second in traced TorchScript
_POOL_OPS = {  # op -> number of spatial dims
    aten.max_pool1d: 1,
    aten.max_pool2d: 2,
    aten.max_pool3d: 3,
    aten.max_pool2d_with_indices: 2,
    aten.max_pool3d_with_indices: 3,
    aten.avg_pool1d: 1,
    aten.avg_pool2d: 2,
    aten.avg_pool3d: 3,
}
WINDOW_OPS = _CONV_OPS | set(_POOL_OPS)


def bound_arguments(func, args: tuple, kwargs: dict) -> dict[str, Any]:
    """An aten op's arguments by schema name, defaults filled in (stride=[] included)."""
    values = {}
    for index, argument in enumerate(func._schema.arguments):
        if index < len(args):
            values[argument.name] = args[index]
        elif argument.name in kwargs:
            values[argument.name] = kwargs[argument.name]
        elif argument.has_default_value():
            values[argument.name] = argument.default_value
    return values


@dataclass(frozen=True)
class Window:
    """Per spatial dim: kernel, stride, padding, dilation of a convolution or pooling."""

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    ceil_mode: bool = False

    def output_size(self, size: Sequence[int]) -> tuple[int, ...]:
        """torch's output-size formula; zero or less means the input is too small."""
        out = []
        for n, k, s, p, d in zip(
            size, self.kernel, self.stride, self.padding, self.dilation, strict=True
        ):
            span = n + 2 * p - d * (k - 1) - 1
            length = (-(-span // s) if self.ceil_mode else span // s) + 1
            if self.ceil_mode and (length - 1) * s >= n + p:
                length -= 1
            out.append(length)
        return tuple(out)


def _per_dim(value, dims: int) -> tuple[int, ...]:
    value = [value] if isinstance(value, int) else list(value)
    return tuple(value * dims if len(value) == 1 else value)


def window_of(packet, a: dict[str, Any]) -> Window | None:
    """The window of a convolution or pooling op (None for a transposed convolution)."""
    if packet in _CONV_OPS:
        if a["transposed"]:
            return None
        dims = a["weight"].dim() - 2
        return Window(
            tuple(a["weight"].shape[2:]),
            _per_dim(a["stride"], dims),
            _per_dim(a["padding"], dims),
            _per_dim(a["dilation"], dims),
        )
    dims = _POOL_OPS[packet]
    kernel = _per_dim(a["kernel_size"], dims)
    return Window(
        kernel,
        _per_dim(a["stride"] or kernel, dims),
        _per_dim(a.get("padding", 0), dims),
        _per_dim(a.get("dilation", 1), dims),
        bool(a.get("ceil_mode", False)),
    )


def _check_not_empty(func, args: tuple, kwargs: dict) -> None:
    a = bound_arguments(func, args, kwargs)
    window = window_of(func.overloadpacket, a)
    if window is None:
        return
    tensor = a["input"] if "input" in a else a["self"]  # aten's name for it varies by op
    size = window.output_size(tensor.shape[-len(window.kernel) :])
    if min(size) <= 0:
        raise _EmptyOutput(tuple(max(n, 0) for n in size))
