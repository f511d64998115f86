"""`cnntool visualize maximize MODEL`: the input that maximizes a unit or class."""
from __future__ import annotations

import click

from cnntool.cli import console
from cnntool.cli.options import (data_options, model_options, output_options, position_option,
                                 records_format_option)
from cnntool.io.records import Column, write_records


@click.command("maximize", epilog="""Examples:

  cnntool visualize maximize efficientnet_lite0 --class goldfish --class flamingo -o fish.png

  cnntool visualize maximize efficientnet_lite0 --layer _blocks.10 --unit 3 --unit 7 --data imagenet-samples -o max.png

  cnntool visualize maximize lenet5-mnist --class 3 --class 8 --prior-data mnist-5k -o digits.png

  cnntool visualize maximize efficientnet_lite0 --start cat.jpg --accentuate --class 'tiger cat' -o accent.png
""")
@click.argument("model")
@click.option("--layer", help="Layer (module path or alias) of the units; without it, classes.")
@click.option("--unit", "units", type=click.IntRange(0), multiple=True,
              help="Channel of --layer to maximize (repeat: one image per unit, one batch).")
@click.option("--class", "targets", multiple=True, metavar="INDEX|NAME",
              help="Class logit to maximize (repeat for several).")
@click.option("--neuron", is_flag=True,
              help="Maximize the unit at one position (--position, default the centre) "
                   "instead of the channel's mean over positions.")
@click.option("--position", callback=position_option, metavar="ROW,COL", help="Position for --neuron.")
@click.option("--start", type=click.Path(dir_okay=False), metavar="IMAGE",
              help="Start from this image instead of seeded noise.")
@click.option("--accentuate", is_flag=True,
              help="Feature accentuation of --start (Hamblin et al. 2024): a penalty keeps the "
                   "result near the photo in Fourier space; the grid shows photo | result.")
@click.option("--closeness", type=click.FloatRange(0), help="Weight of that penalty (default 0.01; 0.1 keeps the photo almost unchanged).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--param", type=click.Choice(["maco", "fourier", "pixel", "pca"]),
              help="Parameterization (default: maco for inputs over 64 px; for smaller ones pca "
                   "with --prior-data, else pixel; fourier with --accentuate).")
@click.option("--prior-data", metavar="DATA",
              help="Images to fit the prior on, at the model's input size: a PCA basis (pca) "
                   "or the mean Fourier magnitude (maco, instead of the packaged natural one).")
@click.option("--components", type=click.IntRange(1), help="pca: principal components (default 80).")
@click.option("--prior", "prior_weight", type=click.FloatRange(0),
              help="pca: weight of the Gaussian prior on the coordinates (default 0.5).")
@click.option("--steps", type=click.IntRange(1), help="Adam steps (default 256; 128 small, accentuation).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True),
              help="Adam learning rate (default 0.1 maco and pca, 0.05 fourier, 0.1 small pixel).")
@click.option("--crop", type=click.FloatRange(0, 1),
              help="Smallest random crop per step, as a fraction of the side (default 0.5 for "
                   "inputs over 64 px); 0: shift/zoom views (--jitter, --scale) instead.")
@click.option("--noise", type=click.FloatRange(0), help="Std of noise added to each view (default 0).")
@click.option("--jitter", type=click.IntRange(0), help="Max random shift, px, without crops (default 8 / 1).")
@click.option("--pad", type=click.IntRange(0), help="Mirrored border a pure shift may show, px (default 12 / 2; 0 wraps around). A zoom or rotation mirrors as far as it needs.")
@click.option("--scale", "scale", type=click.FloatRange(0, 0.9),
              help="Random zoom ± this fraction, without crops (default 0.1 / 0).")
@click.option("--rotate", type=click.FloatRange(0, 180), help="Max random rotation, degrees (default 5 / 0).")
@click.option("--l2", type=click.FloatRange(0), help="L2 decay weight (default 0 / 1e-3).")
@click.option("--tv", type=click.FloatRange(0), help="Total variation weight (default 0 / 1e-3).")
@click.option("--blur-every", type=click.IntRange(0), help="Blur every N steps, pixel param (default 0 / 4).")
@click.option("--blur-sigma", type=click.FloatRange(0, min_open=True), help="Blur sigma, px (default 0.5).")
@click.option("--judge", metavar="MODEL|none",
              help="A second model that ranks each class image, as saved (default: "
                   "efficientnet_lite2 for lite0/lite1, lite1 for lite2, lenet5-mnist-adv for "
                   "lenet5-mnist and the reverse; none: no judge).")
@click.option("--data", metavar="DATA",
              help="Real images to compare each unit (or class logit) with: its best value "
                   "over DATA, and the image's value relative to it.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="PNG of the labelled grid; each unit also gets OUTPUT-STEM_unitN.png beside "
                   "it (and _importance.png/.npy: the transparency map, with maco).")
