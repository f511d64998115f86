"""Params, MACs, FLOPs, activation memory and receptive field, per layer and in total.

Counting convention (also in every result's `convention`):

- MACs are the multiply-accumulates of convolutions (transposed ones too), linear layers and
  matrix products (mm, addmm, bmm, baddbmm, einsum and matmul, which reduce to them, and fused
  scaled-dot-product attention), also when called functionally inside a module's forward. This
  is what torchvision's weight metadata `_ops` counts (in billions), and half of what
  torch.utils.flop_counter.FlopCounterMode counts.
- FLOPs are 2 per MAC, plus the work of everything else, per element:
  bias of a convolution or linear layer 1 per output element; element-wise ops (add, sub, mul,
  div, relu, relu6, gelu, silu, sigmoid, hardswish, ... whatever their internal cost) 1 per
  output element; batch norm 2 per element (in eval mode it is a per-channel scale and shift);
  layer and group norm 5 per element (mean 1, variance 2, normalize with scale and shift 2);
  softmax and log-softmax 5 per element (max, subtract, exp, sum, divide); fused attention also
  6 per attention score (scale and softmax); reductions (mean, sum, amax, norms) 1 per input
  element; max pooling k-1 compares per output for a window of k elements, average pooling k
  per output (k-1 adds and a divide); adaptive pooling the same over each output's actual
  window.
- Views, copies, concatenation, padding, indexing and tensor creation are free. An op with no
  rule counts 0 and is named in `uncounted`, so nothing is left out silently.
- MACs do not depend on how the pass ran. FLOPs of attention can differ by a few parts per
  million between the meta device (attention decomposed into matmuls, scaling and softmax) and
  a real CPU/GPU forward pass (one fused kernel, counted as above).

Work is attributed to the innermost module that was running: a leaf module's own op, or an op
a parent calls functionally (the residual `+` of a ResNet block, torch.flatten, attention's
matmul). Layers are every leaf module plus every other module that did such work or owns
parameters directly (the model itself is named "", as in named_modules); a module called
several times has one row that adds up its calls. Params per layer are those it owns directly;
the total counts each distinct parameter once (tied weights), including modules that never ran
(Inception-v3's auxiliary head in eval mode), as torchvision's `num_params` does.
activation_bytes are the bytes of the new tensors a layer's ops return (views and in-place ops
allocate nothing), so the total is the memory of all activations of one forward pass.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from cnntool.core.loading.exported import is_torchscript
from cnntool.core.receptive_field import FieldTracker, ReceptiveField
from cnntool.core.trace import ForwardObserver, bound_arguments, trace_forward, window_of
from cnntool.errors import CnnToolError

aten = torch.ops.aten

CONVENTION = (
    "MACs: multiply-accumulates of convolution, linear and matrix products (mm/bmm/addmm/"
    "einsum/matmul/attention), as torchvision's _ops. FLOPs: 2 per MAC + bias 1 per output + "
    "element-wise ops and activations 1 per element + batch norm 2 per element + layer/group "
    "norm 5 + softmax 5 + fused attention 6 per score + reductions 1 per input + max pool k-1 "
    "and avg pool k per output; views, copies, cat and padding 0."
)


@dataclass(frozen=True)
class LayerProfile:
    """One layer (a module path, as in named_modules) or the total."""

    name: str
    type: str
    output_shape: tuple[int, ...] | None  # of its first call; None when it never ran
    params: int  # parameters the module owns directly (the total: every distinct one)
    macs: int
    flops: int
    activation_bytes: int
    receptive_field: ReceptiveField | None  # None: not a local spatial map
    calls: int

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        rf = self.receptive_field
        return {
            "name": self.name,
            "type": self.type,
            "output_shape": None if self.output_shape is None else list(self.output_shape),
            "params": self.params,
            "macs": self.macs,
            "flops": self.flops,
            "activation_bytes": self.activation_bytes,
            "receptive_field": None
            if rf is None
            else {"size": list(rf.size), "jump": list(rf.jump), "start": list(rf.start)},
            "calls": self.calls,
        }


@dataclass(frozen=True)
class ProfileResult:
    """Per-layer counts and their total (params counted once per distinct parameter)."""

    model: str
    input_shape: tuple[int, ...]
    batch: int
    mode: str  # "meta": counted on the meta device; "forward": a real forward pass
    convention: str
    layers: tuple[LayerProfile, ...]
    total: LayerProfile
    uncounted: tuple[str, ...]  # aten ops that ran but have no counting rule
    note: str | None = None  # what the rows cannot show (a TorchScript model's layers)

    def to_records(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per layer, then one named "total"."""
        return [layer.to_record() for layer in (*self.layers, self.total)]


