"""One pass over a dataset that folds every measure point's output into its RunningStats.

The statistics are taken inside the forward hooks (core.session feeds the consumer through
core.hooks.observe), so a layer's activations are consumed as soon as it has run and freed with
the rest of the forward's intermediates: no clone, no copy of all layers kept per batch, and an
in-place op later in the network cannot overwrite them first. A module called several times in
one forward is measured at its first call (see points.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from cnntool.core.data import Batch
from cnntool.core.device import device_of
from cnntool.core.hooks import preserved_state
from cnntool.core.session import Consumer, feed
from cnntool.errors import CnnToolError
from cnntool.tasks.diagnose.points import MeasurePoint
from cnntool.tasks.diagnose.stats import RunningStats


class StatsConsumer(Consumer):
    """A scan consumer that keeps the RunningStats of every measure point, by module path."""

    # The whole forward runs (no early stop after the last point): a model is diagnosed as it
    # really runs, so a failure after the measured layers is reported, not hidden.
    needs_output = True

    def __init__(
        self,
        points: Sequence[MeasurePoint],
        *,
        correlation: bool = True,
        states: dict[str, RunningStats] | None = None,
    ):
        self.points = {p.module: p for p in points}
        self.layers = tuple(self.points)
        self.correlation = correlation
        self.states = {} if states is None else states

    def observe(self, layer: str, output: torch.Tensor) -> None:
        if output.dim() < 2:
            raise CnnToolError(
                f"layer '{layer}' does not return a (batch, units, …) tensor, so "
                "it has no units to diagnose; pick another with --layers"
            )
        state = self.states.get(layer)
        if state is None:
            state = self.states[layer] = RunningStats(
                output.shape[1],
                output.device,
                bounds=self.points[layer].activation.bounds,
                correlation=None if self.correlation else False,
            )
        state.update(output)


def scan(
    model: nn.Module,
    points: Sequence[MeasurePoint],
    batches: Iterable,
    *,
    device=None,
    states: dict[str, RunningStats] | None = None,
    correlation: bool = True,
    on_batch: Callable[[object], None] | None = None,
) -> dict[str, RunningStats]:
    """Run `model` (eval mode, no grad) on each batch (a `Batch` or a tensor) and return the
    running statistics per measured module path. Points that never ran are missing.
    `correlation=False` keeps variances but not the C×C co-moments (C² multiply-adds per
    position in float64: on EfficientNet-Lite0 about 5× the model's own multiply-adds)."""
    consumer = StatsConsumer(points, correlation=correlation, states=states)
    model_device = device if device is not None else device_of(model)
    batches = (
        b if isinstance(b, Batch) else Batch(indices=[], inputs=b, sizes=[]) for b in batches
    )
    with preserved_state(model):
        model.eval()
        feed(model, batches, [consumer], device=model_device, on_batch=on_batch)
    return consumer.states
