"""diagnose over a scan session (core.session): the measure points asked for, the one pass that
measures them on every rank, merged on rank 0, and the gradient check and model size for the
findings."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from cnntool.core.loading.exported import untyped_layers_hint
from cnntool.core.session import ScanSession
from cnntool.errors import CnnToolError
from cnntool.tasks.diagnose.points import MeasurePoint, default_points, named_points
from cnntool.tasks.diagnose.stats import RunningStats
from cnntool.tasks.diagnose.stats_consumer import StatsConsumer


def measure_points(
    module: nn.Module, names: Sequence[str] | None, model: str = "the model"
) -> list[MeasurePoint]:
    """The points at `names` (layer paths or aliases), or by default every conv/linear layer but
    the logits at the activation that follows it; an error when there are none."""
    points = named_points(module, list(names)) if names else default_points(module)
    if not points:
        raise CnnToolError(
            f"{model} has no convolution or linear layer before "
            "its logits; name the layers to measure with --layers" + untyped_layers_hint(module)
        )
    return points


def measure(
    session: ScanSession, names: Sequence[str] | None = None, *, correlation: bool = True
) -> tuple[list[MeasurePoint], dict[str, RunningStats] | None]:
    """The measure points (`measure_points`), and one pass over this rank's shard: every rank's
    statistics merged on rank 0 (collective; None on the other ranks)."""
    from cnntool.tasks.diagnose import merge_states

    points = measure_points(session.module, names, session.model.name)
    stats = StatsConsumer(points, correlation=correlation)
    session.run([stats], f"diagnose {len(points)} layers")
    parts = session.gather({name: s.state_dict() for name, s in stats.states.items()})
    return points, merge_states(parts) if session.is_main else None


def gradient_check(module: nn.Module, input_shape: Sequence[int], progress: Callable):
    """tasks.gradcheck over the whole model, with a bar: `progress(title, None)` gives
    `advance(n)`."""
    from cnntool.tasks.gradcheck import gradcheck

    with progress("checking gradients", None) as advance:
        return gradcheck(module, input_shape, progress=lambda _result: advance(1))


def model_size(module: nn.Module, input_shape: Sequence[int]) -> tuple[int, int] | None:
    """(params, MACs per image), or None when the model cannot be counted."""
    from cnntool.tasks.profile import profile

    try:
        counted = profile(module, input_shape)
    except CnnToolError:
        return None
    return counted.total.params, counted.total.macs
