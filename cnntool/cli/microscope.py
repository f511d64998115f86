"""`cnntool microscope MODEL DATA -o SITE/`: the whole network as an offline website.

Thin: one scan session over DATA (tasks.microscope's consumers, resumable, sharded under
torchrun) -> rank 0 turns the merged scan into views, layer by layer, with their pictures ->
io.microscope writes the site.
"""
from __future__ import annotations

import click

from cnntool.cli import console
from cnntool.cli.attack import EpsList
from cnntool.cli.options import data_options, model_options, output_options


@click.command("microscope", epilog="""Examples:

  cnntool microscope lenet5-mnist mnist-5k --limit 2000 -o lenet-site/

  cnntool microscope efficientnet_lite0 photos -o lite0-site/ --no-maximize --units 16

  cnntool microscope my_model.pt --arch resnet18 --classes classes.txt val/ -o site/ --attack 1/255,2/255,4/255

  torchrun --nproc_per_node 2 -m cnntool microscope efficientnet_lite0 imagenet-samples -o site/ --resume
""")
@click.argument("model")
@click.argument("data")
@click.option("-o", "--out", required=True, metavar="SITE",
              help="Folder for the site (index.html, pages, images, JSON) and the resume state.")
@click.option("--layers", metavar="LIST",
              help="Comma-separated layers (paths or aliases) to give pages (default: the first "
                   "convolution, three blocks spread over the depth and the penultimate layer).")
@click.option("--units", default="32", show_default=True, metavar="N|all|LIST",
              help="Units shown per layer: the first N, all, or a list like 0-15,42.")
@click.option("--top", default=9, show_default=True, type=click.IntRange(1), help="Patches per unit (K).")
@click.option("--no-maximize", is_flag=True,
              help="Skip the feature visualizations (the slow part on a CPU).")
@click.option("--steps", type=click.IntRange(1),
              help="Optimization steps per feature visualization (default: visualize maximize's "
                   "for this input: 256 for colour models, 128 for small ones).")
@click.option("--projections", type=click.IntRange(0), default=3, show_default=True, metavar="N",
              help="Guided backprop of each unit on its first N hits (a backward pass each; 0: none).")
@click.option("--attack", "attack_eps", type=EpsList(), metavar="EPS,…",
              help="Add an attack page: FGSM accuracy at each ε (0.007, 2/255, …) over DATA.")
@click.option("--limit", type=click.IntRange(1), metavar="N",
              help="Scan N images spread evenly over DATA (every len/N-th), not the first N: the "
                   "head of a sorted set such as mnist-5k would hold a few classes only.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the map and the visualizations.")
@click.option("--resume", is_flag=True, help="Continue an interrupted scan from its state in SITE.")
@click.option("--checkpoint-every", default=20, show_default=True, type=click.IntRange(1),
              help="Save the resume state every N batches.")
@model_options
@data_options
@output_options
def microscope_command(model, data, out, layers, units, top, no_maximize, steps, projections,
                       attack_eps, limit, seed, resume, checkpoint_every, model_request, scan):
    """Build one static site that opens from file:// and shows what MODEL has learned on DATA.

    One pass over DATA measures, for every chosen layer at once: each unit's top-K patches
    (cropped to its receptive field), diagnose's statistics (dead, constant, saturated and
    correlated units), each unit's activation histogram, the penultimate features (for the
    t-SNE map) and the predictions (accuracy when DATA is labelled). Then, per layer: feature
    visualizations (batched; --no-maximize skips them), guided backprop of each unit on its
    hits, the classes a unit votes for where it feeds the classifier. Under torchrun each rank
    scans a shard and rank 0 writes. One JSON record on stdout (the site's summary)."""
    from cnntool.cli.followups import Commands, spelled_model
    from cnntool.cli.session import dataset_scan, finish
    from cnntool.core.selection import parse_ranges
    from cnntool.tasks.microscope import plan as make_plan

    from pathlib import Path

    from cnntool.errors import CnnToolError

    if Path(out).exists() and not Path(out).is_dir():
        raise CnnToolError(f"-o {out} is a file; the site needs a folder")
    if not units.strip().isdigit():
        parse_ranges(units, "unit")  # a malformed list fails before the model loads
    names = [n.strip() for n in layers.split(",") if n.strip()] if layers else None
    from cnntool.io.resume import ScanLock

    with dataset_scan(model, model_request, data, scan) as session, _Scratch() as scratch, \
            ScanLock(_state_names(out, session)[1]):  # no other run scans into SITE meanwhile
        session.dataset = session.dataset.spread(limit)  # before any batch is read
        plan = make_plan(session.module, session.model.input_shape, layers=names, units=units, top=top)
        console.info("layers: " + ", ".join(f"{layer.name} ({len(layer.units)} of {layer.channels} units)"
                                            for layer in plan.layers))
        result = _scan(session, plan, out, resume, checkpoint_every, scratch)
        report = finish(session)  # of the one pass (the attack reads the same images again)
        attacked = _attack(session, sorted(set(attack_eps))) if attack_eps else None
        if session.is_main:
            _site(session, plan, result, attacked, report, out, maximize=not no_maximize, steps=steps,
                  projections=projections, seed=seed,
                  commands=Commands(spelled_model(model, model_request), data))
        _cleanup(out, session)


class _Scratch:
    """A temporary folder for rank 0's merged features (a memory map read until the end)."""

    def __enter__(self):
        import tempfile

        self._folder = tempfile.TemporaryDirectory(prefix="cnntool-microscope-")
        return self._folder.name

    def __exit__(self, *exc):
        self._folder.cleanup()


