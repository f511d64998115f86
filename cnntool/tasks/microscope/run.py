"""The microscope's steps over a scan session (core.session), in the order the command runs them:
the one resumable pass (`resumable_scan`), the optional FGSM sweep (`fgsm_sweep`), then on rank 0
each
layer's view with its pictures (`layer_views`) and the labels of the map (`map_labels`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from cnntool.core.session import ScanSession
from cnntool.tasks.features import FeatureSpool
from cnntool.tasks.microscope.analysis import LayerView, layer_view
from cnntool.tasks.microscope.attack import AttackView, FgsmSweep, merged
from cnntool.tasks.microscope.data_pass import KeptSpool, MicroscopeScan, ScanResult
from cnntool.tasks.microscope.histogram import BINS
from cnntool.tasks.microscope.pictures import (
    checked,
    project_hits,
    visualization_steps,
    visualize_units,
)
from cnntool.tasks.microscope.plan import MicroscopePlan
from cnntool.tasks.resumable import Resumable, model_settings


def resume_key(plan: MicroscopePlan, session: ScanSession) -> dict:
    """What a saved state must match to be resumed: the model (its weights, preprocessing,
    precision, BatchNorm folding: tasks.resumable.model_settings; its class names, which the
    labels are mapped onto), layers, units, data and world."""
    dataset = session.dataset
    return dict(
        model=session.model.name,
        layers=[[layer.name, list(layer.units)] for layer in plan.layers],
        top=plan.top,
        penultimate=plan.penultimate,
        bins=BINS,
        data=dataset.name,
        images=len(dataset),
        world=session.shard.world_size,
        **model_settings(session),
        class_names=session.model.class_names,
    )


def resumable_scan(
    session: ScanSession, plan: MicroscopePlan, files, scratch: str, *, resume: bool, every: int
) -> ScanResult | None:
    """The one pass, saved every `every` batches in `files` (an io.resume.ResumeFiles: the state,
    and the penultimate features' spool), and on `resume` continued from there; the merged
    result on rank 0 (its features in a spool in `scratch`), None on the others."""
    resumable = Resumable(
        files.state(resume_key(plan, session), session.dataset), resume=resume, every=every
    )
    saved = resumable.saved and resumable.saved["scan"]
    scanned = MicroscopeScan(
        plan,
        session.model,
        session.dataset,
        KeptSpool(files.path("features.f32"), saved and saved["spool"]),
        state=saved,
    )
    resumable.run(
        session,
        scanned.consumers,
        f"microscope {session.model.name}",
        lambda: {"scan": scanned.state_dict()},
        resumed=scanned.images() if saved else 0,
    )
    return scanned.merge(session, FeatureSpool(scratch) if session.is_main else None)


def fgsm_sweep(session: ScanSession, eps) -> AttackView | None:
    """FGSM accuracy at each ε over DATA ([0, 1] pixels; a second pass: it needs input
    gradients); merged on rank 0, None on the others."""
    sweep = FgsmSweep(session.model, session.dataset, eps)
    session.run([sweep], f"FGSM at {len(eps)} ε", normalize=False)
    parts = session.gather(sweep.part())
    return merged(parts, eps) if session.is_main else None


def layer_views(
    session: ScanSession,
    plan: MicroscopePlan,
    result: ScanResult,
    found,
    *,
    maximize: bool,
    steps: int | None,
    projections: int,
    seed: int,
    progress: Callable,
    config=None,
) -> Iterator[tuple[LayerView, list | None, Callable | None]]:
    """Per layer (rank 0, one at a time so that only one layer's pictures are held): its view,
    its units' feature visualizations (None without `maximize`; all the layer's units in one
    batch, with `config`, a tasks.maximize.MaximizeConfig, None: pictures.visualization_config,
    on the model prepared as for a scan: BatchNorm folded but for the layer's own, channels-last
    where it pays) and `project(hits)`, the guided backprop of the first `projections` hits
    (None when 0). `progress(title, total)` is a context manager giving `advance(n)`, as for
    core.session: one bar per layer."""
    loaded, module = session.model, session.module
    measured = {layer.point.module: layer for layer in found.layers}
    for layer in plan.layers:
        view = layer_view(module, loaded, plan, layer, result, measured.get(layer.name))
        pictures = None
        if maximize:
            total = visualization_steps(loaded.preprocessing, steps, len(layer.units), config)
            with (
                progress(f"visualize {layer.name}", total) as advance,
                session.prepared(needs_grad=True, keep=[layer.name]),
            ):
                pictures = visualize_units(
                    module,
                    loaded.preprocessing,
                    layer.name,
                    layer.units,
                    steps=steps,
                    seed=seed,
                    config=config,
                    progress=advance,
                )
            pictures = checked(pictures, view.units)
        inputs: dict = {}

        def project(hits, _layer=layer, _inputs=inputs):
            shown = project_hits(
                module, loaded.preprocessing, session.dataset, _layer, hits[:projections], _inputs
            )
            return shown + [None] * (len(hits) - len(shown))

        yield view, pictures, project if projections else None


def map_labels(loaded, plan: MicroscopePlan) -> list[str]:
    """The class names the map's points are labelled with (indices when the model has none)."""
    classes = plan.classifier.output_shape[0] if plan.classifier else 0
    return loaded.class_names or [str(i) for i in range(classes)]
