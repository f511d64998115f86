"""Receptive fields, propagated through the forward pass the model really runs.

Libraries that walk `model.children()` as if it were a Sequential get multi-branch networks
(ResNet, Inception, DenseNet) and AdaptiveAvgPool wrong. Here the forward pass runs on the meta
device (shapes only, no memory for weights or activations) under a TorchDispatchMode that sees
every aten op, and every tensor carries the field of its units:

- size: how many input pixels one unit sees; jump: input pixels between neighbouring units (the
  product of strides); start: the centre of unit (0, 0)'s field in input pixel coordinates
  (pixel centres at 0, 1, ...), negative with padding and fractional after even kernels.
- convolution, max/avg pooling and an adaptive pool whose input divides its output update the
  field from kernel, stride, padding and dilation; zero padding (F.pad) shifts `start`.
- element-wise ops (add, mul, activations), batch norm, cat and other ops that combine tensors
  take the union of their inputs' fields: the maximum over paths, which is what a residual add or
  an Inception concatenation means.
- views, permutes, channel slices, channel indexing and flips (`x[:, [2, 1, 0]]`,
  `x.flip(1)`: an RGB -> BGR swap inside forward) and linear layers applied per position
  (ConvNeXt's permute/Linear/permute) keep the field: we follow where the height and width
  dims go.
- every other op that mixes positions makes the field non-local: global pooling, flatten then
  Linear, attention, group norm, softmax over positions, and also squeeze-excitation gating (each
  unit is scaled by a global average, so it depends on the whole input). A non-local field is
  reported as None. So are fields after transposed convolutions and upsampling, whose geometry
  is not translation-uniform, and after flips and rolls of height or width; we do not model
  them. `why_nonlocal` names the op where a module's field was lost.

The forward pass itself is `core.trace.trace_forward`, shared with the profile task.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakTensorKeyDictionary

from cnntool.core.trace import (
    WINDOW_OPS,
    ForwardObserver,
    Window,
    bound_arguments,
    trace_forward,
    window_of,
)

aten = torch.ops.aten


@dataclass(frozen=True)
class ReceptiveField:
    """The input region one output unit sees; every pair is (height, width), in input pixels."""

    size: tuple[int, int]
    jump: tuple[int, int]
    start: tuple[float, float]

    def input_box(
        self, i: int, j: int, clip_to: tuple[int, int] | None = None
    ) -> tuple[int, int, int, int]:
        """The input box (y0, x0, y1, x1), half-open, seen by the unit at output row i, column j.

        Unclipped, the box can reach past the image (padding): crop it with zero padding, or
        pass `clip_to=(height, width)` to clip it to the image.
        """
        y0 = round(self.start[0] + i * self.jump[0] - (self.size[0] - 1) / 2)
        x0 = round(self.start[1] + j * self.jump[1] - (self.size[1] - 1) / 2)
        y1, x1 = y0 + self.size[0], x0 + self.size[1]
        if clip_to is not None:
            height, width = clip_to
            y0, y1 = max(y0, 0), min(y1, height)
            x0, x1 = max(x0, 0), min(x1, width)
        return y0, x0, y1, x1


def receptive_fields(
    model: nn.Module,
    input_shape: Sequence[int] = (3, 224, 224),
    *,
    device: str | torch.device = "meta",
) -> dict[str, ReceptiveField]:
    """name -> field of that module's output, for every module on a convolutional path.

    Names are module paths as in named_modules ("" is the model itself, for a fully
    convolutional one). Modules whose output has no local field (see the module docstring) are
    left out; a module called several times reports its first call. The model is not modified.
    """
    (tracker,), _ = trace_forward(model, lambda: [FieldTracker()], input_shape, device=device)
    return dict(tracker.module_fields)


def why_nonlocal(
    model: nn.Module,
    name: str,
    input_shape: Sequence[int] = (3, 224, 224),
    *,
    device: str | torch.device = "meta",
) -> str | None:
    """Where module `name`'s output lost its local field, as words for a warning: "aten.mean
    in 'avgpool'" (a global pooling), "aten.flip of height or width in 'stem'"…; None when it
    has one, or its output is no spatial map at all (then a trace cannot say)."""
    (tracker,), _ = trace_forward(model, lambda: [FieldTracker()], input_shape, device=device)
    return tracker.module_losses.get(name)


# --- per-tensor fields ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Local:
    """A tensor's local field, and where its height and width sit in it.

    Row-major, the tensor's elements are [outer][hw[0]][hw[1]][inner]: `inner` is the product of
    the dims after the width. Views keep that layout even when they merge dims (Linear on
    (N*H*W, C) rows), so the field survives reshapes that a dim index would lose.
    """

    size: tuple[int, int]
    jump: tuple[int, int]
    start: tuple[float, float]
    hw: tuple[int, int]
    inner: int


NONLOCAL = "nonlocal"  # depends on the whole input, or on a geometry we do not model


def _locate(shape: Sequence[int], field: _Local) -> int | None:
    """The index of the height dim in `shape`, or None when height and width are not dims."""
    for h in range(len(shape) - 2, -1, -1):
        if tuple(shape[h : h + 2]) == field.hw and math.prod(shape[h + 2 :]) == field.inner:
            return h
    return None


def _place(field, shape: Sequence[int], h: int):
    """`field` for a tensor of `shape` whose height is dim h (NONLOCAL if it is not there)."""
    if field == NONLOCAL or not 0 <= h < len(shape) - 1 or tuple(shape[h : h + 2]) != field.hw:
        return NONLOCAL
    return replace(field, inner=math.prod(shape[h + 2 :]))


def _union(fields: Sequence):
    """The smallest field that covers every field in `fields` (the maximum over paths)."""
    if any(f == NONLOCAL for f in fields):
        return NONLOCAL
    first = fields[0]
    if any((f.jump, f.hw, f.inner) != (first.jump, first.hw, first.inner) for f in fields):
        return NONLOCAL
    size, start = [], []
    for axis in range(2):
        lo = min(f.start[axis] - (f.size[axis] - 1) / 2 for f in fields)
        hi = max(f.start[axis] + (f.size[axis] - 1) / 2 for f in fields)
        size.append(round(hi - lo) + 1)
        start.append((lo + hi) / 2)
    return replace(first, size=tuple(size), start=tuple(start))


def _windowed(field, window: Window, hw: Sequence[int], shift: Sequence[int] = (0, 0)):
    """The field after a window op (or zero padding: a 1×1 window that shifts by `shift`)."""
    size, jump, start = [], [], []
    for axis in range(2):
        k = window.dilation[axis] * (window.kernel[axis] - 1) + 1
        j = field.jump[axis]
        size.append(field.size[axis] + (k - 1) * j)
        start.append(field.start[axis] + ((k - 1) / 2 - window.padding[axis] - shift[axis]) * j)
        jump.append(j * window.stride[axis])
    height, width = hw
    return _Local(tuple(size), tuple(jump), tuple(start), (height, width), 1)


# A rule maps (bound args, [(tracked input, its field)], first output) to (field, h): the field
# of the outputs, with h the index of their height dim, or None when the outputs keep the
# row-major layout of that field (views, same-shape element-wise ops).
Rule = Callable[[dict, list, torch.Tensor], tuple[Any, int | None]]


def _same_layout(a, tracked, out):
    """Views, copies, squeeze/unsqueeze: the row-major layout and the field are unchanged."""
    return _union([f for _, f in tracked]), None


def _elementwise(a, tracked, out):
    """Element-wise ops and batch norm: the union of the inputs, aligned by broadcasting."""
    if all(t.shape == out.shape for t, _ in tracked):
        return _union([f for _, f in tracked]), None
    placed = []
    for t, f in tracked:
        h = None if f == NONLOCAL else _locate(t.shape, f)
        if h is None:
            return NONLOCAL, None
        placed.append(_place(f, out.shape, h + out.dim() - t.dim()))
    return _union(placed), None


def _the_input(tracked, a) -> tuple[torch.Tensor, Any, int | None]:
    """The op's single tracked input (`self`/`input`), its field and height dim (None: lost)."""
    x = a.get("input", a.get("self"))
    if len(tracked) != 1 or tracked[0][0] is not x or tracked[0][1] == NONLOCAL:
        return x, NONLOCAL, None
    return x, tracked[0][1], _locate(x.shape, tracked[0][1])