def profile(
    model: nn.Module,
    input_shape: Sequence[int] = (3, 224, 224),
    batch: int = 1,
    device: str | torch.device = "meta",
    all_modules: bool = False,
) -> ProfileResult:
    """Count `model` on one (batch, *input_shape) input without modifying it.

    device "meta" (the default) needs no memory and no weights; models that cannot run there
    fall back to a real forward pass (`mode` says which ran). Raises InputSizeError when the
    input is too small, naming the layer where the feature map became empty. With
    `all_modules`, containers (Sequential, residual blocks) get a row too; their MACs and FLOPs
    are only the work they do themselves, so the totals stay the same.
    """

    def observers():
        tracker = FieldTracker()
        return tracker, _Counter(tracker)

    (_, counter), mode = trace_forward(model, observers, input_shape, batch=batch, device=device)
    layers = tuple(_layers(model, counter, all_modules))
    note = None
    if is_torchscript(model):  # its submodules cannot be hooked: their work is the root's
        note = (
            "a TorchScript archive's layers cannot be hooked, so all its work is counted in its "
            "root row (the other rows show parameters only); per-layer counts need the Python "
            "module (FILE.py:NAME --weights FILE)"
        )
    total = LayerProfile(
        name="total",
        type=type(model).__name__,
        output_shape=counter.stats[""].output_shape,
        params=sum(p.numel() for p in model.parameters()),
        macs=sum(layer.macs for layer in layers),
        flops=sum(layer.flops for layer in layers),
        activation_bytes=sum(layer.activation_bytes for layer in layers),
        receptive_field=counter.tracker.module_fields.get(""),
        calls=1,
    )
    return ProfileResult(
        type(model).__name__,
        tuple(input_shape),
        batch,
        mode,
        CONVENTION,
        layers,
        total,
        tuple(sorted(counter.uncounted)),
        note,
    )


def _layers(model: nn.Module, counter: _Counter, all_modules: bool) -> list[LayerProfile]:
    """Rows in named_modules order: leaves, and parents that did work or own parameters (every
    module but the root itself with `all_modules`)."""
    rows = []
    for name, module in model.named_modules():
        stats = counter.stats.get(name, _Stats())
        params = sum(p.numel() for p in module.parameters(recurse=False))
        is_leaf = next(module.children(), None) is None
        listed = (
            (all_modules and name)
            or is_leaf
            or params
            or stats.macs
            or stats.flops
            or stats.activation_bytes
        )
        if not listed:
            continue
        rows.append(
            LayerProfile(
                name,
                type(module).__name__,
                stats.output_shape,
                params,
                stats.macs,
                stats.flops,
                stats.activation_bytes,
                counter.tracker.module_fields.get(name),
                stats.calls,
            )
        )
    return rows


@dataclass
class _Stats:
    macs: int = 0
    flops: int = 0
    activation_bytes: int = 0
    calls: int = 0
    output_shape: tuple[int, ...] | None = None


@dataclass
class _Counter(ForwardObserver):
    """Adds each op's cost to the innermost running module."""

    tracker: FieldTracker
    stats: dict[str, _Stats] = field(default_factory=dict)
    uncounted: set[str] = field(default_factory=set)

    def after_op(self, module, func, args, kwargs, out):
        cost, first = _cost_rule(func), _first_tensor(out)
        stats = self.stats.setdefault(module, _Stats())
        if cost is None:
            self.uncounted.add(str(func.overloadpacket))
        elif cost is not _free:
            macs, flops = cost(bound_arguments(func, args, kwargs), first)
            stats.macs += macs
            stats.flops += flops
        if first is not None and _allocates(func):
            stats.activation_bytes += first.numel() * first.element_size()

    def module_exited(self, name, module, output):
        stats = self.stats.setdefault(name, _Stats())
        stats.calls += 1
        first = _first_tensor(output)
        if stats.calls == 1 and first is not None:
            stats.output_shape = tuple(first.shape)


