"""Top-activating dataset patches per unit (R-CNN, Girshick et al. 2014, Fig. 3; deepvis).

For every selected channel ("unit") of a layer, keep the K largest activations over a dataset
with the image and spatial position that produced them. The running state lives on the device
and is merged per batch with one torch.topk over (units, K + candidates): no Python loop per
unit or per image, memory independent of the dataset's size.

Order is total: value descending, then dataset index, then position ascending. So the top K are
unique even with ties (a dead ReLU unit is 0 on many images), and merging the states of several
shards (torchrun) gives exactly what one process gives.

Shown hits are the unit's POSITIVE top activations (a zero or negative value is not a hit: a
unit with fewer than K positive values shows fewer, one with none is dead), at most one per image
by default (each image's best position competes; `per_image` allows more).

Boxes: the unit's receptive field in model-input pixels (`ReceptiveField.input_box`), mapped
back through the preprocessing (resize, center crop) to the ORIGINAL image's pixels. Where the
field is larger than PEAK_CROP of the input along an axis (deep layers: efficientnet_lite0's
`_blocks.8` and later), the field would be the whole image for every hit, so that axis shows a
window of PEAK_CROP of the input centred on the peak's position instead (see `patch_input_box`).
Where the layer has no local receptive field (after global pooling, a linear layer, or
squeeze-excite gating) the box is the whole model input, mapped back the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from cnntool.core.preprocessing import Preprocessing
from cnntool.core.receptive_field import ReceptiveField
from cnntool.core.session import Consumer, ScanSession, feed
from cnntool.errors import CnnToolError
from cnntool.tasks.resumable import Resumable, model_settings


@dataclass(frozen=True)
class Hit:
    """One top activation: `rank` 0 is the unit's largest; `box` (x0, y0, x1, y1) is in the
    original image's pixels, half-open, and may reach past the image (zero-pad when cropping)."""

    unit: int
    rank: int
    index: int
    value: float
    position: tuple[int, int]  # (row, column) in the layer's feature map
    box: tuple[int, int, int, int]
    input_box: tuple[int, int, int, int] | None = None  # the patch (y0, x0, y1, x1), model-input px


@dataclass(frozen=True)
class TopPatches:
    """The result of a scan: per unit, its positive hits in rank order (fewer than K for a tiny
    set or a unit that is rarely on; none for a dead unit)."""

    layer: str
    units: tuple[int, ...]
    top: int
    hits: tuple[tuple[Hit, ...], ...]  # hits[u] belongs to units[u]
    seen: int = 0  # images scanned

    def records(self) -> Iterable[Hit]:
        for unit_hits in self.hits:
            yield from unit_hits

    @property
    def dead(self) -> tuple[int, ...]:
        """The units with no positive activation anywhere in the scanned images."""
        return tuple(unit for unit, hits in zip(self.units, self.hits, strict=True) if not hits)


