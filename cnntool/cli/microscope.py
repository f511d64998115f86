"""`cnntool microscope MODEL DATA -o SITE/`: one resumable scan session (tasks.microscope.run) ->
on rank 0, views layer by layer with their pictures -> io.microscope writes the site."""

from __future__ import annotations

import click

from cnntool.cli import console
from cnntool.cli.options import (
    eps_values,
    limit_option,
    model_and_data,
    names_option,
    shared_options,
)


@click.command(
    "microscope",
    epilog="""Examples:

\b
  cnntool microscope lenet5-mnist mnist-5k --limit 2000 -o lenet-site/
  cnntool microscope efficientnet_lite0 photos -o lite0-site/ --no-maximize --units 16
  cnntool microscope my_model.pt --arch resnet18 --classes classes.txt val/ -o site/ \\
      --attack 1/255,2/255,4/255
  torchrun --nproc_per_node 2 -m cnntool microscope efficientnet_lite0 imagenet-samples -o site/ \\
      --resume
""",
)
@model_and_data
@click.option(
    "-o",
    "--out",
    required=True,
    metavar="SITE",
    help="Folder for the site (index.html, pages, images, JSON) and the resume state.",
)
@click.option(
    "--layers",
    metavar="LIST",
    callback=names_option,
    help="Comma-separated layers (paths or aliases) to give pages (default: the first conv, "
    "three blocks spread over the depth, the penultimate layer).",
)
@click.option(
    "--units",
    default="32",
    show_default=True,
    metavar="N|all|LIST",
    help="Units shown per layer: the first N, all, or a list like 0-15,42.",
)
@click.option(
    "--top", default=9, show_default=True, type=click.IntRange(1), help="Patches per unit (K)."
)
@click.option(
    "--no-maximize", is_flag=True, help="Skip the feature visualizations (slow on a CPU)."
)
@click.option(
    "--steps",
    type=click.IntRange(1),
    help="Steps per feature visualization (default: 64 for colour models' thumbnails, 256 "
    "with --full-maximize, 128 for small inputs).",
)
@click.option(
    "--full-maximize",
    is_flag=True,
    help="Feature visualizations with `visualize maximize`'s default recipe (colour models: "
    "the model's input size, 256 steps, about 10× slower) instead of the 128-px, 64-step "
    "thumbnails.",
)
@click.option(
    "--projections",
    type=click.IntRange(0),
    default=3,
    show_default=True,
    metavar="N",
    help="Guided backprop of each unit on its first N hits (a backward pass each; 0: none).",
)
@click.option(
    "--attack",
    "attack_eps",
    callback=eps_values(),
    metavar="EPS,…",
    help="Add an attack page: FGSM accuracy at each ε (0.007, 2/255, …) over DATA.",
)
@limit_option
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the map and the visualizations."
)
@click.option("--resume", is_flag=True, help="Continue an interrupted scan from its state in SITE.")
@click.option(
    "--checkpoint-every",
    default=20,
    show_default=True,
    type=click.IntRange(1),
    help="Save the resume state every N batches.",
)
@shared_options()
def microscope_command(
    model,
    data,
    out,
    layers,
    units,
    top,
    no_maximize,
    steps,
    full_maximize,
    projections,
    attack_eps,
    limit,
    seed,
    resume,
    checkpoint_every,
    model_request,
    scan,
):
    """Build one static site that opens from file:// and shows what MODEL has learned on DATA.

    One pass over DATA measures, for every chosen layer: each unit's top-K patches (cropped to its
    receptive field), diagnose's statistics, activation histograms, the penultimate features (the
    t-SNE map) and the predictions. Then per layer: feature visualizations, guided backprop of the
    hits, the classes a unit votes for. Under torchrun each rank scans a shard and rank 0 writes.
    One JSON record on stdout (the site's summary)."""
    import tempfile

    from cnntool.cli.dataset_scan import dataset_scan, finish, say_labels
    from cnntool.cli.followups import Commands, spelled_model
    from cnntool.core.selection import parse_ranges
    from cnntool.io.microscope import check_site_folder
    from cnntool.io.resume import ResumeFiles
    from cnntool.tasks.microscope import plan as make_plan
    from cnntool.tasks.microscope.run import fgsm_sweep, resumable_scan

    check_site_folder(out)
    if not units.strip().isdigit():
        parse_ranges(units, "unit")  # a malformed list fails before the model loads
    # SITE is locked (one run at a time, whatever the launch mode) for the whole scan
    with (
        dataset_scan(model, model_request, data, scan, limit=limit, folders={"-o": out}) as session,
        tempfile.TemporaryDirectory(prefix="cnntool-microscope-") as scratch,
    ):
        files = ResumeFiles(out, "microscope", session.shard.rank, session.shard.distributed)
        say_labels(session)
        plan = make_plan(
            session.module, session.model.input_shape, layers=layers, units=units, top=top
        )
        console.info(plan.describe())
        result = resumable_scan(
            session, plan, files, scratch, resume=resume, every=checkpoint_every
        )
        report = finish(session)  # of the one pass (the attack reads the same images again)
        attacked = fgsm_sweep(session, sorted(set(attack_eps))) if attack_eps else None
        if session.is_main:
            _site(
                session,
                plan,
                result,
                attacked,
                report,
                out,
                maximize=not no_maximize,
                steps=steps,
                full=full_maximize,
                projections=projections,
                seed=seed,
                commands=Commands(spelled_model(model, model_request), data),
            )
        files.remove("features.f32")  # every rank, once the site is written


def _site(session, plan, result, attacked, report, out, *, commands, full, **pictures):
    """Rank 0: views layer by layer with their pictures, the map, then every page; the summary."""
    from pathlib import Path

    from cnntool.io.microscope import MicroscopeSite, summary_record
    from cnntool.io.patches import lost_warning
    from cnntool.io.records import write_records
    from cnntool.tasks.maximize import with_overrides
    from cnntool.tasks.microscope import diagnosis, embedding
    from cnntool.tasks.microscope.pictures import describe_config, visualization_config
    from cnntool.tasks.microscope.run import layer_views, map_labels
    from cnntool.tasks.predict import nonfinite_warning

    if result.predictions.nonfinite:
        console.warn(nonfinite_warning(result.predictions.nonfinite, len(result.predictions.index)))
    found = diagnosis(session.module, plan, result, commands)
    config = with_overrides(
        visualization_config(session.model.preprocessing, full=full), steps=pictures["steps"]
    )
    recipe = describe_config(config)
    if pictures["maximize"]:
        console.info(
            f"feature visualizations: {recipe}"
            + (
                ""
                if full or config.size is None
                else " (thumbnails; --full-maximize: `visualize maximize`'s recipe, "
                "at the model's input size, about 10× slower)"
            )
        )
    site = MicroscopeSite(out, session.model, session.dataset)
    site.add_layers(
        layer_views(
            session, plan, result, found, progress=console.progress, config=config, **pictures
        ),
        progress=console.progress,
        recipe=recipe,
    )
    mapped = embedding(result, plan.penultimate, seed=pictures["seed"])
    for note in mapped.notes if mapped else ():
        console.warn(note)
    written = site.finish_scan(
        plan=plan,
        findings=found.findings,
        report=report,
        predictions=result.predictions,
        embedding=mapped,
        label_names=map_labels(session.model, plan),
        attack=attacked,
    )
    if site.lost:
        console.warn(lost_warning(site.lost))
    index = Path(out) / "index.html"
    write_records([summary_record(index, written, plan)], "jsonl")
    console.info(f"open {index.resolve().as_uri()}")