@functools.cache
def _allocates(func) -> bool:
    """Whether the op's (first) result is new memory, not a view or an in-place result.

    _unsafe_view is a view that its schema does not declare (the reshapes inside matmul).
    """
    returns = func._schema.returns
    if not returns or func.overloadpacket is aten._unsafe_view:
        return False
    return returns[0].alias_info is None


def _first_tensor(value) -> torch.Tensor | None:
    return next((v for v in tree_flatten(value)[0] if isinstance(v, torch.Tensor)), None)


# --- cost rules: (bound args, first output) -> (MACs, FLOPs) ---------------------------------


def _free(a, out):
    return 0, 0


def _convolution(a, out):
    """torchvision's and FlopCounterMode's formula; for a transposed conv, per input position."""
    x, weight = a["input"], a["weight"]
    positions = x.shape[2:] if a["transposed"] else out.shape[2:]
    macs = x.shape[0] * math.prod(weight.shape) * math.prod(positions)
    return macs, 2 * macs + (out.numel() if a["bias"] is not None else 0)


def _matmul(left: str, with_bias: bool = False):
    """(…, M, K) @ (…, K, N): M·K·N MACs per matrix, plus the bias add of addmm / baddbmm."""

    def cost(a, out):
        macs = out.numel() * a[left].shape[-1]
        return macs, 2 * macs + (out.numel() if with_bias else 0)

    return cost


def _attention(a, out):
    """Fused attention: q·kᵀ and scores·v, plus scaling and softmax of every score."""
    q, k, v = a["query"], a["key"], a["value"]
    scores = math.prod(q.shape[:-1]) * k.shape[-2]
    macs = scores * (q.shape[-1] + v.shape[-1])
    return macs, 2 * macs + 6 * scores


def _per_output(flops_each: int):
    return lambda a, out: (0, flops_each * out.numel())


def _per_input(flops_each: int):
    return lambda a, out: (0, flops_each * a.get("input", a.get("self")).numel())


def _max_pool(packet):
    """k-1 compares per output, for a window of k elements."""
    return lambda a, out: (0, out.numel() * (math.prod(window_of(packet, a).kernel) - 1))


def _avg_pool(packet):
    """k-1 adds and a divide per output, for a window of k elements."""
    return lambda a, out: (0, out.numel() * math.prod(window_of(packet, a).kernel))


