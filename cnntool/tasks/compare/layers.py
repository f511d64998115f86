"""Which layers `compare` takes, and how each layer's output becomes one row per image.

Default layers: the first convolution at its activation, the model's main blocks (core.layers.
main_blocks: ResNet's `layerK.N`, EfficientNet's `_blocks.N`, MobileNet's `features.N`) and the
penultimate layer; in a model without such blocks (LeNet, VGG), every conv/linear layer at the
activation that follows it (diagnose's measure points); then the logits. At most
MAX_DEFAULT_LAYERS, spread over the depth.

Rows: CKA compares the whole representation, so a map (C, H, W) is flattened to C·H·W values
per image (Kornblith et al. 2019). A minibatch of a large early map is big (256 images of
ResNet's 256×56×56 are 820 MB of float32), so `--pool` averages large maps over a coarser
spatial grid first:
- auto (default): a map of at most POOL_BUDGET values is kept whole; a larger one is
  average-pooled (adaptive, as torch's adaptive_avg_pool2d) to the largest square grid g×g
  with C·g·g ≤ POOL_BUDGET (1×1, the global average, when C alone exceeds it);
- G: every map larger than G×G is pooled to G×G;
- none: every map kept whole.
Vectors (B, D) are kept as they are; other shapes are flattened.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from cnntool.core.layers import layer_aliases, main_blocks, resolve_layer
from cnntool.errors import CnnToolError

POOL_BUDGET = 32768  # values per image of one layer: 32 MiB of float32 per 256-image minibatch
MAX_DEFAULT_LAYERS = 24  # a heat map whose values can still be read


@dataclass(frozen=True)
class LayerRows:
    """How one layer's output becomes one row per image: `shape` is one image's output, `grid`
    the (H, W) it is average-pooled to (None: flattened as it is)."""

    name: str
    shape: tuple[int, ...]
    grid: tuple[int, int] | None = None

    @property
    def width(self) -> int:
        """Values per image."""
        if self.grid is not None:
            return self.shape[0] * self.grid[0] * self.grid[1]
        return math.prod(self.shape)

    def describe(self) -> str:
        """'relu1 32×28×28, flattened (25,088 values)' or 'layer1.0 256×56×56, average-pooled
        to 256×11×11 (30,976 values)'."""
        shape = "×".join(map(str, self.shape))
        if self.grid is None:
            how = "flattened" if len(self.shape) > 1 else "as it is"
        else:
            how = f"average-pooled to {self.shape[0]}×{self.grid[0]}×{self.grid[1]}"
        return f"{self.name} {shape}, {how} ({self.width:,} values)"

    def write(self, rows: torch.Tensor, output: torch.Tensor) -> None:
        """Copy a batch's `output` (B, *shape) into `rows` (B, width, contiguous float32): pooled
        first where `grid` says, else in one copy whatever the output's layout and dtype (the
        output may be overwritten in place later, so nothing of it is kept)."""
        x = output.detach()
        if tuple(x.shape[1:]) != self.shape:
            raise CnnToolError(
                f"layer '{self.name}' gave shape {tuple(x.shape[1:])} for some images and "
                f"{self.shape} for others"
            )
        if self.grid is not None:
            x = torch.nn.functional.adaptive_avg_pool2d(x, self.grid)
        rows.view(x.shape).copy_(x)


def layer_rows(name: str, shape: Sequence[int], pool: str | int = "auto") -> LayerRows:
    """The LayerRows of a layer whose output for one image has `shape` (see the docstring)."""
    shape = tuple(int(v) for v in shape)
    if len(shape) != 3 or pool == "none":
        return LayerRows(name, shape)
    channels, height, width = shape
    if pool == "auto":
        if channels * height * width <= POOL_BUDGET:
            return LayerRows(name, shape)
        side = max(1, math.isqrt(POOL_BUDGET // channels))
    else:
        side = int(pool)
    grid = (min(side, height), min(side, width))
    return LayerRows(name, shape, None if grid == (height, width) else grid)


def default_layers(module) -> list[str]:
    """The layers compared when none are named (see the docstring)."""
    from cnntool.tasks.diagnose.points import default_points

    points = [point.module for point in default_points(module)]
    aliases = layer_aliases(module)
    blocks = main_blocks(module)
    if blocks:
        first, last = points[:1], [aliases.get("penultimate")]
        # a layer inside a block (MobileNet's features.0.2) gives that block's output: once
        chosen = [
            name
            for name in first + blocks + last
            if name in blocks or not any(str(name).startswith(b + ".") for b in blocks)
        ]
    else:
        chosen = points + [aliases.get("penultimate")]
    chosen = list(dict.fromkeys(name for name in [*chosen, aliases.get("logits")] if name))
    if not chosen:
        raise CnnToolError(
            "the model has no convolution, linear layer or blocks to compare; name the layers "
            "with --layers"
        )
    return spread(chosen, MAX_DEFAULT_LAYERS)


def spread(names: Sequence[str], count: int) -> list[str]:
    """`count` names evenly spaced through `names`, the first and the last included."""
    if len(names) <= count:
        return list(names)
    picks = sorted({round(k * (len(names) - 1) / (count - 1)) for k in range(count)})
    return [names[i] for i in picks]


def resolved_layers(module, names: Sequence[str] | None) -> list[str]:
    """Module paths of the named layers (paths or aliases), or the default ones."""
    if not names:
        return default_layers(module)
    paths = [resolve_layer(module, name)[0] for name in names]
    twice = sorted({p for p in paths if paths.count(p) > 1})
    if twice:
        raise CnnToolError(f"layer {twice[0]} is named twice; name each layer once")
    return paths


def output_shapes(loaded, names: Sequence[str], what: str) -> dict[str, tuple[int, ...]]:
    """One image's output shape at each named layer, from one forward pass of a zero input
    (preprocessing crops every image to the model's input, so every image gives these). A layer
    that does not run is an error naming `what` (the model as the user named it)."""
    from cnntool.core.hooks import observe

    shapes: dict[str, tuple[int, ...]] = {}

    def keeper(name: str) -> Callable[[torch.Tensor], None]:
        return lambda output: shapes.setdefault(name, tuple(output.shape[1:]))

    zero = torch.zeros((1, *loaded.input_shape), device=loaded.device)
    with (
        torch.no_grad(),
        observe(loaded.module, {n: [keeper(n)] for n in names}, stop_early=True) as observer,
    ):
        loaded.module.eval()  # observe puts the training flags back
        observer.run(zero)
    flat = [name for name in names if name in shapes and not shapes[name]]
    if flat:
        raise CnnToolError(
            f"layer {flat[0]} of {what} gives one value per batch, not per image; "
            "pick another layer"
        )
    missing = [name for name in names if name not in shapes]
    if missing:
        raise CnnToolError(
            f"layer {missing[0]} of {what} does not run in its forward pass; pick another layer"
        )
    return shapes