def _spatial_input(tracked, a):
    """The field of an NCHW input of a 2-D window op, or NONLOCAL."""
    x, field, h = _the_input(tracked, a)
    return field if h is not None and x.dim() == 4 and h == 2 else NONLOCAL


def _window_rule(packet):
    def rule(a, tracked, out):
        field, window = _spatial_input(tracked, a), window_of(packet, a)
        if field == NONLOCAL or window is None:
            return NONLOCAL, None
        return _windowed(field, window, out.shape[2:]), 2

    return rule


def _adaptive_pool(a, tracked, out):
    """An adaptive pool is an ordinary one when the input size divides by the output size."""
    field = _spatial_input(tracked, a)
    if field == NONLOCAL or any(n % m for n, m in zip(field.hw, out.shape[2:], strict=True)):
        return NONLOCAL, None
    kernel = tuple(n // m for n, m in zip(field.hw, out.shape[2:], strict=True))
    return _windowed(field, Window(kernel, kernel, (0, 0), (1, 1)), out.shape[2:]), 2


def _constant_pad(a, tracked, out):
    """F.pad with zeros: `start` moves back by the padding before the height / width."""
    x, field, h = _the_input(tracked, a)
    if h is None:
        return NONLOCAL, None
    before = {x.dim() - 1 - i: a["pad"][2 * i] for i in range(len(a["pad"]) // 2)}
    shift = (before.get(h, 0), before.get(h + 1, 0))
    unit = Window((1, 1), (1, 1), (0, 0), (1, 1))
    return _windowed(field, unit, out.shape[h : h + 2], shift), h


def _dim_rule(move: Callable[[dict, int, int], int | None]):
    """Ops on one tensor that move or drop a dim: `move(a, rank, h)` gives the new h or None."""

    def rule(a, tracked, out):
        x, field, h = _the_input(tracked, a)
        if h is None:
            return NONLOCAL, None
        new_h = move(a, x.dim(), h)
        return (NONLOCAL, None) if new_h is None else (field, new_h)

    return rule


def _permuted(order: Sequence[int], rank: int, h: int) -> int | None:
    order = [d % rank for d in order]
    new_h = order.index(h)
    return new_h if order.index(h + 1) == new_h + 1 else None


def _transposed(a, rank, h):
    order = list(range(rank))
    d0, d1 = a["dim0"] % rank, a["dim1"] % rank
    order[d0], order[d1] = order[d1], order[d0]
    return _permuted(order, rank, h)


def _keeps(a, rank, h):
    """Slicing or splitting along a dim other than height and width."""
    return None if a["dim"] % rank in (h, h + 1) else h


def _drops(a, rank, h):
    """select / unbind remove a dim other than height and width."""
    d = a["dim"] % rank
    return None if d in (h, h + 1) else h - (d < h)


def _reduced(a, rank, h):
    """mean/sum/amax over dims other than height and width (none given: over everything)."""
    dims = a.get("dim")
    if not dims and dims != 0:
        return None
    dims = {d % rank for d in ([dims] if isinstance(dims, int) else dims)}
    if dims & {h, h + 1}:
        return None
    return h if a.get("keepdim") else h - sum(d < h for d in dims)


def _layer_norm_keeps(a, rank, h):
    """Layer norm over trailing dims that leave height and width out (ConvNeXt's channels)."""
    return None if h + 1 >= rank - len(a["normalized_shape"]) else h


def _joined(stacked: bool):
    """cat / stack: the union of the inputs, joined along a dim other than height and width."""

    def rule(a, tracked, out):
        placed = []
        for t, f in tracked:
            h = None if f == NONLOCAL else _locate(t.shape, f)
            if h is None:
                return NONLOCAL, None
            if stacked:  # a new dim at `dim` of the output: before height, or after width
                d = a["dim"] % out.dim()
                if d == h + 1:
                    return NONLOCAL, None
                new_h = h + (d <= h)
            else:  # joined along an existing dim, which must not be height or width
                if a["dim"] % t.dim() in (h, h + 1):
                    return NONLOCAL, None
                new_h = h
            placed.append(_place(f, out.shape, new_h))
        return _union(placed), None

    return rule


def _matmul(left_name: str):
    """mm/addmm/bmm/baddbmm applied per position: the left operand's rows hold the positions.

    With the left operand's layout [outer][H][W][inner] and K = its last dim, the product keeps
    positions apart when K divides `inner`; a tracked right operand (attention's keys) mixes them.
    """

    def rule(a, tracked, out):
        left = a[left_name]
        if len(tracked) != 1 or tracked[0][0] is not left or tracked[0][1] == NONLOCAL:
            return NONLOCAL, None
        field, k = tracked[0][1], left.shape[-1]
        if field.inner % k:
            return NONLOCAL, None
        return replace(field, inner=field.inner // k * out.shape[-1]), None

    return rule


def _indexed(a, tracked, out):
    """x[..., idx, ...] (aten.index): indexing dims before height and width keeps the field;
    the dims from height on are untouched, so they keep their place counted from the end."""
    x, field, h = _the_input(tracked, a)
    if h is None:
        return NONLOCAL, None
    used = [i for i, index in enumerate(a["indices"]) if index is not None]
    new_h = h + out.dim() - x.dim()
    if any(i >= h for i in used) or new_h < 0 or out.shape[new_h:] != x.shape[h:]:
        return NONLOCAL, None
    return field, new_h


def _flipped(a, rank, h):
    """flip / roll along dims other than height and width (channels: RGB <-> BGR)."""
    dims = a.get("dims") or ()
    dims = {d % rank for d in ([dims] if isinstance(dims, int) else dims)}
    return None if not dims or dims & {h, h + 1} else h


def _copy_into(a, tracked, out):
    """copy_(self, src): the destination now holds `src`."""
    src = [(t, f) for t, f in tracked if t is a["src"]]
    return _same_layout(a, src, out) if src else (None, None)


_RULES: dict[Any, Rule] = {
    **{
        op: _same_layout
        for op in (
            aten.view,
            aten._unsafe_view,
            aten._reshape_alias,
            aten.alias,
            aten.detach,
            aten.clone,
            aten._to_copy,
            aten.lift_fresh,
            aten.squeeze,
            aten.unsqueeze,
        )
    },
    **{
        op: _elementwise
        for op in (
            aten.expand,
            aten.native_batch_norm,
            aten._native_batch_norm_legit,
            aten._native_batch_norm_legit_no_training,
            aten.native_dropout,
        )
    },
    aten.copy_: _copy_into,
    aten.constant_pad_nd: _constant_pad,
    aten._adaptive_avg_pool2d: _adaptive_pool,
    aten.adaptive_max_pool2d: _adaptive_pool,
    aten.permute: _dim_rule(lambda a, rank, h: _permuted(a["dims"], rank, h)),
    aten.transpose: _dim_rule(_transposed),
    aten.t: _dim_rule(lambda a, rank, h: _permuted([1, 0], rank, h)),
    aten.slice: _dim_rule(_keeps),
    aten.index_select: _dim_rule(_keeps),
    aten.index: _indexed,
    aten.flip: _dim_rule(_flipped),
    aten.roll: _dim_rule(_flipped),
    aten.split: _dim_rule(_keeps),
    aten.split_with_sizes: _dim_rule(_keeps),
    aten.select: _dim_rule(_drops),
    aten.unbind: _dim_rule(_drops),
    aten.native_layer_norm: _dim_rule(_layer_norm_keeps),
    **{op: _dim_rule(_keeps) for op in (aten._softmax, aten._safe_softmax, aten._log_softmax)},
    **{op: _dim_rule(_reduced) for op in (aten.mean, aten.sum, aten.amax, aten.amin)},
    aten.cat: _joined(stacked=False),
    aten.stack: _joined(stacked=True),
    aten.mm: _matmul("self"),
    aten.bmm: _matmul("self"),
    aten.addmm: _matmul("mat1"),
    aten.baddbmm: _matmul("batch1"),
    **{op: _window_rule(op) for op in WINDOW_OPS},
}


def _nonlocal(a, tracked, out):
    return NONLOCAL, None


@functools.cache
def _rule_for(func) -> Rule:
    rule = _RULES.get(func.overloadpacket)
    if rule is not None:
        return rule
    if torch.Tag.pointwise in func.tags:
        return _elementwise
    return _nonlocal


def _tensors(value) -> list[torch.Tensor]:
    return [v for v in tree_flatten(value)[0] if isinstance(v, torch.Tensor)]


class FieldTracker(ForwardObserver):
    """Carries a field on every tensor that depends on the input, op by op.

    A 4-D (N, C, H, W) input starts with the field of its pixels (size 1, jump 1, start 0);
    other inputs get no field.
    """

    def __init__(self) -> None:
        self.fields = WeakTensorKeyDictionary()
        self.lost = WeakTensorKeyDictionary()  # a non-local tensor -> where its field was lost
        self.module_fields: dict[str, ReceptiveField] = {}
        self.module_losses: dict[str, str] = {}
        self._seen_modules: set[str] = set()

    def forward_started(self, x: torch.Tensor) -> None:
        if x.dim() == 4:
            self.fields[x] = _Local((1, 1), (1, 1), (0.0, 0.0), (x.shape[2], x.shape[3]), 1)

    def field_of(self, tensor: torch.Tensor) -> ReceptiveField | None:
        """The local field of `tensor`'s units, or None (non-local, or not a spatial map)."""
        field = self.fields.get(tensor)
        if field is None or field == NONLOCAL or _locate(tensor.shape, field) is None:
            return None
        return ReceptiveField(field.size, field.jump, field.start)

    def after_op(self, module, func, args, kwargs, out):
        tracked = [(t, self.fields[t]) for t in _tensors((args, kwargs)) if t in self.fields]
        outputs = _tensors(out)
        if not tracked or not outputs:
            return
        field, h = _rule_for(func)(bound_arguments(func, args, kwargs), tracked, outputs[0])
        for tensor in outputs:
            self._assign(tensor, field, h, outputs[0].shape)
            if self.fields.get(tensor) == NONLOCAL:
                self.lost[tensor] = self._loss(func, module, tracked)

    def _loss(self, func, module: str, tracked) -> str:
        """Where an output's field was lost: inherited from a non-local input, or this op."""
        for tensor, field in tracked:
            if field == NONLOCAL and tensor in self.lost:
                return self.lost[tensor]
        what = {"flip": " of height or width", "roll": " of height or width"}.get(
            func.overloadpacket.__name__, ""
        )
        return (
            f"aten.{func.overloadpacket.__name__}{what} in {module!r}"
            if module
            else (f"aten.{func.overloadpacket.__name__}{what} in the model's own forward")
        )

    def _assign(self, tensor, field, h, first_shape):
        if field is None:
            self.fields.pop(tensor, None)
        elif h is not None:
            self.fields[tensor] = _place(field, tensor.shape, h)
        else:
            self.fields[tensor] = field if tensor.shape == first_shape else NONLOCAL

    def module_exited(self, name, module, output):
        if name in self._seen_modules:
            return
        self._seen_modules.add(name)
        outputs = _tensors(output)
        field = self.field_of(outputs[0]) if outputs else None
        if field is not None:
            self.module_fields[name] = field
        elif outputs and outputs[0] in self.lost:
            self.module_losses[name] = self.lost[outputs[0]]