def _adaptive_windows(a, out) -> tuple[int, int]:
    """(sum over outputs of their window size, number of outputs) of an adaptive pool.

    Along a dim of n inputs and m outputs, output i pools inputs floor(i·n/m) to ceil((i+1)·n/m).
    """
    dims = len(a["output_size"])
    per_dim = [
        sum(-(-(i + 1) * n // m) - i * n // m for i in range(m))
        for n, m in zip(a["self"].shape[-dims:], out.shape[-dims:], strict=True)
    ]
    planes = out.numel() // math.prod(out.shape[-dims:])
    return planes * math.prod(per_dim), out.numel()


def _adaptive_avg(a, out):
    return 0, _adaptive_windows(a, out)[0]


def _adaptive_max(a, out):
    window_total, outputs = _adaptive_windows(a, out)
    return 0, window_total - outputs


_ATTENTION_OPS = (
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
)

_COSTS = {
    aten.convolution: _convolution,
    aten._convolution: _convolution,  # what traced TorchScript calls
    aten.mm: _matmul("self"),
    aten.bmm: _matmul("self"),
    aten.addmm: _matmul("mat1", with_bias=True),
    aten.baddbmm: _matmul("batch1", with_bias=True),
    **{getattr(aten, name): _attention for name in _ATTENTION_OPS if hasattr(aten, name)},
    **{
        op: _per_input(2)
        for op in (
            aten.native_batch_norm,
            aten._native_batch_norm_legit,
            aten._native_batch_norm_legit_no_training,
        )
    },
    **{op: _per_input(5) for op in (aten.native_layer_norm, aten.native_group_norm)},
    **{op: _per_input(5) for op in (aten._softmax, aten._safe_softmax, aten._log_softmax)},
    **{
        op: _max_pool(op)
        for op in (
            aten.max_pool1d,
            aten.max_pool2d,
            aten.max_pool3d,
            aten.max_pool2d_with_indices,
            aten.max_pool3d_with_indices,
        )
    },
    **{op: _avg_pool(op) for op in (aten.avg_pool1d, aten.avg_pool2d, aten.avg_pool3d)},
    **{op: _adaptive_avg for op in (aten._adaptive_avg_pool2d, aten._adaptive_avg_pool3d)},
    **{op: _adaptive_max for op in (aten.adaptive_max_pool2d, aten.adaptive_max_pool3d)},
    **{
        op: _free
        for op in (
            aten.clone,
            aten._to_copy,
            aten.copy,
            aten.copy_,
            aten._unsafe_view,
            aten.cat,
            aten.stack,
            aten.constant_pad_nd,
            aten.roll,
            aten.flip,
            aten.index,
            aten.index_select,
            aten.gather,
            aten.embedding,
            aten.repeat,
            aten.empty,
            aten.empty_like,
            aten.empty_strided,
            aten.zeros,
            aten.zeros_like,
            aten.ones,
            aten.ones_like,
            aten.full,
            aten.full_like,
            aten.new_empty,
            aten.new_zeros,
            aten.new_ones,
            aten.new_full,
            aten.scalar_tensor,
            aten.arange,
            aten.fill_,
            aten.zero_,
            aten.lift_fresh,
            aten.lift_fresh_copy,
            aten.upsample_nearest1d,
            aten.upsample_nearest2d,
            aten.upsample_nearest3d,
        )
    },
}

# Element-wise activations that aten does not tag `pointwise`.
_UNTAGGED_ELEMENTWISE = {"hardswish", "_prelu_kernel", "log_sigmoid_forward", "glu"}


@functools.cache
def _cost_rule(func):
    """The cost rule of an aten op: _free for views, None when there is no rule."""
    packet = func.overloadpacket
    if packet in _COSTS:
        return _COSTS[packet]
    if func.is_view or torch.Tag.inplace_view in func.tags:
        return _free
    if torch.Tag.pointwise in func.tags or packet.__name__.rstrip("_") in _UNTAGGED_ELEMENTWISE:
        return _per_output(1)
    if torch.Tag.reduction in func.tags:
        return _per_input(1)
    return None


def layers(module, input_shape: tuple[int, ...]) -> list[dict]:
    """Every module of a model with its type, output shape at `input_shape` (C, H, W), its
    parameters (a container's include its children's) and its aliases (conv5, fc7, penultimate…):
    the records of `cnntool layers`."""
    from cnntool.core.layers import layer_aliases

    result = profile(module, input_shape=input_shape, batch=1, all_modules=True)
    modules = dict(module.named_modules())
    aliases: dict[str, list[str]] = {}
    for alias, path in layer_aliases(module).items():
        aliases.setdefault(path, []).append(alias)
    return [
        {
            "name": layer.name,
            "type": layer.type,
            "output_shape": layer.output_shape,
            "params": sum(p.numel() for p in modules[layer.name].parameters()),
            "aliases": aliases.get(layer.name, []),
        }
        for layer in result.layers
    ]


def output_shape(module, layer: str, input_shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """The output shape (1, C, …) of module path `layer` for one input of `input_shape`, from a
    trace on the meta device (no compute); None when the layer does not run or the model cannot
    be traced."""
    try:
        result = profile(module, input_shape=input_shape, batch=1, all_modules=True)
    except CnnToolError:
        return None
    for entry in result.layers:
        if entry.name == layer:
            return tuple(entry.output_shape) if entry.output_shape else None
    return None
