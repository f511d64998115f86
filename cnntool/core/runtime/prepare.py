"""A model made ready for a dataset scan, in place and reversibly.

`prepare_for_scan` changes the user's module itself (no wrapper, no copy), so every module path
and every module object stays what it was: hooks registered through core.hooks by name, before
or after, see the same layers. What it may change, and what `restore()` puts back exactly:
- eval mode on every submodule (the scan never trains);
- channels-last memory format of 4-D parameters and buffers (the original tensors are kept
  and put back, so strides, storage and device are as before);
- parameters stop requiring grad when a gradient is needed (scans take input gradients only);
- BatchNorm folded into the convolution before it (opt-in; see folding.py).

The forward runs inside `prepared.forward()`: inference mode when no gradient is needed (no
autograd bookkeeping at all), `enable_grad` when one is, and the precision's autocast / TF32
switches. Tensors made in inference mode cannot join autograd later or be changed in place
outside it, so states that a scan builds from them (top-k, running moments) are updated and
merged under `prepared.grad_context()` as well (or cloned outside it first).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from cnntool.core.device import device_of
from cnntool.core.loading.exported import contains_exported
from cnntool.core.runtime.folding import Folding, find_pairs
from cnntool.core.runtime.layout import choose_channels_last
from cnntool.core.runtime.precision import PrecisionPlan, precision_plan
from cnntool.errors import CnnToolError, InputSizeError

# the folded model's output must match the unfolded one's this closely (relative to its scale)
_FOLD_TOLERANCE = 1e-3


@dataclass
class _Snapshot:
    """What the user's module was: tensors' data, training flags, requires_grad flags."""

    data: list[tuple[Tensor, Tensor]]  # (parameter or buffer, its original .data)
    training: list[tuple[nn.Module, bool]]
    requires_grad: list[tuple[nn.Parameter, bool]]

    @classmethod
    def of(cls, module: nn.Module) -> _Snapshot:
        tensors = [*module.parameters(), *module.buffers()]
        return cls(
            data=[(t, t.data) for t in tensors],
            training=[(m, m.training) for m in module.modules()],
            requires_grad=[(p, p.requires_grad) for p in module.parameters()],
        )

    def put_back(self) -> None:
        for tensor, data in self.data:
            if tensor.data is not data:
                tensor.data = data
        for module, training in self.training:
            if module.training != training:
                module.training = training
        for parameter, flag in self.requires_grad:
            if parameter.requires_grad != flag:
                parameter.requires_grad_(flag)


@dataclass
class PreparedModel:
    """A module prepared for a scan. Call it (or `module`) inside `forward()` on `inputs(x)`.

    Use as a context manager (or call `restore()`) to leave the user's module as it was.
    """

    module: nn.Module
    device: torch.device
    needs_grad: bool
    plan: PrecisionPlan
    channels_last: bool
    channels_last_reason: str
    inference_mode: bool
    folded: tuple = ()  # FoldPair(conv, bn) of the folded BatchNorms
    fold_note: str | None = None  # why folding was asked for but not done
    _snapshot: _Snapshot | None = field(default=None, repr=False)
    _folding: Folding | None = field(default=None, repr=False)

    @property
    def precision(self) -> str:
        return self.plan.name

    @property
    def precision_note(self) -> str | None:
        """One line on what the reduced precision changes (None for fp32)."""
        return self.plan.note

    @property
    def grad_mode(self) -> str:
        if self.needs_grad:
            return "gradients"
        return "inference mode" if self.inference_mode else "no grad"

    def grad_context(self) -> contextlib.AbstractContextManager:
        """The scan's autograd mode alone (no precision switches): enable_grad, inference_mode
        or no_grad. Run the code that updates or merges states made from the scan's tensors
        under it too: outside inference mode an in-place update of a tensor made inside it
        raises (diagnose's RunningStats.merge does `+=`)."""
        if self.needs_grad:
            return torch.enable_grad()
        return torch.inference_mode() if self.inference_mode else torch.no_grad()

    @contextlib.contextmanager
    def forward(self) -> Iterator[None]:
        """The context of every forward (and, with gradients, backward) of the scan: the
        autograd mode and the precision's autocast / TF32 switches."""
        with self.grad_context(), self.plan.context():
            yield

    def inputs(self, x: Tensor) -> Tensor:
        """A batch on the device, channels-last where the model is (a non-blocking copy: from
        pinned memory on CUDA it overlaps the previous batch's compute)."""
        memory_format = (
            torch.channels_last if self.channels_last and x.dim() == 4 else torch.preserve_format
        )
        return x.to(self.device, non_blocking=True, memory_format=memory_format)

    def __call__(self, *args, **kwargs) -> Any:
        return self.module(*args, **kwargs)

    def describe(self) -> str:
        """One line for stderr: what this preparation changed."""
        parts = [
            "channels-last" if self.channels_last else "contiguous (NCHW)",
            self.grad_mode,
            self.precision,
        ]
        if self.folded:
            parts.append(f"{len(self.folded)} BatchNorm folded")
        if self.fold_note:
            parts.append(self.fold_note)
        return ", ".join(parts)

    def restore(self) -> None:
        """Put the user's module back exactly as it was (idempotent)."""
        if self._folding is not None:
            self._folding.undo()
            self._folding = None
        if self._snapshot is not None:
            self._snapshot.put_back()
            self._snapshot = None

    def __enter__(self) -> PreparedModel:
        return self

    def __exit__(self, *exc) -> None:
        self.restore()


def prepare_for_scan(
    module: nn.Module,
    device: torch.device | str | None = None,
    *,
    needs_grad: bool = False,
    precision: str = "fp32",
    channels_last: bool | str = "auto",
    fold_bn: bool = False,
    keep: Sequence[str] = (),
    inference_mode: bool = True,
    example_input_shape: Sequence[int] | None = None,
) -> PreparedModel:
    """Prepare `module` in place for a scan on `device` (default: where its weights are).

    - needs_grad: the scan takes input gradients (attacks): forward under enable_grad,
      parameters frozen. Otherwise inference mode (or no_grad with inference_mode=False).
    - precision: fp32 | tf32 | bf16 | fp16 (precision.py); CnnToolError where it cannot run.
    - channels_last: True, False or "auto" (layout.py: where convolutions do most of the work).
    - fold_bn: fold each BatchNorm2d into the convolution that feeds it, except convolutions
      named in `keep` (layers whose own output the scan observes). Needs example_input_shape.
    - example_input_shape: (C, H, W) of one input, for the channels-last rule and the fold.
    """
    device = torch.device(device) if device is not None else device_of(module)
    plan = precision_plan(precision, device)
    snapshot = _Snapshot.of(module)
    prepared = None
    try:
        module.eval()
        use_cl, why = choose_channels_last_safely(
            module, device, channels_last, example_input_shape
        )
        prepared = PreparedModel(
            module, device, needs_grad, plan, use_cl, why, inference_mode, _snapshot=snapshot
        )
        for tensor, _ in snapshot.data:
            _move(tensor, device, use_cl)
        if fold_bn:
            _fold(prepared, example_input_shape, keep)
        if needs_grad:
            for parameter in module.parameters():
                if parameter.requires_grad:
                    parameter.requires_grad_(False)
        return prepared
    except BaseException:
        if prepared is not None:
            prepared.restore()
        else:
            snapshot.put_back()
        raise


def _move(tensor: Tensor, device: torch.device, channels_last: bool) -> None:
    """Give a parameter or buffer new data on `device` (channels-last when 4-D and asked)."""
    if channels_last and tensor.dim() == 4:
        moved = tensor.data.to(device, memory_format=torch.channels_last)
    else:
        moved = tensor.data.to(device)
    if moved is not tensor.data:
        tensor.data = moved


def choose_channels_last_safely(module, device, setting, input_shape) -> tuple[bool, str]:
    """layout.choose_channels_last, falling back to "has a convolution" when the model cannot
    be traced at that size (the scan itself will then say what is wrong)."""
    try:
        return choose_channels_last(module, device, setting, input_shape)
    except CnnToolError:
        return choose_channels_last(module, device, setting, None)


def _fold(prepared: PreparedModel, input_shape: Sequence[int] | None, keep: Sequence[str]) -> None:
    """Fold what one probe forward shows, then check the output against the probe's; undo the
    fold (and say why) when they differ."""
    if input_shape is None:
        raise ValueError("fold_bn needs example_input_shape")
    module = prepared.module
    if contains_exported(module):  # its layers are graph pieces, not Conv2d and BatchNorm2d
        prepared.fold_note = "an exported program's BatchNorms cannot be folded"
        return
    example = _example(module, input_shape)
    pairs = find_pairs(module, example, keep)
    if not pairs:
        prepared.fold_note = "no BatchNorm to fold"
        return
    with torch.no_grad():
        reference = _first_tensor(module(example))
        folding = Folding(module, pairs)
        folding.apply()
        for conv, _ in folding.modules:
            for tensor in (conv.weight, conv.bias):
                _move(tensor, prepared.device, prepared.channels_last)
        folded = _first_tensor(module(example))
    scale = reference.abs().max().clamp_min(1e-12)
    if (
        not torch.isfinite(folded).all()
        or float((folded - reference).abs().max() / scale) > _FOLD_TOLERANCE
    ):
        folding.undo()
        prepared.fold_note = "BatchNorm not folded (the folded model's output differed)"
        return
    prepared._folding, prepared.folded = folding, tuple(pairs)


def _example(module: nn.Module, input_shape: Sequence[int]) -> Tensor:
    """Two seeded random inputs on the module's device (two: a batch of one hides nothing but
    some models squeeze it away)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn((2, *input_shape), generator=generator)
    return x.to(device_of(module))


def _first_tensor(output) -> Tensor:
    if isinstance(output, Tensor):
        return output.float()
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0].float()
    raise InputSizeError(
        "the model's output is not a tensor, so a BatchNorm fold cannot be "
        "checked; run without --fold-bn"
    )
