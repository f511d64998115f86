"""`cnntool visualize maximize MODEL`: the input that maximizes a unit or class."""

from __future__ import annotations

import click

from cnntool.cli import console
from cnntool.cli.options import position_option, records_format_option, shared_options
from cnntool.io.records import write_records


@click.command(
    "maximize",
    epilog="""\b
Examples:
  cnntool visualize maximize efficientnet_lite0 --class goldfish --class flamingo -o fish.png
  cnntool visualize maximize efficientnet_lite0 --layer _blocks.10 --unit 3 --unit 7 \\
      --data imagenet-samples -o max.png
  cnntool visualize maximize lenet5-mnist --class 3 --class 8 --prior-data mnist-5k -o digits.png
  cnntool visualize maximize efficientnet_lite0 --start cat.jpg --accentuate --class 'tiger cat' \\
      -o accent.png
""",
)
@click.argument("model")
@click.option("--layer", help="Layer (module path or alias) of the units; without it, classes.")
@click.option(
    "--unit",
    "units",
    type=click.IntRange(0),
    multiple=True,
    help="Channel of --layer to maximize (repeat: one image per unit, one batch).",
)
@click.option(
    "--class",
    "targets",
    multiple=True,
    metavar="INDEX|NAME",
    help="Class logit to maximize (repeat for several).",
)
@click.option(
    "--neuron",
    is_flag=True,
    help="Maximize the unit at --position (default: the centre), not the channel's mean.",
)
@click.option(
    "--position", callback=position_option, metavar="ROW,COL", help="Position for --neuron."
)
@click.option(
    "--start",
    type=click.Path(dir_okay=False),
    metavar="IMAGE",
    help="Start from this image, not seeded noise.",
)
@click.option(
    "--accentuate",
    is_flag=True,
    help="Feature accentuation of --start (Hamblin et al. 2024): a penalty "
    "keeps the result near the photo in Fourier space; the grid shows photo | result.",
)
@click.option(
    "--closeness",
    type=click.FloatRange(0),
    help="Weight of that penalty (default 0.01; 0.1 keeps the photo almost unchanged).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--param",
    type=click.Choice(["maco", "fourier", "pixel", "pca"]),
    help="Parameterization (default: "
    "maco over 64 px; smaller: pca with --prior-data, else pixel; fourier with --accentuate).",
)
@click.option(
    "--prior-data",
    metavar="DATA",
    help="Images to fit the prior on: a PCA basis (pca) or the mean "
    "Fourier magnitude (maco, instead of the packaged natural one).",
)
@click.option(
    "--components", type=click.IntRange(1), help="pca: principal components (default 80)."
)
@click.option(
    "--prior",
    type=click.FloatRange(0),
    help="pca: weight of the Gaussian prior on the coordinates (default 0.5).",
)
@click.option(
    "--steps", type=click.IntRange(1), help="Adam steps (default 256; 128 small, accentuation)."
)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    help="Adam learning rate (default 0.1 maco and pca, 0.05 fourier, 0.1 small pixel).",
)
@click.option(
    "--crop",
    type=click.FloatRange(0, 1),
    help="Smallest random crop per step, as a fraction of the side "
    "(default 0.5 over 64 px); 0: shift/zoom views (--jitter, --scale) instead.",
)
@click.option(
    "--noise", type=click.FloatRange(0), help="Std of noise added to each view (default 0)."
)
@click.option(
    "--jitter", type=click.IntRange(0), help="Max random shift, px, without crops (default 8 / 1)."
)
@click.option(
    "--pad",
    type=click.IntRange(0),
    help="Mirrored border a pure shift may show, px (default 12 / 2; 0 "
    "wraps around). A zoom or rotation mirrors as far as it needs.",
)
@click.option(
    "--scale",
    type=click.FloatRange(0, 0.9),
    help="Random zoom ± this fraction, without crops (default 0.1 / 0).",
)
@click.option(
    "--rotate", type=click.FloatRange(0, 180), help="Max random rotation, degrees (default 5 / 0)."
)
@click.option("--l2", type=click.FloatRange(0), help="L2 decay weight (default 0 / 1e-3).")
@click.option("--tv", type=click.FloatRange(0), help="Total variation weight (default 0 / 1e-3).")
@click.option(
    "--blur-every", type=click.IntRange(0), help="Blur every N steps, pixel param (default 0 / 4)."
)
@click.option(
    "--blur-sigma", type=click.FloatRange(0, min_open=True), help="Blur sigma, px (default 0.5)."
)
@click.option(
    "--redirect",
    type=click.IntRange(0),
    help="The first N steps backprop through ReLUs by Lucid's redirected rule, so that a unit "
    "that is off at the start still gets a gradient (default 16 for small inputs, else 0).",
)
@click.option(
    "--judge",
    metavar="MODEL|none",
    help="A second model that ranks each class image, as saved (default: efficientnet_"
    "lite2 for lite0/lite1, lite1 for lite2, lenet5-mnist-adv for lenet5-mnist and the reverse; "
    "none: none).",
)
@click.option(
    "--data",
    metavar="DATA",
    help="Real images to rate each unit's image against: its best value over DATA "
    "and the image's value relative to it.",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="PNG of the labelled grid; "
    "each unit also gets OUTPUT-STEM_unitN.png beside it (and _importance.png/.npy with maco).",
)
@click.option(
    "--figure-scale",
    type=click.Choice(["1", "2"]),
    default="1",
    show_default=True,
    callback=lambda ctx, param, value: int(value),
    help="2: the grid at twice the size (text, tiles, gaps), for print and slides "
    "(--scale is the random zoom).",
)
@shared_options(records_format_option)
def maximize_command(
    model,
    layer,
    units,
    targets,
    neuron,
    position,
    start,
    accentuate,
    seed,
    prior_data,
    judge,
    data,
    output,
    figure_scale,
    fmt,
    model_request,
    scan,
    **settings,
):
    """Synthesize the input that maximizes a channel of --layer or a class logit, one image per
    unit, optimized as one batch: MACO (Fel et al. 2023) for colour models over 64 px, pixels with
    L2 decay, total variation and blur, or a PCA prior, for small ones (LeNet-5). Writes a
    labelled grid and a PNG per unit, one record per unit on stdout, a table on stderr."""
    from cnntool.cli.dataset_scan import guard
    from cnntool.cli.options import ModelRequest
    from cnntool.core.images import load_pixels
    from cnntool.errors import CnnToolError
    from cnntool.io.figures import pixels_to_image
    from cnntool.io.outputs import InputFiles
    from cnntool.io.synthesized import grid_title, pictures, save_pictures, table_columns
    from cnntool.tasks.maximize import (
        judge_class_images,
        maximize,
        maximize_config,
        objective_for,
        unit_records,
    )
    from cnntool.tasks.maximize.on_data import best_on_data, fit_prior

    if accentuate and not start:
        raise CnnToolError("--accentuate needs a photo to start from (--start IMAGE)")
    inputs = InputFiles(files=[start] if start else [])
    for spec in (prior_data, data):  # their folders and list files (their images: dataset_scan)
        inputs += InputFiles.of_data(spec) if spec else InputFiles()
    guard(inputs, files={"-o": output})
    loaded = model_request.load(model)
    goal = objective_for(loaded, layer, units, targets, neuron, position)
    config = maximize_config(
        loaded.input_shape, prior_data=bool(prior_data), accentuate=accentuate, **settings
    )
    first = load_pixels(start, loaded.preprocessing)[0] if start else None
    prior = (
        _on_data(
            model,
            model_request,
            scan,
            loaded,
            prior_data,
            lambda session: fit_prior(session, config),
            {"-o": output},
        )
        if prior_data
        else None
    )
    with console.progress(f"maximize {loaded.name}", total=config.steps) as advance:
        results = maximize(
            loaded.module,
            loaded.preprocessing,
            goal,
            config,
            start=first,
            seed=seed,
            progress=advance,
            prior=prior,
        )
    images = [pixels_to_image(r.pixels.numpy()) for r in results]
    verdicts = judge_class_images(
        goal, images, loaded.name, judge, ModelRequest(device=model_request.device).load
    )
    best = (
        _on_data(
            model,
            model_request,
            scan,
            loaded,
            data,
            lambda session: best_on_data(session, goal),
            {"-o": output},
        )
        if data
        else None
    )
    records = unit_records(results, goal, config, loaded.class_name, verdicts, best)
    shown_start = pixels_to_image(first.numpy()) if first is not None and accentuate else None
    save_pictures(
        output,
        pictures(images, records, [r.importance for r in results], shown_start),
        title=grid_title(loaded.name, goal, config),
        scale=figure_scale,
    )
    write_records(records, fmt)
    console.show_table(f"maximize {loaded.name}", table_columns(goal.kind, records), records)
    console.info(f"wrote {output} and {len(results)} unit image(s) beside it")


def _on_data(model, request, scan, loaded, data, compute, files):
    """`compute(session)` over the images of DATA, fed as MODEL is."""
    from cnntool.cli.dataset_scan import dataset_scan, finish

    with dataset_scan(model, request, data, scan, loaded=loaded, files=files) as session:
        result = compute(session)
        finish(session)
    return result