class TopK:
    """The running top-K state of a scan: tensors (U, K) on the device.

    `values`, `indices` (dataset index, -1 = empty slot), `positions` (U, K, 2) and `sizes`
    (U, K, 2: the original image's (w, h), needed to map boxes back after the scan).
    """

    def __init__(self, units: int, top: int, device=None):
        self.top = top
        self.values = torch.full((units, top), float("-inf"), device=device)
        self.indices = torch.full((units, top), -1, dtype=torch.long, device=device)
        self.positions = torch.zeros((units, top, 2), dtype=torch.long, device=device)
        self.sizes = torch.zeros((units, top, 2), dtype=torch.long, device=device)
        self.seen = 0  # images folded in so far
        self.one_per_image = True  # False once an image may give a unit several hits

    def update(
        self,
        activations: torch.Tensor,
        indices: Sequence[int],
        sizes: Sequence[tuple[int, int]],
        per_image: int = 1,
    ) -> None:
        """Fold in a batch: activations (B, U, H, W) of the selected units; `per_image` best
        positions per image and unit compete (1 = one patch per image, as in R-CNN)."""
        batch, units, height, width = activations.shape
        device = self.values.device
        flat = activations.reshape(batch, units, height * width).float()
        k = min(per_image, height * width)
        self.one_per_image &= k == 1
        if k == 1:
            best, where = flat.max(dim=2, keepdim=True)
        else:
            best, where = flat.topk(k, dim=2)  # (B, U, k)
        # candidates as (U, B*k)
        values = best.permute(1, 0, 2).reshape(units, batch * k).nan_to_num(nan=float("-inf"))
        where = where.permute(1, 0, 2).reshape(units, batch * k)
        index = _on(device, indices).repeat_interleave(k).expand(units, -1)
        size = _on(device, sizes).repeat_interleave(k, dim=0).expand(units, -1, -1)
        position = torch.stack([where // width, where % width], dim=-1).to(device)
        self._merge(values.to(device), index, position, size)
        self.seen += batch

    def merge(self, other: TopK) -> None:
        """Fold in another shard's state (exact: the order is total)."""
        self.one_per_image &= other.one_per_image
        self._merge(
            other.values.to(self.values.device),
            other.indices.to(self.indices.device),
            other.positions.to(self.values.device),
            other.sizes.to(self.values.device),
        )
        self.seen += other.seen

    def _merge(self, values, indices, positions, sizes) -> None:
        values = torch.cat([self.values, values], dim=1)
        indices = torch.cat([self.indices, indices], dim=1)
        positions = torch.cat([self.positions, positions], dim=1)
        sizes = torch.cat([self.sizes, sizes], dim=1)
        if self.one_per_image:
            # (value, image) pairs are unique: one topk over a packed int64 key is exact
            order = _packed_key(values, indices).topk(self.top, dim=1).indices
        else:
            # Lexicographic order by stable sorts, least significant key first: position,
            # index, then value (an image may give a unit several equal values).
            order = _stable_argsort(positions[..., 0] * (1 << 31) + positions[..., 1])
            order = _then(order, indices, descending=False)
            order = _then(order, values, descending=True)[:, : self.top]
        self.values = values.gather(1, order)
        self.indices = indices.gather(1, order)
        self.positions = positions.gather(1, order[..., None].expand(-1, -1, 2))
        self.sizes = sizes.gather(1, order[..., None].expand(-1, -1, 2))

    def state_dict(self) -> dict:
        """CPU tensors for a resume file or for gathering across ranks."""
        return {
            "values": self.values.cpu(),
            "indices": self.indices.cpu(),
            "positions": self.positions.cpu(),
            "sizes": self.sizes.cpu(),
            "seen": self.seen,
            "one_per_image": self.one_per_image,
        }

    @classmethod
    def from_state(cls, state: dict, device=None) -> TopK:
        units, top = state["values"].shape
        topk = cls(units, top, device)
        topk.values = state["values"].to(device)
        topk.indices = state["indices"].to(device)
        topk.positions = state["positions"].to(device)
        topk.sizes = state["sizes"].to(device)
        topk.seen = int(state["seen"])
        topk.one_per_image = bool(state["one_per_image"])
        return topk


def _on(device, data) -> torch.Tensor:
    """A small long tensor on `device` without stalling the GPU: a pageable host-to-device
    copy would wait for the forward queued before it; a pinned one runs asynchronously."""
    tensor = torch.as_tensor(list(data), dtype=torch.long)
    if device is not None and torch.device(device).type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def _packed_key(values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """int64 keys ordered as (value descending, dataset index ascending), for torch.topk.

    The float32's bits, flipped for negatives, order like the floats (the usual radix-sort
    trick); the low 32 bits hold 2**32 - 1 - index, so a smaller index wins a tie, and an empty
    slot (index -1) loses to everything.
    """
    bits = (values.float() + 0.0).view(torch.int32)  # + 0.0 turns -0.0 into 0.0
    ordered = torch.where(bits >= 0, bits, bits ^ 0x7FFFFFFF).to(torch.int64)
    tiebreak = torch.where(indices >= 0, 0xFFFFFFFF - indices, torch.zeros_like(indices))
    return (ordered << 32) | tiebreak


def _stable_argsort(keys: torch.Tensor, descending: bool = False) -> torch.Tensor:
    return torch.sort(keys, dim=1, descending=descending, stable=True).indices


def _then(order: torch.Tensor, keys: torch.Tensor, descending: bool) -> torch.Tensor:
    """Re-sort an existing order by a more significant key, keeping it among equal keys."""
    return order.gather(1, _stable_argsort(keys.gather(1, order), descending))


def layer_units(activations: torch.Tensor, units: Sequence[int] | None) -> torch.Tensor:
    """(B, C, H, W) or (B, C) -> (B, U, H, W) of the selected channels."""
    if activations.ndim == 2:
        activations = activations[:, :, None, None]
    if activations.ndim != 4:
        raise CnnToolError(
            f"top patches need a layer with (batch, channels[, height, width]) "
            f"output, not shape {tuple(activations.shape)}"
        )
    if units is None:
        return activations
    channels = activations.shape[1]
    bad = [u for u in units if not 0 <= u < channels]
    if bad:
        raise CnnToolError(
            f"unit {bad[0]} does not exist: the layer has {channels} channels (0-{channels - 1})"
        )
    return activations[:, list(units)]


class TopPatchConsumer(Consumer):
    """A scan consumer (core.session) folding each batch's `layer` output into a TopK of the
    chosen `units` (None: all channels). `state` continues an earlier scan (resume)."""

    def __init__(
        self,
        layer: str,
        *,
        units: Sequence[int] | None,
        top: int,
        per_image: int = 1,
        state: TopK | None = None,
    ):
        self.layers, self.units, self.top, self.per_image = (layer,), units, top, per_image
        self.state = state
        self._batch = None

    def begin(self, batch) -> None:
        self._batch = batch

    def state_dict(self) -> dict | None:
        """The running TopK's state (None before the first batch): what a rank saves and sends."""
        return None if self.state is None else self.state.state_dict()

    def observe(self, layer: str, output: torch.Tensor) -> None:
        activations = layer_units(output, self.units)
        if self.state is None:
            self.state = TopK(activations.shape[1], self.top, device=activations.device)
        self.state.update(activations, self._batch.indices, self._batch.sizes, self.per_image)


def scan(
    model,
    layer: str,
    batches: Iterable,
    *,
    units: Sequence[int] | None,
    top: int,
    per_image: int = 1,
    state: TopK | None = None,
    device=None,
    on_batch=None,
) -> TopK:
    """Run `model` over `batches` (data.Batch) and keep the top `top` hits per unit.

    The forward stops after `layer`. `state` continues an earlier scan (resume);
    `on_batch(topk, batch)` is called after each batch (progress, checkpoints) and is where a
    caller may save the state.
    """
    consumer = TopPatchConsumer(layer, units=units, top=top, per_image=per_image, state=state)
    feed(
        model,
        batches,
        [consumer],
        device=device,
        on_batch=None if on_batch is None else lambda batch: on_batch(consumer.state, batch),
    )
    return consumer.state


def merged(states: Iterable[dict | None]) -> TopK | None:
    """One TopK from the ranks' `state_dict()`s (None for a rank that read nothing)."""
    parts = [TopK.from_state(s) for s in states if s is not None]
    if not parts:
        return None
    result = parts[0]
    for part in parts[1:]:
        result.merge(part)
    return result


def resumable_top_patches(
    session: ScanSession,
    files,
    layer: str,
    units: Sequence[int] | None,
    field: ReceptiveField | None,
    *,
    listed: str,
    top: int,
    per_image: int,
    resume: bool,
    every: int,
) -> TopPatches | None:
    """The top `top` hits of `layer`'s `units` (None: all; `listed`: as the user listed them, the
    resume state's key) over the session's shard, the state saved every `every` batches in `files`
    (an io.resume.ResumeFiles) and on `resume` continued from there; merged over the ranks
    (collective). The result on rank 0, None on the others and when no image was read."""
    dataset = session.dataset
    key = dict(
        model=session.model.name,
        layer=layer,
        units=listed,
        top=top,
        per_image=per_image,
        data=dataset.name,
        images=len(dataset),
        world=session.shard.world_size,
        **model_settings(session),
    )
    resumable = Resumable(files.state(key, dataset), resume=resume, every=every)
    state = TopK.from_state(resumable.saved["topk"]) if resumable.saved else None
    consumer = TopPatchConsumer(layer, units=units, top=top, per_image=per_image, state=state)
    resumable.run(
        session,
        [consumer],
        f"top patches {layer}",
        lambda: consumer.state and {"topk": consumer.state_dict()},
        resumed=state.seen if state else 0,
    )
    state = merged(session.gather(consumer.state_dict()))
    if not session.is_main or state is None:
        return None
    return top_patches(
        state, layer=layer, units=units, field=field, preprocessing=session.model.preprocessing
    )


# The share of the input's side a patch shows where the receptive field is larger (per axis).
# Where a unit's theoretical field covers (nearly) the whole input, its field box says nothing
# about the hit; what drove the unit is concentrated around the peak (the effective receptive
# field is roughly Gaussian and much smaller than the theoretical one: Luo et al. 2016). We crop
# a fixed window centred on the peak's position rather than thresholding each hit's input
# gradient: it needs no backward pass per hit, depends only on (field, position), so the CLI, the
# microscope and a resumed or sharded scan agree exactly, and it is the same size for every hit.
# Half the side (112 of 224 px) is what the gradient supports: measured on efficientnet_lite0
# `_blocks.15` (field 851 px) over imagenet-samples, a 112-px window centred on the peak holds a
# median 59% of |d activation / d input| (140 px: 73%, 56 px: 16%), while the peak moves by the
# layer's jump (32 px), so units that like different parts of an image show different patches.
PEAK_CROP = 0.5


def patch_input_box(
    field: ReceptiveField | None, position: tuple[int, int], input_size: tuple[int, int]
) -> tuple[int, int, int, int]:
    """What a hit at `position` shows, (y0, x0, y1, x1) in model-input pixels of `input_size`
    (height, width), half-open: the unit's receptive field where it is at most PEAK_CROP of the
    input (it may then reach past the input: zero padding, as R-CNN crops); along an axis where
    the field is larger, a window of PEAK_CROP of the input centred on the field's centre and
    shifted to lie inside the input. Without a local field (None): the whole input."""
    if field is None:
        return 0, 0, input_size[0], input_size[1]
    box = field.input_box(*position)
    edges = []
    for axis in (0, 1):
        start, end, side = box[axis], box[axis + 2], input_size[axis]
        window = max(1, round(side * PEAK_CROP))
        if end - start > window:
            centre = (start + end) / 2
            start = min(max(round(centre - window / 2), 0), side - window)
            end = start + window
        edges.append((start, end))
    return edges[0][0], edges[1][0], edges[0][1], edges[1][1]


def peak_cropped(field: ReceptiveField | None, preprocessing: Preprocessing) -> bool:
    """Whether patches of this field are windows around the peak (`patch_input_box`)."""
    return field is not None and any(
        side > round(full * PEAK_CROP)
        for side, full in zip(field.size, preprocessing.crop, strict=True)
    )


def original_box(
    field: ReceptiveField | None,
    position: tuple[int, int],
    size: tuple[int, int],
    preprocessing: Preprocessing,
) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) in the original image's pixels of the patch of the unit at `position`
    (`patch_input_box`: its receptive field, or at depth a window around the peak).

    Without a local field (None) the unit sees the whole model input. Edges are mapped with
    Preprocessing.to_original and rounded outward so the patch never loses a sliver.
    """
    return _to_original(
        patch_input_box(field, position, tuple(preprocessing.crop)), size, preprocessing
    )


def _to_original(input_box, size, preprocessing: Preprocessing) -> tuple[int, int, int, int]:
    import math

    y0, x0, y1, x1 = input_box
    width, height = size
    left, top = preprocessing.to_original(x0, y0, width, height)
    right, bottom = preprocessing.to_original(x1, y1, width, height)
    # a tiny epsilon keeps exact integers (the common case) from growing by rounding noise
    return (
        math.floor(left + 1e-6),
        math.floor(top + 1e-6),
        math.ceil(right - 1e-6),
        math.ceil(bottom - 1e-6),
    )


def top_patches(
    state: TopK,
    *,
    layer: str,
    units: Sequence[int] | None,
    field: ReceptiveField | None,
    preprocessing: Preprocessing,
) -> TopPatches:
    """The frozen result of a finished (and merged) scan, boxes in original pixels (`units`:
    the channels the state's rows belong to; None: all, in order). Only positive values are
    hits: a ReLU unit that is off (0) or a signed one below zero has not fired, and ties at 0
    would be arbitrary images."""
    units = list(range(state.values.shape[0])) if units is None else units
    values, indices = state.values.cpu().tolist(), state.indices.cpu().tolist()
    positions, sizes = state.positions.cpu().tolist(), state.sizes.cpu().tolist()
    hits = []
    for u, unit in enumerate(units):
        unit_hits = []
        for rank, (value, index) in enumerate(zip(values[u], indices[u], strict=True)):
            if index < 0 or not value > 0:
                break  # fewer images than K, or the rest are not positive (ranks are sorted)
            position = tuple(positions[u][rank])
            shown = patch_input_box(field, position, tuple(preprocessing.crop))
            box = _to_original(shown, tuple(sizes[u][rank]), preprocessing)
            unit_hits.append(Hit(unit, rank, index, value, position, box, shown))
        hits.append(tuple(unit_hits))
    return TopPatches(
        layer=layer, units=tuple(units), top=state.top, hits=tuple(hits), seen=state.seen
    )


def layer_plan(
    model, layer: str, units: str, input_shape
) -> tuple[str, ReceptiveField | None, list[int] | None]:
    """What a scan of `layer` looks at: its module path, its receptive field (None: no local
    one) and the channels a LIST like '0-15,42' chooses (None: all), checked against the
    layer's output."""
    from cnntool.core.layers import resolve_layer
    from cnntool.core.receptive_field import receptive_fields
    from cnntool.core.selection import parse_indices
    from cnntool.tasks.profile import output_shape

    name = resolve_layer(model, layer)[0]
    field = receptive_fields(model, input_shape).get(name)
    shape = output_shape(model, name, input_shape)
    return (
        name,
        field,
        parse_indices(units, shape[1] if shape and len(shape) > 1 else None, what="unit"),
    )


def no_field_warning(model, name: str, input_shape) -> str:
    """The sentence for a layer without a local receptive field, naming where it was lost (a
    global pooling's aten.mean, a flatten and Linear's addmm, a spatial flip…)."""
    from cnntool.core.receptive_field import why_nonlocal

    where = why_nonlocal(model, name, input_shape)
    reason = f"it is lost at {where}" if where else "its output is not a spatial map"
    return (
        f"layer {name} has no local receptive field ({reason}): patches show the whole model input"
    )


def hit_maps(
    module,
    layer: str,
    units: Sequence[int] | None,
    indices: Iterable[int],
    dataset,
    preprocessing: Preprocessing,
    batch_size: int = 16,
) -> dict[int, tuple]:
    """Per dataset index in `indices`: (the model input's pixels (C, H, W) in [0, 1], the
    `units`' spatial activation maps (U, h, w)), float32 numpy: what the overlays draw over the
    whole input. One forward per shown image (the scan keeps only each hit's peak), stopping
    after `layer`; an image that cannot be read any more is left out."""
    from cnntool.core.hooks import capture

    readable = {}
    for index in dict.fromkeys(indices):
        try:
            readable[index], _ = dataset.load_pixels(index, preprocessing)
        except CnnToolError:
            continue
    device = next(module.parameters()).device
    maps: dict[int, tuple] = {}
    order = list(readable)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = torch.stack([preprocessing.normalize(readable[i]) for i in chunk]).to(device)
        with torch.no_grad(), capture(module, [layer], stop_early=True) as cap:
            module(batch)
        out = layer_units(cap.activations[layer], units).float().cpu().numpy()
        maps.update((i, (readable[i].float().numpy(), m)) for i, m in zip(chunk, out, strict=True))
    return maps
