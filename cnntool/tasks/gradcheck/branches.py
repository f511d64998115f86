"""Which branch of every non-differentiable op one evaluation took, to tell kinks from bugs.

A central difference across a ReLU at 0, a max-pool tie or a clamp bound measures neither
side's derivative. `record_branches` watches every aten op of one loss evaluation (so any
spelling counts: nn.ReLU, F.relu, x.clamp(min=0), a custom autograd.Function's forward) and
keeps, per call, which side of its kinks each element is on: the input's sign for ReLU-like
ops, the bound it is clamped to, and every integer or boolean result computed from floats
(max-pool and max/sort indices, comparisons feeding `where`). Two evaluations crossed no
known kink between them exactly when their records are equal.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

aten = torch.ops.aten


def record_branches(evaluate: Callable[[], object]) -> list[Tensor]:
    """Run `evaluate()` and return the branch record of every watched op it ran, in order."""
    recorder = _BranchRecorder()
    with recorder:
        evaluate()
    return recorder.record


def same_branches(first: list[Tensor], second: list[Tensor]) -> bool:
    return len(first) == len(second) and all(
        a.shape == b.shape and torch.equal(a, b) for a, b in zip(first, second, strict=True)
    )


def _sides(x: Tensor, low=None, high=None) -> Tensor:
    """0 inside (low, high), 1 at or below low, 2 at or above high (bounds may be tensors)."""
    side = torch.zeros(x.shape, dtype=torch.int8, device=x.device)
    if low is not None:
        side = side + (x <= low).to(torch.int8)
    if high is not None:
        side = side + 2 * (x >= high).to(torch.int8)
    return side


def _positive(x: Tensor, *_args, **_kwargs) -> Tensor:
    return x > 0


def _hardtanh(x: Tensor, min_val=-1.0, max_val=1.0) -> Tensor:
    return _sides(x, min_val, max_val)


def _clamp(x: Tensor, min=None, max=None) -> Tensor:  # noqa: A002 - aten's argument names
    return _sides(x, min, max)


def _threshold(x: Tensor, threshold, _value) -> Tensor:
    return x > threshold


def _hard_sigmoid_family(x: Tensor) -> Tensor:
    return _sides(x, -3.0, 3.0)


def _larger(a: Tensor, b: Tensor) -> Tensor:
    return a > b


def _winners(x: Tensor, dim=(), keepdim=False) -> Tensor:
    # which elements equal the maximum (or minimum): ties and changes of winner both show
    dims = tuple(dim) if dim else tuple(range(x.ndim))
    return (x == x.amax(dims, keepdim=True)) if dims else torch.ones_like(x, dtype=torch.bool)


def _losers(x: Tensor, dim=(), keepdim=False) -> Tensor:
    dims = tuple(dim) if dim else tuple(range(x.ndim))
    return (x == x.amin(dims, keepdim=True)) if dims else torch.ones_like(x, dtype=torch.bool)


def _full_max(x: Tensor) -> Tensor:
    return x == x.max()


def _full_min(x: Tensor) -> Tensor:
    return x == x.min()


def _steps(x: Tensor, *_args, **_kwargs) -> Tensor:
    # sign, round, floor, ceil, trunc: the integer part that jumps
    return torch.floor(x)


# aten overload packet -> branch of its inputs, computed before the op runs (in-place ops
# overwrite their input). Integer and boolean outputs are recorded after any op.
_INPUT_RULES: dict[object, Callable[..., Tensor]] = {
    aten.relu: _positive,
    aten.relu_: _positive,
    aten.leaky_relu: _positive,
    aten.leaky_relu_: _positive,
    aten.abs: _positive,
    aten.abs_: _positive,
    aten.hardtanh: _hardtanh,
    aten.hardtanh_: _hardtanh,
    aten.clamp: _clamp,
    aten.clamp_: _clamp,
    aten.clamp_min: lambda x, min: _sides(x, min, None),  # noqa: A006
    aten.clamp_min_: lambda x, min: _sides(x, min, None),  # noqa: A006
    aten.clamp_max: lambda x, max: _sides(x, None, max),  # noqa: A006
    aten.clamp_max_: lambda x, max: _sides(x, None, max),  # noqa: A006
    aten.threshold: _threshold,
    aten.threshold_: _threshold,
    aten.hardsigmoid: _hard_sigmoid_family,
    aten.hardsigmoid_: _hard_sigmoid_family,
    aten.hardswish: _hard_sigmoid_family,
    aten.hardswish_: _hard_sigmoid_family,
    aten.maximum: _larger,
    aten.minimum: lambda a, b: _larger(b, a),
    aten.fmax: _larger,
    aten.fmin: lambda a, b: _larger(b, a),
    aten.amax: _winners,
    aten.amin: _losers,
    aten.sign: _steps,
    aten.round: _steps,
    aten.floor: _steps,
    aten.ceil: _steps,
    aten.trunc: _steps,
}
_FULL_REDUCTIONS = {aten.max.default: _full_max, aten.min.default: _full_min}


class _BranchRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.record: list[Tensor] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        rule = _FULL_REDUCTIONS.get(func) or _INPUT_RULES.get(func.overloadpacket)
        if rule is not None:
            self.record.append(rule(*args, **kwargs))
        out = func(*args, **kwargs)
        if any(isinstance(a, Tensor) and a.is_floating_point() for a in tree_flatten(args)[0]):
            self.record.extend(
                o.clone()
                for o in tree_flatten(out)[0]
                if isinstance(o, Tensor) and not o.is_floating_point() and not o.is_complex()
            )
        return out