@records_format_option
@model_options
@data_options
@output_options
def maximize_command(model, layer, units, targets, neuron, position, start, accentuate,
                     closeness, seed, param, prior_data, components, prior_weight, steps, lr,
                     crop, noise, jitter, pad, scale, rotate, l2, tv, blur_every, blur_sigma,
                     judge, data, output, fmt, model_request, scan):
    """Synthesize the input that maximizes a channel of --layer (mean over positions; --neuron
    for one position) or a class logit (--class), one image per unit, optimized as one batch.
    Colour models over 64 px get MACO (Fel et al. 2023): only the Fourier phase is optimized,
    the magnitude is a natural-image spectrum, under random crops, with a transparency map.
    Small ones (LeNet-5) get pixels with L2 decay, total variation and blur, or with
    --prior-data a PCA basis of real images with a Gaussian prior. A second model judges each
    class image (--judge); --data rates each unit's image against real images. Writes a
    labelled grid and a PNG per unit, one record per unit on stdout, a table on stderr."""
    import dataclasses

    from cnntool.core.images import load_pixels
    from cnntool.errors import CnnToolError
    from cnntool.io.figures import pixels_to_image
    from cnntool.io.synthesized import pictures, save_pictures
    from cnntool.tasks.maximize import MaximizeConfig, maximize, unit_records, with_overrides
    from cnntool.tasks.maximize.on_data import best_on_data, fit_prior

    if accentuate and not start:
        raise CnnToolError("--accentuate needs a photo to start from (--start IMAGE)")
    loaded = model_request.load(model)
    goal = _goal(loaded, layer, units, targets, neuron, position)
    config = with_overrides(
        MaximizeConfig.for_input(loaded.input_shape, param=param, prior_data=bool(prior_data),
                                 accentuate=accentuate),
        param=param, steps=steps, lr=lr, noise=noise, jitter=jitter, pad=pad, rotate=rotate,
        l2=l2, tv=tv, blur_every=blur_every, blur_sigma=blur_sigma, closeness=closeness,
        components=components, prior=prior_weight,
        scales=None if scale is None else (1 - scale, 1 + scale))
    if crop is not None:
        config = dataclasses.replace(config, crop=(crop, 1.0) if crop > 0 else None)
    first = load_pixels(start, loaded.preprocessing)[0] if start else None
    prior = _on_data(model, model_request, scan, loaded, prior_data,
                     lambda session: fit_prior(session, config)) if prior_data else None
    with console.progress(f"maximize {loaded.name}", total=config.steps) as advance:
        results = maximize(loaded.module, loaded.preprocessing, goal, config, start=first,
                           seed=seed, progress=advance, prior=prior)
    images = [pixels_to_image(r.pixels.numpy()) for r in results]
    verdicts = _verdicts(model_request, loaded, goal, images, judge)
    best = _on_data(model, model_request, scan, loaded, data,
                    lambda session: best_on_data(session, goal)) if data else None
    records = unit_records(results, goal, config, loaded.class_name, verdicts, best)
    shown_start = pixels_to_image(first.numpy()) if first is not None and accentuate else None
    save_pictures(output, pictures(images, records, [_numpy(r.importance) for r in results],
                                   shown_start))
    write_records(records, fmt)
    _show(loaded.name, goal, records)
    console.info(f"wrote {output} and {len(results)} unit image(s) beside it")


def _goal(loaded, layer, units, targets, neuron, position):
    from cnntool.core.classes import class_index
    from cnntool.errors import CnnToolError
    from cnntool.tasks.maximize import objective

    if bool(layer) == bool(targets):
        raise CnnToolError("give --layer with --unit, or --class, to say what to maximize")
    if layer and not units:
        raise CnnToolError("--layer needs at least one --unit")
    if layer:
        return objective(loaded.module, "neuron" if neuron else "channel", units, layer, position)
    num = len(loaded.class_names) if loaded.class_names else loaded.num_outputs
    return objective(loaded.module, "class", [class_index(c, loaded.class_names, num) for c in targets])


def _verdicts(request, loaded, goal, images, judge):
    """The judge's verdicts on the saved class images (none for units or without a judge).
    The judge is loaded as a plain MODEL: the options that load MODEL are not its own."""
    from cnntool.cli.options import ModelRequest
    from cnntool.tasks.maximize import default_judge, judge_images

    name = judge or default_judge(loaded.name)
    if goal.kind != "class" or name is None or name.lower() == "none":
        return []
    judged = ModelRequest(device=request.device).load(name)
    return judge_images(judged.module, judged.preprocessing, images, goal.units, judged.name)


def _on_data(model, request, scan, loaded, data, compute):
    """`compute(session)` over the images of DATA, fed as MODEL is."""
    from cnntool.cli.session import dataset_scan, finish

    with dataset_scan(model, request, data, scan, loaded=loaded) as session:
        result = compute(session)
        finish(session)
    return result


def _numpy(tensor):
    return None if tensor is None else tensor.numpy()


def _show(name, goal, records) -> None:
    """The records as a table on stderr."""
    columns = [Column("unit", "unit", right=True)]
    if goal.kind == "class":
        columns.append(Column("class", "name"))
    columns.append(Column("value", "value", right=True))
    if any("judge" in r for r in records):
        columns += [Column("judge", "judge"), Column("rank", "judge_rank", right=True),
                    Column("p", "judge_probability", right=True), Column("judge's top", "judge_top")]
    if any("relative" in r for r in records):
        columns += [Column("best on DATA", "best_on_data", right=True),
                    Column("relative", "relative", right=True)]
    console.show_table(f"maximize {name}", columns, records)