def _state_names(out, session):
    from pathlib import Path

    suffix = f".rank{session.shard.rank}" if session.shard.distributed else ""
    folder = Path(out)
    return (folder / f".microscope-state{suffix}.pt", folder / f".microscope{suffix}.lock",
            folder / f".microscope-features{suffix}.f32")


def _scan(session, plan, out, resume, checkpoint_every, scratch):
    """The one pass (resumable); the merged result on rank 0, None on the others."""
    from cnntool.io.resume import StateFile, dataset_fingerprint
    from cnntool.tasks.features import FeatureSpool
    from cnntool.tasks.microscope import BINS, KeptSpool, MicroscopeScan
    from cnntool.tasks.top_patches import resume_position

    loaded, dataset, shard = session.model, session.dataset, session.shard
    state_path, _, spool_path = _state_names(out, session)
    key = dict(model=loaded.name, layers=[[layer.name, list(layer.units)] for layer in plan.layers],
               top=plan.top, penultimate=plan.penultimate, bins=BINS, data=dataset.name,
               images=len(dataset), world=shard.world_size)
    state_file = StateFile(state_path.parent, state_path.name, key, dataset_fingerprint(dataset))
    saved = state_file.load() if resume else None
    if resume and saved is None:
        console.warn(f"no state file {state_file.path}: starting from the beginning")
    scanned = MicroscopeScan(plan, loaded, dataset, KeptSpool(spool_path, saved and saved["scan"]["spool"]),
                             state=saved and saved["scan"])
    start = int(saved["next"]) if saved else 0
    if saved:
        console.info(f"resuming after {start} images")
        session.read += scanned.images()
    batches = [0]

    def checkpoint(batch):
        batches[0] += 1
        if batches[0] % checkpoint_every == 0:
            state_file.save({"scan": scanned.state_dict(), "next": resume_position(
                batch.indices[-1], shard.rank, shard.world_size)})

    session.run(scanned.consumers, f"microscope {loaded.name}", start=start, on_batch=checkpoint)
    if batches[0]:  # the whole shard is in: a failure later resumes without scanning again
        state_file.save({"scan": scanned.state_dict(), "next": session.count()})
    return scanned.merge(session, FeatureSpool(scratch) if session.is_main else None)


def _attack(session, eps):
    """The FGSM sweep over DATA ([0, 1] pixels; a second pass: it needs input gradients)."""
    from cnntool.tasks.microscope import FgsmSweep, merged_attack

    sweep = FgsmSweep(session.model, session.dataset, eps)
    session.run([sweep], f"FGSM at {len(eps)} ε", normalize=False)
    parts = session.gather(sweep.part())
    return merged_attack(parts, eps) if session.is_main else None


def _site(session, plan, result, attacked, report, out, *, maximize, steps, projections, seed, commands):
    """Rank 0: views layer by layer with their pictures, the map, then every page."""
    from cnntool.io.microscope import MicroscopeSite
    from cnntool.io.site import DataCard
    from cnntool.tasks.microscope import (diagnosis, embedding, layer_view, project_hits,
                                          visualization_steps, visualize_units)

    loaded, dataset, module = session.model, session.dataset, session.module
    found = diagnosis(module, plan, result, commands)
    measured = {layer.point.module: layer for layer in found.layers}
    site = MicroscopeSite(out, loaded, dataset)
    for layer in plan.layers:
        view = layer_view(module, loaded, plan, layer, result, measured.get(layer.name))
        pictures = None
        if maximize:
            total = visualization_steps(loaded.preprocessing, steps, len(layer.units))
            with console.progress(f"visualize {layer.name}", total) as advance:
                pictures = visualize_units(module, loaded.preprocessing, layer.name, layer.units,
                                           steps=steps, seed=seed, progress=advance)
        inputs: dict = {}

        def project(hits, _layer=layer):
            shown = project_hits(module, loaded.preprocessing, dataset, _layer, hits[:projections], inputs)
            return shown + [None] * (len(hits) - len(shown))

        with console.progress(f"pages of {layer.name}", len(view.units)) as advance:
            site.add_layer(view, project=project if projections else None, visualizations=pictures,
                           progress=advance)
    mapped = embedding(result, plan.penultimate, seed=seed)
    for note in mapped.notes if mapped else ():
        console.warn(note)
    names = loaded.class_names or [str(i) for i in range(plan.classifier.output_shape[0] if plan.classifier else 0)]
    predictions = result.predictions
    written = site.finish(
        plan=plan, findings=found.findings,
        data=DataCard(name=dataset.name, images=report.read, skipped=len(report.skipped),
                      labelled=predictions.labelled, accuracy=predictions.accuracy),
        embedding=site.embedding(mapped, predictions, names) if mapped else None,
        attack=site.attack(attacked) if attacked else None)
    if site.lost:
        console.warn(f"{len(site.lost)} patch(es) left out: their image could not be read any more, "
                     f"e.g. {site.lost[0]}")
    _summary(out, written, plan)


def _summary(out, site, plan) -> None:
    from pathlib import Path

    from cnntool.io.records import write_records

    index = Path(out) / "index.html"
    data = site.data
    write_records([{"site": str(index), "model": site.model.name, "data": data.name,
                    "images": data.images, "skipped": data.skipped, "accuracy": data.accuracy,
                    "layers": [layer.name for layer in plan.layers],
                    "units": sum(len(layer.units) for layer in plan.layers),
                    "findings": len(site.findings), "map": site.embedding is not None,
                    "attack": site.attack is not None}], "jsonl")
    console.info(f"open {index.resolve().as_uri()}")


def _cleanup(out, session) -> None:
    """Every rank removes its own resume state and features once the site is written."""
    state, _, spool = _state_names(out, session)
    state.unlink(missing_ok=True)
    spool.unlink(missing_ok=True)
