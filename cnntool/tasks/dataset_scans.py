"""One call per dataset analysis, for Python users, with the CLI's names and defaults:

    import cnntool
    model = cnntool.load_model("lenet5-mnist")
    features = cnntool.features(model, "mnist-5k", layer="relu3")            # a FeatureSet
    patches = cnntool.top_patches(model, "mnist-5k", layer="conv2", units=range(8))
    diagnosis = cnntool.diagnose(model, "mnist-5k", limit=1000)
    images, summaries = cnntool.attack_dataset(model, "mnist-5k", "fgsm", eps=[0.1, 0.3])
    cka = cnntool.compare(model, "lenet5-mnist-adv", "mnist-5k")                # a CkaResult

MODEL is a LoadedModel or a spec string (loaded with `cnntool.load_model`); DATA is a DataSet or
a DATA spec. Each runs one scan session (core.session): under torchrun every rank scans its
shard and gets the merged result. Unreadable images are skipped; `ScanReport`s are not
returned here (the CLI prints them), but a scan that reads nothing raises DataError.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np

from cnntool.core.data import DataSet, open_data
from cnntool.core.featureset import FeatureSet
from cnntool.core.scan_options import ScanOptions
from cnntool.core.session import ScanSession


@contextlib.contextmanager
def _session(
    model, data, *, batch_size: int, workers: int | None, limit: int | None = None
) -> Iterator[ScanSession]:
    from cnntool.core.loading.models import LoadedModel, load_model

    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    dataset = data if isinstance(data, DataSet) else open_data(data)
    with ScanSession.open(
        loaded, dataset.spread(limit), batch_size=batch_size, workers=workers
    ) as session:
        yield session


def features(
    model,
    data,
    layer: str = "penultimate",
    pooling: str = "avg",
    *,
    batch_size: int = ScanOptions.batch_size,
    workers: int | None = ScanOptions.workers,
) -> FeatureSet:
    """A layer's features for every readable image of DATA (in memory; `cnntool features`
    streams them to an .npz instead)."""
    from cnntool.tasks.features import spooled_features

    with (
        _session(model, data, batch_size=batch_size, workers=workers) as session,
        spooled_features(session, layer, pooling) as found,
    ):
        session.finish()
        rows = found[0] if found else None
        shared = session.gather(
            None
            if rows is None
            else FeatureSet(
                np.array(rows.features),
                rows.paths,
                rows.labels,
                rows.label_names,
                rows.model,
                rows.layer,
                rows.pooling,
            )
        )
    return shared[0]


def top_patches(
    model,
    data,
    layer: str,
    units: Sequence[int] | None = tuple(range(16)),
    *,
    top: int = 9,
    per_image: int = 1,
    batch_size: int = ScanOptions.batch_size,
    workers: int | None = ScanOptions.workers,
):
    """The `top` dataset patches that most excite each unit of `layer` (None: every unit),
    with boxes in original pixels (a TopPatches; crop them with
    `DataSet.load(hit.index).crop(hit.box)`)."""
    from cnntool.core.layers import resolve_layer
    from cnntool.core.receptive_field import receptive_fields
    from cnntool.tasks.top_patches import TopPatchConsumer, merged
    from cnntool.tasks.top_patches import top_patches as frozen

    units = None if units is None else list(units)
    with _session(model, data, batch_size=batch_size, workers=workers) as session:
        name = resolve_layer(session.module, layer)[0]
        consumer = TopPatchConsumer(name, units=units, top=top, per_image=per_image)
        session.run([consumer], f"top patches {name}")
        state = merged(session.gather(consumer.state.state_dict() if consumer.state else None))
        session.finish()
        field = receptive_fields(session.module, session.model.input_shape).get(name)
        chosen = units if units is not None else list(range(state.values.shape[0]))
        return frozen(
            state, layer=name, units=chosen, field=field, preprocessing=session.model.preprocessing
        )


def diagnose(
    model,
    data,
    layers: Sequence[str] | None = None,
    *,
    limit: int | None = None,
    correlation: bool = True,
    batch_size: int = ScanOptions.batch_size,
    workers: int | None = ScanOptions.workers,
):
    """`cnntool diagnose`'s Diagnosis of MODEL over DATA (first `limit` images): unit
    statistics, filter health and findings (whose `command` is None: no CLI here)."""
    from cnntool.tasks.diagnose import StatsConsumer, default_points, merge_states, named_points
    from cnntool.tasks.diagnose import diagnose as judge

    with _session(model, data, batch_size=batch_size, workers=workers, limit=limit) as session:
        module = session.module
        points = named_points(module, list(layers)) if layers else default_points(module)
        stats = StatsConsumer(points, correlation=correlation)
        session.run([stats], f"diagnose {len(points)} layers")
        parts = session.gather({name: s.state_dict() for name, s in stats.states.items()})
        session.finish()
        return judge(module, points, merge_states(parts), _NoCommands())


def compare(
    model_a,
    model_b,
    data,
    layers_a: Sequence[str] | None = None,
    layers_b: Sequence[str] | None = None,
    *,
    kernels: Sequence[str] = ("linear", "rbf"),
    minibatch: int = 256,
    pool: str | int = "auto",
    rbf_sigma: float = 1.0,
    limit: int | None = None,
    batch_size: int = 32,
    workers: int | None = None,
):
    """`cnntool compare`'s minibatch CKA (a tasks.compare.CkaResult) between every layer of
    MODEL_A and every layer of MODEL_B over DATA (`model_b` None: MODEL_A against itself);
    layers None: the default ones."""
    from cnntool.core.loading.models import LoadedModel, load_model
    from cnntool.tasks.compare import CompareSettings, plan_sides, second_session
    from cnntool.tasks.compare import compare as scan_cka

    settings = CompareSettings(tuple(kernels), minibatch, pool, rbf_sigma)
    with _session(model_a, data, batch_size=batch_size, workers=workers, limit=limit) as session:
        other = None
        if model_b is not None:
            loaded = model_b if isinstance(model_b, LoadedModel) else load_model(model_b)
            other = second_session(session, loaded)
        names = (session.model.name, (other or session).model.name)
        rows, columns = plan_sides(session, other, layers_a, layers_b, pool, names)
        result = scan_cka(session, other, rows, columns, settings)
        session.finish()
    return result


class _NoCommands:
    """Follow-up commands are a CLI matter: none in Python."""

    def __getattr__(self, _name):
        return lambda *args, **kwargs: None


def attack_dataset(
    model,
    data,
    method: str = "fgsm",
    eps: float | Sequence[float] = 8 / 255,
    *,
    target: str | int | None = None,
    steps: int = 10,
    step_size: float | None = None,
    norm: str = "linf",
    random_start: bool = True,
    seed: int = 0,
    batch_size: int = ScanOptions.batch_size,
    workers: int | None = ScanOptions.workers,
):
    """Attack every readable image of DATA at each ε (pixel units): (the AttackedImages in
    dataset order, one AttackSummary per ε). `method` is fgsm, bim or pgd; `target` a class
    index or name, or 'least-likely'."""
    from cnntool.tasks.attack import attack_method, run_attack

    eps_values = [eps] if isinstance(eps, (int, float)) else list(eps)
    attack = attack_method(
        method, eps_values, steps=steps, step_size=step_size, norm=norm, random_start=random_start
    )
    with _session(model, data, batch_size=batch_size, workers=workers) as session:
        run = run_attack(
            session,
            attack,
            eps_values,
            target,
            title=f"{method} {session.model.name}",
            seed=seed if method == "pgd" else None,
            keep=lambda image, _fields: image,
            prepare=False,
        )
        session.finish()
    return run.kept, run.summaries
